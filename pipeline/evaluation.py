"""Per-cut tables and every method of Sec. IV over fading realisations of the trajectory (Table III).

Pure numpy: per-cut processing energy and sizes in (pipeline.layer_costs makes them from a
model), payloads (eq. 4), compute times, then PS, PSNC and the fixed-cut baselines on the same
fading realisations (common random numbers), summarised as means with 95% confidence intervals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import channel, selection
from .simulation import (Link, MethodResult, Route, Scenario, Timing, build_scenario, mean_ci95, realisation, run_method,
                         start_link_state, transmission_times_s)

METHODS = ("ps", "pool1", "softmax", "psnc", "offload")
FIXED_CUTS = {"pool1": "pool1", "softmax": "fc5", "offload": "input"}
CANDIDATES = ("layers", "layers+input")

# Table III of the paper: bandwidth_hz -> method -> (E, E_p, E_tr) in J, as printed.
PAPER_TABLE3 = {
    15e3: {"pool1": (8.66e-4, 0.66e-4, 7.98e-4), "softmax": (1.69e-4, 1.67e-4, 0.03e-4),
           "ps": (1.69e-4, 1.64e-4, 0.05e-4), "psnc": (4.36e-4, 2.60e-4, 1.76e-4)},
    15e6: {"pool1": (1.24e-4, 0.66e-4, 0.58e-4), "softmax": (1.67e-4, 1.67e-4, 0.002e-4),
           "ps": (0.53e-4, 0.23e-4, 0.31e-4), "psnc": (0.61e-4, 0.23e-4, 0.38e-4)},
}
ENERGY_KEYS = ("energy_total_j", "energy_processing_j", "energy_transmission_j")


def versus_paper(rows: list[dict]) -> list[dict]:
    """Every Table III cell the paper prints beside ours: paper value, ours (mean and 95% CI), ours / paper."""
    out = []
    for row in rows:
        paper = PAPER_TABLE3.get(row["bandwidth_hz"], {}).get(row["method"])
        for key, value in zip(ENERGY_KEYS, paper or ()):
            out.append({"bandwidth_hz": row["bandwidth_hz"], "method": row["method"], "quantity": key,
                        "paper_j": value, "ours_j": row[key], "ours_j_ci95": row[f"{key}_ci95"],
                        "ours_over_paper": row[key] / value})
    return out


@dataclass
class CutTable:
    """Per cut point (input, conv1, ..., fc5): client processing energy, compute time and payloads."""

    names: list[str]
    processing_j: np.ndarray  # (C,) E_p of eq. (6)
    out_elements: np.ndarray  # (C,) d of eq. (4)
    bits: np.ndarray  # (C,) or (N, C) per inference: payload of a cut PS may choose, body + cut-index bits
    bits_fixed: np.ndarray  # (C,) or (N, C): payload of the same cut sent by a fixed-cut baseline
    compute_s: np.ndarray  # (C,) client compute time, 0 without a compute-speed setting
    layers: dict[str, np.ndarray]  # per-layer (not cumulative) energies and op counts
    bits_expected: np.ndarray | None = None  # (C,) what a causal client expects to send (None: bits)
    accurate: np.ndarray | None = None  # (C,) bool: cuts within selection.max_accuracy_drop (None: all)
    accuracy: np.ndarray | None = None  # (C,) validation accuracy as deployed, behind ``accurate``

    def index(self, cut: str) -> int:
        return self.names.index(cut)

    @property
    def decision_bits(self) -> np.ndarray:
        """(C,) payloads a causal client decides on: it cannot know a cut's sparsity before computing it."""
        return self.bits if self.bits_expected is None else self.bits_expected


def allowed_cuts(names: list[str], candidates: str) -> np.ndarray:
    """(C,) bool: the cuts PS and PSNC may choose. The paper's text selects l in {1..L} (``layers``);
    its Table III needs the raw image too (``layers+input``: PS at 15 MHz spends less than the
    cheapest layer)."""
    if candidates not in CANDIDATES:
        raise ValueError(f"selection.candidates must be one of {', '.join(CANDIDATES)} (got {candidates!r})")
    allowed = np.ones(len(names), dtype=bool)
    allowed[0] = candidates == "layers+input"
    return allowed


