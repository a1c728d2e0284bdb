"""Time Table III's statistics: every method over `evaluation.realisations` fading realisations of
the default trajectory (6,069 inferences, both Table III bandwidths), per scenario.

Uses the real paper CNN (random init) as the uncompressed model and it pruned at 0.03 (fc1/fc2
0.08) as the compressed one; the energies are not the point, the time is. Prints the seconds for
1 and for R realisations side by side and their ratio (the cost is linear in R; issue 9 asks
for <= 5 s at R = 20).

    python benchmarks/bench_table3.py [--realisations 20]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from pipeline.model import SplitCNN  # noqa: E402
from pipeline.pruning import prune  # noqa: E402
from pipeline.reporting import evaluate_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realisations", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = SplitCNN()
    pruned = prune(dense, 0.03, {"fc1": 0.08, "fc2": 0.08})
    for scenario in ("paper", "realistic"):
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose("evaluate", [f"scenario={scenario}"])
        bandwidths = [float(b) for b in cfg.channel.bandwidths_hz]
        seconds = {}
        for r in (1, args.realisations):
            start = time.perf_counter()
            ev = evaluate_models(cfg, dense, pruned, bandwidths, realisations=r)
            seconds[r] = time.perf_counter() - start
        n = len(ev.scenario.times_s)
        print(f"scenario={scenario}: {n:,} inferences x {len(bandwidths)} bandwidths x 5 methods: "
              f"1 realisation {seconds[1]:.2f} s, {args.realisations} realisations {seconds[args.realisations]:.2f} s "
              f"(ratio {seconds[args.realisations] / seconds[1]:.1f}x)")


if __name__ == "__main__":
    main()
