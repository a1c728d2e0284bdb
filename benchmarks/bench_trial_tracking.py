"""What MLflow costs one sweep trial: the in-task tracking time of a smoke trial.

One `sweep.py -m` worker runs a small smoke study (bench_workers.py's trial: data.train_subset=600,
1 epoch, prune.finetune_epochs=1; 1 - mu searched, so every trial trains and publishes its model to
the reuse cache) against a throwaway SQLite store (default) or, with --server, a throwaway
PostgreSQL + `mlflow server` on 127.0.0.1 (tests/services.py; artifacts proxied by the server).

Per trial the task records time_task_s (the whole task) and its work: time_data_s, time_train_s,
time_intermediate_s (eq. (8) after every epoch), time_prune_s, time_eval_s. Printed per trial:

    tracking = task - work            (MLflow runs, params, metrics, artifacts, the logged model,
                                       dataset input, cache claim/publish: what bench_workers.py
                                       calls "tracking", there with time_intermediate_s in it too)

Calls made in a background thread while the trial computes cost no wall time here, but their CPU
shows in "work" when the machine has no idle core: compare the task times and the CPU seconds of
the worker as well (the median over trials 1.. is printed; trial 0 pays the first MLflow calls).

    .venv/bin/python benchmarks/bench_trial_tracking.py [--server] [--trials 8]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

TRIAL = ["experiment=smoke", "data.train_subset=600", "train.epochs=1", "prune.finetune_epochs=1",
         "train.num_threads=1", "hydra/sweeper/ecosplit_pruner=none", "selection.min_val_accuracy=1.0"]
WORK = ("time_data_s", "time_train_s", "time_intermediate_s", "time_prune_s", "time_eval_s")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def data_root(base: Path) -> Path:
    root = os.environ.get("MNIST_ROOT")
    if root and (Path(root) / "MNIST" / "raw").is_dir():
        return Path(root)
    from conftest import make_fake_mnist
    return make_fake_mnist(base / "mnist", n_train=1200, n_test=600)


def run(base: Path, storage: str, tracking_uri: str, n_trials: int) -> list:
    import optuna
    work = base / "work"
    work.mkdir()
    args = [sys.executable, str(REPO / "sweep.py"), "-m", *TRIAL, f"data.root={data_root(base)}",
            "data.download=false", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=bench", f"tracking.uri={tracking_uri}", f"cache.dir={work / 'cache'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
           "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1"}
    start, cpu = time.monotonic(), children_cpu_s()
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-4000:])
    print(f"sweep of {n_trials} trials: {time.monotonic() - start:.1f} s wall, "
          f"{children_cpu_s() - cpu:.1f} CPU s of the worker (start-up, hooks and trials)")
    study = optuna.load_study(study_name="bench", storage=storage)
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="store_true", help="PostgreSQL + mlflow server instead of SQLite")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ecosplit-bench-tracking-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as an unprivileged user when we are root
    if args.server:
        from tests.services import MlflowServer, PostgresServer
        with PostgresServer(base / "postgres") as pg:
            pg.create_database("optuna")
            pg.create_database("mlflow")
            with MlflowServer(pg.url("mlflow"), base / "mlflow-artifacts") as server:
                trials = run(base, pg.url("optuna"), server.uri, args.trials)
        where = "PostgreSQL + mlflow server"
    else:
        trials = run(base, f"sqlite:///{base}/optuna.db", f"sqlite:///{base}/mlflow.db", args.trials)
        where = "SQLite (optuna.db, mlflow.db)"
    print(f"tracking: {where}; trial: {' '.join(TRIAL)}")
    print("trial   task     work   (train  interm.  prune  eval)   tracking  tracking/task")
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        work = sum(a[k] for k in WORK)
        tracking = a["time_task_s"] - work
        rows.append((a["time_task_s"], work, tracking))
        print(f"{t.number:5d}  {a['time_task_s']:6.3f}  {work:6.3f}  ({a['time_train_s']:6.3f} {a['time_intermediate_s']:6.3f} "
              f"{a['time_prune_s']:6.3f} {a['time_eval_s']:6.3f})  {tracking:7.3f} s  {tracking / a['time_task_s']:6.1%}")
    later = rows[1:] or rows  # the first trial also pays the process's first MLflow calls (imports, store)
    task, work, tracking = (statistics.median(r[i] for r in later) for i in range(3))
    print(f"\nmedian of trials 1..{len(rows) - 1}: task {task:.3f} s, work {work:.3f} s, tracking {tracking:.3f} s "
          f"= {tracking / task:.1%} of the task")


if __name__ == "__main__":
    main()
