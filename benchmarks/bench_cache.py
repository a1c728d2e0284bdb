"""Sweep wall time with and without reuse of trained models, on the same trials, in one run.

A grid of 4 mu values x 5 pruning thresholds (20 trials) is swept twice through `sweep.py -m`
in fresh folders: once with cache.enabled=false (every trial trains), once with the cache (one
training per mu). Target: reuse >= 3x faster.

    python benchmarks/bench_cache.py [--root ../shared/mnist] [--epochs 15] [--test-subset 2000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MU_COMPLEMENTS = "choice(3.0e-6,1.0e-5,3.0e-5,5.0e-5)"
THRESHOLDS = "choice(0.2,0.4,0.8,1.2,1.6)"  # q of prune.mode=std: little to C_r ~13 pruning


def sweep(workdir: Path, root: str, epochs: int, test_subset: int, cache: bool) -> float:
    args = [
        sys.executable, str(REPO / "sweep.py"), "-m", f"data.root={root}", "data.download=false",
        f"data.test_subset={test_subset}", f"train.epochs={epochs}", "prune.finetune_epochs=0",
        f"cache.enabled={str(cache).lower()}", "hydra/sweeper/ecosplit_sampler=grid", "hydra/sweeper/ecosplit_pruner=none",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.study_name=bench", f"search.one_minus_mu={MU_COMPLEMENTS}",  # command-line sweeps replace
        f"prune.threshold={THRESHOLDS}", "prune.finetune_epochs=choice(0)",          # the config's search space
        "selection.min_val_accuracy=0.0",
        # every model from scratch: with the sweep's default path a trial without the cache would retrain
        # the whole chain of warm starts below its mu, and the ratio would not be 20 trainings against 4
        "train.path=null",
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed (cache={cache}):\n{proc.stderr[-3000:]}")
    done = proc.stdout.count(" COMPLETE ") + proc.stderr.count(" COMPLETE ")
    if done != 20:
        raise SystemExit(f"expected 20 COMPLETE trials with cache={cache}, saw {done}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("MNIST_ROOT", "data"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--test-subset", type=int, default=2000)
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    times = {}
    for cache in (False, True):
        with tempfile.TemporaryDirectory(prefix="ecosplit-bench-") as tmp:
            times[cache] = sweep(Path(tmp), root, args.epochs, args.test_subset, cache)
    print(f"20 trials (4 mu x 5 thresholds), {args.epochs} epochs each, test subset {args.test_subset}")
    print(f"without reuse: {times[False]:7.1f} s  (20 trainings)")
    print(f"with reuse:    {times[True]:7.1f} s  (4 trainings)")
    print(f"speed-up:      {times[False] / times[True]:7.2f}x  (target >= 3)")


if __name__ == "__main__":
    main()
