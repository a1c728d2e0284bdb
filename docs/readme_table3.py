"""Print README's Table III: the paper's cells beside ours under scenario=paper and scenario=realistic.

    python docs/readme_table3.py <paper run's table3.csv> <realistic run's table3.csv>

Each argument is the table3.csv that `python evaluate.py ... scenario=<name>` wrote (its Hydra output
dir, or the evaluate run's artifacts in MLflow). Energies in uJ as mean +- 95% CI half-width over the
fading realisations; misses = deadline_miss_rate; duty = mean radio time x f.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluation import PAPER_TABLE3  # noqa: E402

LABELS = {"ps": "PS", "pool1": "Pool-1", "softmax": "softmax", "psnc": "PSNC", "offload": "offload"}


def _cell(row: dict, key: str) -> str:
    mean, ci = float(row[key]) * 1e6, float(row[f"{key}_ci95"]) * 1e6
    return f"{mean:.3g} ± {ci:.1g}" if ci >= 0.005 * max(abs(mean), 1e-12) else f"{mean:.3g}"


def main(paper_csv: str, realistic_csv: str) -> None:
    tables = [list(csv.DictReader(open(p))) for p in (paper_csv, realistic_csv)]
    print("| W | method | quantity | paper (uJ) | ours, paper scenario (uJ) | ratio | ours, realistic (uJ) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    keys = (("E", "energy_total_j", 0), ("E_p", "energy_processing_j", 1), ("E_tr", "energy_transmission_j", 2))
    for p_row, r_row in zip(*tables):
        bw, method = float(p_row["bandwidth_hz"]), p_row["method"]
        band = f"{bw / 1e6:g} MHz" if bw >= 1e6 else f"{bw / 1e3:g} kHz"
        paper = PAPER_TABLE3.get(bw, {}).get(method)
        for label, key, i in keys:
            ref = f"{paper[i] * 1e6:.3g}" if paper else "—"
            ratio = f"{float(p_row[key]) / paper[i]:.2f}" if paper else ""
            print(f"| {band} | {LABELS[method]} | {label} | {ref} | {_cell(p_row, key)} | {ratio} | "
                  f"{_cell(r_row, key)} |")
        print(f"| {band} | {LABELS[method]} | misses, duty | | "
              f"{float(p_row['deadline_miss_rate']):.1%}, {float(p_row['duty_cycle']):.2f} | | "
              f"{float(r_row['deadline_miss_rate']):.1%}, {float(r_row['duty_cycle']):.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
