"""Figures 3-5 of the paper and the sweep's Pareto plot, as PNG files."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METHOD_LABELS = {"ps": "PS", "pool1": "Pool-1", "softmax": "softmax", "psnc": "PSNC", "offload": "offload"}


def fig3_layers(layer_names, dense_j, pruned_j, dense_out, pruned_out, path: Path) -> Path:
    """Fig. 3: per-layer processing energy and output size, before and after compression."""
    x = np.arange(len(layer_names))
    fig, (ax_e, ax_o) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    ax_e.bar(x - 0.2, np.asarray(dense_j) * 1e6, 0.4, label="before compression")
    ax_e.bar(x + 0.2, np.asarray(pruned_j) * 1e6, 0.4, label="after compression")
    ax_e.set_ylabel("processing energy (µJ)")
    ax_e.set_yscale("log")
    ax_e.legend()
    ax_o.bar(x - 0.2, dense_out, 0.4, label="before compression")
    ax_o.bar(x + 0.2, pruned_out, 0.4, label="after compression")
    ax_o.set_ylabel("output size (elements)")
    ax_o.set_yscale("log")
    ax_o.set_xticks(x, layer_names, rotation=45)
    fig.suptitle("Per-layer processing energy and output size (Fig. 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig4_trajectory(positions_m, server_m, locations: dict, choice, cut_names, times_s,
                    per_location: dict, bandwidth_hz: float, path: Path) -> Path:
    """Fig. 4: route map coloured by PS's cut, energy per location and method, cut along the route.

    per_location[method][location] -> dict(energy_total_j, energy_processing_j, energy_transmission_j)
    """
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0, 0]
    sc = ax.scatter(positions_m[:, 0], positions_m[:, 1], c=choice, s=4, cmap="viridis",
                    vmin=0, vmax=len(cut_names) - 1)
    ax.plot(*server_m, "r^", ms=12, label="server")
    for name, (x, y) in locations.items():
        ax.annotate(name, (x, y), fontsize=12, weight="bold")
    cbar = fig.colorbar(sc, ax=ax, ticks=range(len(cut_names)))
    cbar.ax.set_yticklabels(cut_names, fontsize=7)
    ax.set_title(f"(a) trajectory, PS cut at W = {bandwidth_hz:g} Hz")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(loc="lower right")
    ax.set_aspect("equal")
    methods = list(per_location)
    loc_names = [loc for loc in locations if any(loc in per_location[m] for m in methods)]  # the route passes
    x = np.arange(len(loc_names))
    width = 0.8 / max(len(methods), 1)
    for ax, key, title in ((axes[0, 1], "energy_total_j", "(b) total energy"),
                           (axes[0, 2], "energy_processing_j", "(c) processing energy"),
                           (axes[1, 0], "energy_transmission_j", "(d) transmission energy")):
        ax.set_title(title)
        if not loc_names:  # nothing to draw on a log axis
            ax.text(0.5, 0.5, "the route passes no named location\n(trajectory.locations, location_radius_m)",
                    ha="center", va="center", transform=ax.transAxes)
            continue
        for i, m in enumerate(methods):
            vals = [per_location[m].get(loc, {}).get(key, np.nan) * 1e6 for loc in loc_names]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=METHOD_LABELS.get(m, m))
        ax.set_xticks(x, loc_names)
        ax.set_yscale("log")
        ax.set_ylabel("µJ per inference")
    if loc_names:
        axes[0, 1].legend(fontsize=8)
    ax = axes[1, 1]
    ax.scatter(times_s, choice, s=2, alpha=0.4)  # fading flips the cut from one inference to the next
    ax.set_yticks(range(len(cut_names)), cut_names, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title("PS cut along the route")
    axes[1, 2].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cut_along_route(times_s, choices: dict, cut_names, bandwidth_hz: float, path: Path) -> Path:
    """Fig. 4 (bottom) for several settings: PS's cut at every inference of one fading realisation
    (``choices``: label -> cut index per inference, one row of panels each) and, beside them, the
    share of inferences sending each cut."""
    n = len(choices)
    fig, axes = plt.subplots(n, 2, figsize=(13, 2.6 * n + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]}, sharey=True)
    ticks = range(len(cut_names))
    for row, (label, choice) in enumerate(choices.items()):
        choice = np.asarray(choice)
        ax = axes[row, 0]
        ax.scatter(times_s, choice, s=2, alpha=0.4)  # fading flips the cut from one inference to the next
        ax.set_yticks(ticks, cut_names, fontsize=7)
        ax.set_title(f"{label}: PS cut along the route, W = {bandwidth_hz / 1e6:g} MHz", fontsize=10)
        share = np.bincount(choice, minlength=len(cut_names)) / len(choice)
        axes[row, 1].barh(ticks, share * 100)
        axes[row, 1].set_xlabel("share of inferences (%)")
        axes[row, 1].set_xlim(0, 100)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig5_compression(ratios, energy_j, accuracy, path: Path) -> Path:
    """Fig. 5: average total energy and test accuracy against the compression ratio."""
    order = np.argsort(ratios)
    r, e, a = np.asarray(ratios)[order], np.asarray(energy_j)[order], np.asarray(accuracy)[order]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(r, e * 1e6, "o-", color="tab:blue")
    ax.set_xlabel("compression ratio C_r")
    ax.set_ylabel("average total energy, PS (µJ)", color="tab:blue")
    ax.set_xscale("log")
    ax2 = ax.twinx()
    ax2.plot(r, a * 100, "s--", color="tab:red")
    ax2.set_ylabel("test accuracy (%)", color="tab:red")
    ax.set_title("Energy and accuracy vs compression (Fig. 5)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_plot(x, y, front_mask, labels, xlabel: str, ylabel: str, path: Path, selected: int | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7, 5))
    x, y, front_mask = np.asarray(x), np.asarray(y), np.asarray(front_mask, bool)
    ax.scatter(x[~front_mask], y[~front_mask], c="lightgray", label="dominated")
    order = np.argsort(x[front_mask])
    ax.plot(x[front_mask][order], y[front_mask][order], "o-", c="tab:blue", label="Pareto front")
    for xi, yi, lab in zip(x[front_mask], y[front_mask], np.asarray(labels)[front_mask]):
        ax.annotate(str(lab), (xi, yi), fontsize=7)
    if selected is not None:
        ax.scatter([x[selected]], [y[selected]], marker="*", s=250, c="tab:red", label="selected", zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sensitivity_plot(rows: list[dict], path: Path) -> Path:
    """Total energy of every method against the path-loss exponent and the reference distance,
    one panel per (parameter, bandwidth), 95% confidence intervals as error bars."""
    params = list(dict.fromkeys(r["parameter"] for r in rows))
    bands = list(dict.fromkeys(r["bandwidth_hz"] for r in rows))
    fig, axes = plt.subplots(len(params), len(bands), figsize=(5 * len(bands), 3.6 * len(params)), squeeze=False)
    for i, param in enumerate(params):
        for j, bw in enumerate(bands):
            ax = axes[i, j]
            for method in dict.fromkeys(r["method"] for r in rows):
                pts = [r for r in rows if (r["parameter"], r["bandwidth_hz"], r["method"]) == (param, bw, method)]
                ax.errorbar([r["value"] for r in pts], [r["energy_total_j"] * 1e6 for r in pts],
                            yerr=[np.nan_to_num(r["energy_total_j_ci95"]) * 1e6 for r in pts], marker="o",
                            capsize=3, label=METHOD_LABELS.get(method, method))
            ax.set_yscale("log")
            ax.set_xlabel(param.replace("_", " "))
            ax.set_ylabel("mean energy per inference (µJ)")
            ax.set_title(f"W = {bw:g} Hz")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
