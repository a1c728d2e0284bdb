"""Time to a good Pareto front: the default sweep against a naive one, side by side in one run.

Both are `python sweep.py -m` with the same TPE sampler (seed 0), search space for the threshold
and fine-tuning epochs, and trial count, each in its own throwaway folder (Optuna and MLflow
SQLite stores, reuse cache), one after the other on the same cores:

- default: the project's sweep as configured in conf/sweep.yaml (mu on a log grid whose trained
  models the reuse cache shares, the step cap and learning-rate schedule of the sweep's training,
  the median pruner on the per-epoch eq. (8) value);
- naive:   mu on the continuous log interval the grid spans, every trial trained from scratch
  (cache off, no train.path) for the full train.epochs at the paper's constant learning rate,
  fine-tuning epochs whole, no pruner.

Quality is the hypervolume (pipeline.objective.hypervolume_2d) of the COMPLETE trials in
(validation error, energy_normalised) - energy_normalised being eq. (8)'s E_PS / E_PSNC - both
minimised, against the fixed reference point (1 - selection.min_val_accuracy, 1): a model below the
accuracy floor, or costing more than the uncompressed model's PSNC energy, adds nothing. The same
trials are scored a second time with their test error in place of the validation error: on the
offline subset the validation split has 500 images (binomial standard error ~0.7 pp at 2.5% error,
as large as the differences between the sweeps' best points), the test set 10k (~0.16 pp), and a
full-MNIST user's validation split 6k. For both sweeps and both axes the script prints the
hypervolume over wall time, the time each first reaches 95% of the naive sweep's final
hypervolume, and the ratio; it draws docs/time_to_front.png (one panel per axis).

Timing at full-MNIST scale without the full MNIST: --repeat 12 tiles the offline 5k subset's
4.5k training images 12 times after the validation split (data.train_repeat: a 54k-image epoch, as
the full set's, without training on a validation image). Accuracies remain "5k-train subset".

    .venv/bin/python benchmarks/bench_time_to_front.py                      # 60k-sized epochs, 30 trials
    .venv/bin/python benchmarks/bench_time_to_front.py --repeat 1           # the 5k subset as it is
    .venv/bin/python benchmarks/bench_time_to_front.py --only default       # one sweep's curve alone

A sweep too long for one sitting: --keep DIR leaves its stores; --resume naive=DIR/naive runs it on
to --trials in all (with --repo, the checkout that started it: a study whose definition changed is
refused), its wall time the sum of its sittings'; --reuse reads a kept sweep without running it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.objective import hypervolume_2d  # noqa: E402

MIN_VAL_ACCURACY = 0.95  # conf/selection/default.yaml; the reference point's error is 1 - this
REFERENCE = (1.0 - MIN_VAL_ACCURACY, 1.0)
SWEEPS = {
    "default": [],
    "naive": [
        "search.one_minus_mu=tag(log, interval(3.0e-6, 5.0e-5))",  # a command-line sweep replaces the grid
        "train.max_steps=null", "train.path=null", "prune.finetune_epoch_steps=null",
        "train.lr_schedule=constant", "cache.enabled=false",
        "hydra/sweeper/ecosplit_pruner=none",
    ],
}


AXES = {"val": "validation error", "test": "test error"}


def run_sweep(name: str, extra: list[str], folder: Path, args) -> tuple[float, list[dict]]:
    """Run one sweep (or resume it, in a folder that holds one: the study stops at args.trials in
    all); its wall time over its sittings and its COMPLETE trials (load_sweep)."""
    folder, repo = folder.resolve(), Path(args.repo).resolve()  # the sweep runs in folder: no relative paths
    storage = f"sqlite:///{folder}/optuna.db"
    cmd = [sys.executable, str(repo / "sweep.py"), "-m", f"data.root={args.data_root}",
           "data.download=false", f"data.train_repeat={args.repeat}", f"sweep.name=bench-{name}", f"sweep.storage={storage}",
           f"sweep.n_trials={args.trials}", f"tracking.uri=sqlite:///{folder}/mlflow.db",
           f"tracking.artifact_location={folder}/mlruns", f"cache.dir={folder}/cache",
           f"hydra.sweep.dir={folder}/multirun", *extra, *args.set]
    sittings = _sittings(folder) if (folder / "timing.json").exists() else []
    start = time.time()
    try:
        with open(folder / "sweep.log", "a") as log:
            proc = subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    finally:  # a failed or interrupted sitting ran trials too: its time counts when the sweep resumes
        sittings.append({"start": start, "wall_s": time.time() - start, "repo": str(repo)})
        (folder / "timing.json").write_text(json.dumps({"sittings": sittings}))
    if proc.returncode != 0:
        sys.exit(f"{name} sweep failed (exit {proc.returncode}); see {folder / 'sweep.log'}")
    return load_sweep(name, folder, args.first)


def _sittings(folder: Path) -> list[dict]:
    """The sittings a kept sweep ran in (start, wall_s): one, or several when it was resumed."""
    timing = json.loads((folder / "timing.json").read_text())
    return timing.get("sittings", [timing])


def sweep_time(when: float, sittings: list[dict]) -> float:
    """Seconds of sweep wall time at the moment ``when``: the walls of the sittings before the one
    it falls in, plus the time since that sitting started (the time between sittings not counted)."""
    elapsed = 0.0
    for sitting in sittings:
        if when <= sitting["start"] + sitting["wall_s"]:
            return elapsed + max(0.0, when - sitting["start"])
        elapsed += sitting["wall_s"]
    return elapsed


def load_sweep(name: str, folder: Path, first: int | None = None) -> tuple[float, list[dict]]:
    """A sweep's wall time and, per COMPLETE trial in order of completion, seconds since launch, val
    and test error and E_PS/E_PSNC, from its stores (as run_sweep left them in folder). With
    ``first``, only its trials numbered below it: a longer sweep read as the ``first``-trial sweep
    it began with (TPE does not know the budget), its wall time ending as the last of them ends."""
    sittings = _sittings(folder)
    wall_s = sum(s["wall_s"] for s in sittings)
    storage = f"sqlite:///{folder}/optuna.db"
    study = optuna.load_study(study_name=f"bench-{name}-scalar", storage=storage)
    trials = study.get_trials(deepcopy=False)
    note = f"; {len(sittings)} sittings" if len(sittings) > 1 else ""
    counted = sorted(t.number for t in trials if t.state != optuna.trial.TrialState.FAIL)  # as n_trials counts
    if first is not None and len(counted) > first:
        # the first N counted trials and the failures among them (a FAIL's retry comes later, with a new number)
        note += f"; its first {first} of {len(counted)} trials"
        trials = [t for t in trials if t.number <= counted[first - 1]]
        wall_s = max((sweep_time(t.datetime_complete.timestamp(), sittings) for t in trials if t.datetime_complete),
                     default=0.0)
    points = []
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            points.append({"t": sweep_time(t.datetime_complete.timestamp(), sittings),
                           "val": 1.0 - t.user_attrs["val_accuracy"], "test": 1.0 - t.user_attrs["test_accuracy"],
                           "energy": t.user_attrs["energy_normalised"]})
    states = [t.state.name for t in trials]
    mus = {t.params.get("search.one_minus_mu") for t in trials}
    print(f"{name:8s} {wall_s / 60:6.1f} min  " + ", ".join(f"{s} {states.count(s)}" for s in sorted(set(states)))
          + f"; {len(mus)} distinct mu" + note, flush=True)
    return wall_s, sorted(points, key=lambda p: p["t"])


def curve(points, axis: str) -> list[tuple[float, float]]:
    """(time, hypervolume in (axis error, E_PS/E_PSNC) of the trials complete by then) after every trial."""
    return [(p["t"], hypervolume_2d([(q[axis], q["energy"]) for q in points[: i + 1]], REFERENCE))
            for i, p in enumerate(points)]


def first_time(hv_curve, target: float) -> float:
    return next((t for t, hv in hv_curve if hv >= target), float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=12, help="data.train_repeat (12: 54k-image epochs)")
    parser.add_argument("--trials", type=int, default=30, help="trials per sweep (the default sweep's 30)")
    parser.add_argument("--only", choices=sorted(SWEEPS), help="run one sweep only (no ratio)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for both sweeps")
    parser.add_argument("--data-root", default=os.environ.get("MNIST_ROOT", str(REPO.parent / "shared" / "mnist")))
    parser.add_argument("--plot", default=str(REPO / "docs" / "time_to_front.png"))
    parser.add_argument("--keep", help="keep each sweep's stores in <dir>/<sweep> (a new folder) instead of a temp dir")
    parser.add_argument("--reuse", nargs="*", default=[], metavar="SWEEP=DIR",
                        help="read a sweep from a folder --keep left (e.g. naive=runs/naive) instead of running it "
                             "again: the ratio then compares two runs, so say so")
    parser.add_argument("--resume", nargs="*", default=[], metavar="SWEEP=DIR",
                        help="run a sweep --keep left on to --trials trials in all, in its folder (its wall time is "
                             "the sum of its sittings'), then read it as --reuse does")
    parser.add_argument("--first", type=int, help="read only each sweep's first N trials (a longer kept sweep as the "
                        "N-trial sweep it began with: its wall time ends as its Nth trial ends)")
    parser.add_argument("--repo", default=str(REPO),
                        help="the checkout whose sweep.py runs (a resumed sweep needs the commit that started it: "
                             "a changed study definition is refused)")
    args = parser.parse_args()
    if args.first is not None and args.first < 1:
        parser.error(f"--first: a number of trials >= 1, got {args.first}")
    print(f"{args.first or args.trials} trials per sweep, training split tiled x{args.repeat}, reference point "
          f"(val error {REFERENCE[0]:.2f}, E_PS/E_PSNC {REFERENCE[1]:.1f})", flush=True)
    reused, resumed = (dict(item.split("=", 1) for item in items) for items in (args.reuse, args.resume))
    for option, given in (("--reuse", reused), ("--resume", resumed)):
        if set(given) - set(SWEEPS):
            parser.error(f"{option}: sweeps are {sorted(SWEEPS)}, got {sorted(given)}")
        if missing := [d for d in given.values() if not (Path(d) / "timing.json").exists()]:
            parser.error(f"{option}: {missing} holds no sweep --keep left (no timing.json)")
    trials, walls = {}, {}
    for name in [args.only] if args.only else SWEEPS:
        if name in reused:
            walls[name], trials[name] = load_sweep(name, Path(reused[name]), args.first)
        elif name in resumed:
            walls[name], trials[name] = run_sweep(name, SWEEPS[name], Path(resumed[name]), args)
        elif args.keep:  # the sweeps' stores stay for a look (mlflow ui, optuna-dashboard)
            folder = Path(args.keep) / name
            folder.mkdir(parents=True)
            walls[name], trials[name] = run_sweep(name, SWEEPS[name], folder, args)
        else:
            with tempfile.TemporaryDirectory(prefix=f"ttf-{name}-") as tmp:
                walls[name], trials[name] = run_sweep(name, SWEEPS[name], Path(tmp), args)
    curves, targets = {}, {}
    for axis, label in AXES.items():
        print(f"\n{label} x E_PS/E_PSNC")
        curves[axis] = {name: curve(points, axis) for name, points in trials.items()}
        targets[axis] = compare(curves[axis], walls)
    plot(curves, {name: len(points) for name, points in trials.items()}, targets, args)


def compare(curves, walls) -> float | None:
    """Print each sweep's final hypervolume, when it reaches 95% of the naive one, and the ratio."""
    target = 0.95 * curves["naive"][-1][1] if "naive" in curves else None
    print(f"{'sweep':8s} {'wall':>8s} {'final HV':>9s} {'t(95% naive HV)':>16s}")
    for name, c in curves.items():
        reached = first_time(c, target) if target else float("nan")
        when = f"{reached / 60:14.1f} m" if reached == reached else f"{'not reached':>16s}"
        print(f"{name:8s} {walls[name] / 60:6.1f} m {c[-1][1] if c else 0.0:9.5f} {when}"
              + (f"  ({c[-1][1] / curves['naive'][-1][1]:.0%} of the naive final HV)" if target and name != "naive" else ""))
    if target == 0.0:
        print("the naive sweep has no trial inside the reference box (hypervolume 0): no ratio")
    elif len(curves) == 2:
        t_default, t_naive = first_time(curves["default"], target), first_time(curves["naive"], target)
        if t_default != t_default:  # nan: never reached
            end = curves["default"][-1][0]
            naive_then = max((hv for t, hv in curves["naive"] if t <= end), default=0.0)
            print(f"default does not reach 95% of the naive final HV; at its end ({end / 60:.1f} min) the naive "
                  f"sweep's HV was {naive_then:.5f} (the default's {curves['default'][-1][1]:.5f})")
        else:
            print(f"default reaches 95% of the naive final HV {t_naive / t_default:.1f}x sooner than the naive "
                  f"sweep reaches it, {walls['naive'] / t_default:.1f}x sooner than the naive sweep ends")
    return target


def plot(curves, n_trials, targets, args) -> None:
    """One panel per axis: each sweep's hypervolume over wall time, and 95% of the naive final one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(AXES), figsize=(11.0, 4.0), sharey=True)
    for ax, (axis, label) in zip(axes, AXES.items()):
        for name, c in curves[axis].items():
            ax.step([t / 60 for t, _ in c], [hv for _, hv in c], where="post", label=f"{name} sweep ({n_trials[name]} trials)")
        if targets[axis]:
            ax.axhline(targets[axis], color="grey", ls="--", lw=0.8, label="95% of the naive final HV")
        ax.set_xlabel("wall time (min)")
        ax.set_title(f"hypervolume: {label} x E_PS/E_PSNC", fontsize=9)
        ax.legend()
    fig.suptitle(f"TPE, training split x{args.repeat} (5k-train subset)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
