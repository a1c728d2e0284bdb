"""Print README's "The link, realistically" table: PS's energy and where it cuts, one row per
evaluate run and bandwidth, the runs differing in their link settings.

    python docs/readme_link.py <evaluate output dir> [<evaluate output dir> ...]

Each argument is the Hydra output dir of `python evaluate.py ...` (its .hydra/config.yaml names the
scenario and the link settings; table3.csv and cut_shares.csv hold the figures). Energies in uJ as
mean +- 95% CI half-width over the fading realisations; cuts: the share of PS's inferences at each
cut (those at 0.5% or more).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_table3 import _cell  # noqa: E402


def link_label(channel: dict) -> str:
    parts = ["finite blocklength, eps " + f"{channel['block_error_rate']:g}"
             if channel["rate_model"] == "finite_blocklength" else "Shannon"]
    if channel["pa_efficiency"] != 1:
        parts.append(f"eta {channel['pa_efficiency']:g}")
    if channel["circuit_power_w"]:
        parts.append(f"P_c {channel['circuit_power_w'] * 1e3:g} mW")
    return ", ".join(parts)


def cuts(row: dict) -> str:
    shares = {k: float(v) for k, v in row.items() if k not in ("bandwidth_hz", "method")}
    return ", ".join(f"{k} {v:.1%}" for k, v in shares.items() if v >= 0.005)


def main(dirs: list[str]) -> None:
    print("| scenario | link | W | PS E (uJ) | E_p (uJ) | E_tr (uJ) | misses | PS cuts |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in map(Path, dirs):
        cfg = yaml.safe_load(open(d / ".hydra" / "config.yaml"))
        shares = {float(r["bandwidth_hz"]): r for r in csv.DictReader(open(d / "cut_shares.csv")) if r["method"] == "ps"}
        for row in csv.DictReader(open(d / "table3.csv")):
            if row["method"] != "ps":
                continue
            bw = float(row["bandwidth_hz"])
            band = f"{bw / 1e6:g} MHz" if bw >= 1e6 else f"{bw / 1e3:g} kHz"
            print(f"| {cfg['scenario']} | {link_label(cfg['channel'])} | {band} | {_cell(row, 'energy_total_j')} | "
                  f"{_cell(row, 'energy_processing_j')} | {_cell(row, 'energy_transmission_j')} | "
                  f"{float(row['deadline_miss_rate']):.1%} | {cuts(shares[bw])} |")


if __name__ == "__main__":
    main(sys.argv[1:])