def cut_table(
    names: list[str], processing_j, out_elements, macs, layers: dict, *, bits_per_element: int,
    input_bits_per_element: int, candidates: str, fixed_cuts_send_index: bool, client_macs_per_s: float | None,
    body_bits=None, expected_body_bits=None, accuracy=None, accurate=None,
) -> CutTable:
    """Payloads (eq. 4) and compute times of every cut from the per-cut processing table.

    PS names its cut with ceil(log2(#candidates)) bits (Sec. III-B); a fixed-cut baseline needs
    no index unless ``fixed_cuts_send_index`` (the paper's shared payload formula). Compute time
    of a cut = the multiplies the client runs up to it / client_macs_per_s (None: no time).
    Payload bodies: d * width (``bits_per_element``; the raw input at ``input_bits_per_element``),
    or ``body_bits`` (N, C) per inference when they depend on the image (sparse coding), with
    ``expected_body_bits`` (C,) what a causal client decides on. ``accurate`` (C,) bool: the cuts
    PS may use for accuracy's sake, from ``accuracy`` (C,) (pipeline.deployment measures both).
    """
    out_elements = np.asarray(out_elements, dtype=np.int64)
    n_choice = int(allowed_cuts(names, candidates).sum())
    fixed_index = n_choice if fixed_cuts_send_index else 1
    expected = None
    if body_bits is None:
        width = {"bits_per_element": bits_per_element, "input_bits_per_element": input_bits_per_element}
        bits = channel.payload_bits(out_elements, n_cuts=n_choice, **width).astype(float)
        bits_fixed = channel.payload_bits(out_elements, n_cuts=fixed_index, **width).astype(float)
    else:
        body = np.asarray(body_bits, dtype=float)
        bits = body + channel.cut_index_bits(n_choice)
        bits_fixed = body + channel.cut_index_bits(fixed_index)
        if expected_body_bits is not None:
            expected = np.asarray(expected_body_bits, dtype=float) + channel.cut_index_bits(n_choice)
    macs = np.asarray(macs, dtype=float)
    compute_s = np.zeros_like(macs) if client_macs_per_s is None else macs / float(client_macs_per_s)
    return CutTable(list(names), np.asarray(processing_j, dtype=float), out_elements, bits,
                    bits_fixed, compute_s, layers, expected, None if accurate is None else np.asarray(accurate, bool),
                    None if accuracy is None else np.asarray(accuracy, float))


def accurate_cuts(accuracy, reference: float, max_drop: float) -> np.ndarray:
    """(C,) bool: the cuts whose accuracy as deployed is within ``max_drop`` of ``reference`` (the
    unquantised model's), i.e. accuracy >= reference - max_drop (selection.max_accuracy_drop)."""
    accuracy = np.asarray(accuracy, dtype=float)
    return accuracy >= float(reference) - float(max_drop) - 1e-12  # equal accuracies pass despite rounding


def restrict(allowed: np.ndarray, accurate: np.ndarray | None, accuracy=None) -> np.ndarray:
    """The candidate cuts that are also accurate enough; when none is, the most accurate candidates."""
    if accurate is None:
        return allowed
    keep = allowed & accurate
    if keep.any():
        return keep
    acc = np.where(allowed, np.asarray(accuracy, float), -np.inf)
    return allowed & (acc == acc.max())


def route_images(n_inferences: int, n_images: int, seed: int) -> np.ndarray:
    """(N,) the image each inference along the route processes: a seeded permutation of the split's
    n_images, cycled (inference i takes image perm[i mod n_images])."""
    if n_images < 1:
        raise ValueError(f"need at least one image for the route (got {n_images})")
    perm = np.random.default_rng(int(seed)).permutation(int(n_images))
    return perm[np.arange(int(n_inferences)) % int(n_images)]


def run_methods(
    compressed: CutTable, uncompressed: CutTable, scenario: Scenario, link: Link, timing: Timing,
    candidates: str = "layers+input", causal: bool = False, methods=METHODS,
) -> tuple[Scenario, dict[str, MethodResult]]:
    """Every method of Sec. IV on one fading realisation and link; PS/PSNC decide causally if asked.

    PS and PSNC choose among ``candidates``; Pool-1, softmax and offload always send their cut.
    """
    allowed = allowed_cuts(compressed.names, candidates)
    start_rate, start_penalty = start_link_state(scenario, link) if causal else (None, None)
    power_w = link.radio_power_w  # P / eta + P_c: the paper's P with its defaults
    results, tau = {}, {}

    def times(table: CutTable, bits: np.ndarray) -> np.ndarray:
        nonlocal scenario
        key = (id(table), bits.tobytes())
        if key not in tau:
            scenario, tau[key] = transmission_times_s(scenario, link, bits, table.compute_s)
        return tau[key]

    for method in methods:
        if method in ("ps", "psnc"):
            table = compressed if method == "ps" else uncompressed
            results[method] = run_method(table.processing_j, times(table, table.bits), power_w, timing,
                                         table.compute_s, allowed=restrict(allowed, table.accurate, table.accuracy),
                                         start_rate_bps=start_rate, bits=table.decision_bits,
                                         start_penalty=start_penalty,
                                         expected_transmissions=link.expected_transmissions)
        else:
            results[method] = run_method(compressed.processing_j, times(compressed, compressed.bits_fixed),
                                         power_w, timing, compressed.compute_s,
                                         fixed_cut=compressed.index(FIXED_CUTS[method]))
    return scenario, results


def simulate(
    compressed: CutTable, uncompressed: CutTable, route: Route, links: list[Link], timing: Timing,
    realisations: int, candidates: str = "layers+input", causal: bool = False, methods=METHODS,
) -> tuple[Scenario, dict[float, dict[str, list[MethodResult]]]]:
    """run_methods over ``realisations`` fading seeds (common to every method and bandwidth).

    Returns the first realisation's scenario (times and positions are the same in all) and
    bandwidth_hz -> method -> one MethodResult per realisation.
    """
    if isinstance(realisations, bool) or int(realisations) != realisations or realisations < 1:
        raise ValueError(f"evaluation.realisations must be an integer >= 1 (got {realisations!r})")
    results: dict[float, dict[str, list[MethodResult]]] = {link.bandwidth_hz: {m: [] for m in methods} for link in links}
    first = None
    for r in range(int(realisations)):
        scenario = build_scenario(realisation(route, r))
        for link in links:
            scenario, by_method = run_methods(compressed, uncompressed, scenario, link, timing, candidates, causal,
                                              methods)
            for method, result in by_method.items():
                results[link.bandwidth_hz][method].append(result)
        first = first or scenario
    return first, results


STAT_KEYS = ("energy_total_j", "energy_processing_j", "energy_transmission_j", "deadline_miss_rate", "duty_cycle")


def table_rows(bandwidth_hz: float, results: dict[str, list[MethodResult]], carbon_kg_per_kwh: float,
               rows: np.ndarray | None = None) -> list[dict]:
    """Table III rows: trajectory averages of E, E_p, E_tr, deadline misses, duty cycle and the
    CO2 of E, each the mean over the fading realisations with its 95% confidence half-width."""
    out = []
    for method, per_realisation in results.items():
        means = [result.means(rows) for result in per_realisation]
        row = {"bandwidth_hz": bandwidth_hz, "method": method}
        for key in STAT_KEYS:
            row[key], row[f"{key}_ci95"] = mean_ci95([m[key] for m in means])
        row["co2_kg"] = float(selection.co2_kg(row["energy_total_j"], carbon_kg_per_kwh))
        row["co2_kg_ci95"] = float(selection.co2_kg(row["energy_total_j_ci95"], carbon_kg_per_kwh))
        row["realisations"] = len(per_realisation)
        out.append(row)
    return out


def route_accuracy(correct, per_realisation: list[MethodResult]) -> tuple[float, float]:
    """Share of the route's inferences whose chosen cut classifies their image correctly, as
    deployed (``correct``: (N, C) bool per inference and cut): mean over the fading realisations
    and its 95% confidence half-width."""
    return mean_ci95([float(np.mean(selection.gather(correct, r.choice))) for r in per_realisation])


def cut_share_rows(names: list[str], results: dict[float, dict[str, list[MethodResult]]],
                   methods=("ps", "psnc")) -> list[dict]:
    """Where each method cuts: per bandwidth, the share of inferences (over every realisation) that
    send each cut, one column per cut name. Shows how the best cut moves with the link settings."""
    rows = []
    for bandwidth_hz, by_method in results.items():
        for method in methods:
            if method not in by_method:
                continue
            choice = np.concatenate([r.choice for r in by_method[method]])
            shares = np.bincount(choice, minlength=len(names)) / choice.size
            rows.append({"bandwidth_hz": bandwidth_hz, "method": method,
                         **{name: float(share) for name, share in zip(names, shares)}})
    return rows
