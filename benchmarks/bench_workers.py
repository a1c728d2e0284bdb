"""Scaling out `sweep.py -m`: the same 24-trial smoke-sized study with 1, 2 and 3 local workers.

Every worker is an independent `python sweep.py -m` process (as on separate machines: own working
directory, sweep dir and cache dir, sampler seed i) on one Optuna study in a throwaway PostgreSQL
server and one throwaway `mlflow server` (127.0.0.1, backed by the same PostgreSQL, artifacts
proxied by the server) - both from tests/services.py. Each configuration gets its own study and
MLflow experiment, so no configuration reuses another's trained models.

Trial size: data.train_subset=600, 1 training epoch, prune.finetune_epochs=1 fixed and 1 - mu on the
continuous interval instead of the default grid, train.path=null (so every trial trains its own model
from scratch, not from a path model another worker may be training, and costs about the
same: with the grid, a trial reusing a model costs a third of one that trains, and workers drawing the
same value wait for each other's training), the synthetic MNIST of tests/conftest.py (or $MNIST_ROOT).
The pruner is off
(hydra/sweeper/ecosplit_pruner=none): this measures the throughput of equal trials, and a pruned trial
stops part-way at a point that depends on the other trials (which differ with the number of workers and
their seeds), so with pruning the configurations would not do the same work; every trial must end
COMPLETE. Threads:
train.num_threads=1 per worker for the 1/2/3-worker runs; "1 worker, 2 threads" is printed too.
Heartbeat on (interval 5 s, grace 20 s), as recommended for several workers. The 2-thread run sets
OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads collapse when any other process wants a core).

Per trial, the task logs time_train_s, time_intermediate_s, time_prune_s, time_eval_s (the work),
time_data_s and time_task_s (the whole task, MLflow calls included); Optuna's datetime_start/complete
give the trial's duration as the sweeper sees it (ask, suggest, Hydra's job launch, task, tell).
Overhead = everything but the work: inside the task (tracking: loading the data, MLflow runs, params,
artifacts, cache lookups),
around it (sweeper: Optuna ask/tell, Hydra job launch) and between a worker's trials (sync). What no
number of workers shortens is printed too: start-up (launch -> first trial: imports, the study, on_start)
and tail (last trial -> last exit: results, on_complete). Before the first configuration the imports
are run once untimed, so no configuration pays for a cold file cache, and Optuna's tables are created
untimed too.

    .venv/bin/python benchmarks/bench_workers.py            # ~6-8 min on 2 cores
"""
from __future__ import annotations

import datetime
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from tests.services import MlflowServer, PostgresServer  # noqa: E402

N_TRIALS = int(os.environ.get("BENCH_TRIALS", 24))  # the study size (smaller only for a quick check)
CONFIGS = [  # (label, workers, torch threads per worker)
    ("1 worker  x 1 thread ", 1, 1),
    ("2 workers x 1 thread ", 2, 1),
    ("3 workers x 1 thread ", 3, 1),
    ("1 worker  x 2 threads", 1, 2),  # with OMP_WAIT_POLICY=PASSIVE, see below
]
TRIAL = ["experiment=smoke", "data.train_subset=600", "train.epochs=1", "prune.finetune_epochs=1",
         "search.one_minus_mu=tag(log, interval(3.0e-6, 5.0e-5))", "train.path=null",
         "hydra/sweeper/ecosplit_pruner=none", "hydra.sweeper.heartbeat_interval=5", "hydra.sweeper.grace_period=20"]
WORK = ("time_train_s", "time_intermediate_s", "time_prune_s", "time_eval_s")


def cpu_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def group_cpu_s(pgids: set[int]) -> float:
    """CPU seconds (incl. reaped children) of the processes in these process groups (the services)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # fields after "(comm)": state ppid pgrp ... utime(11) stime cutime cstime
            total += sum(int(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def data_root(base: Path) -> Path:
    root = os.environ.get("MNIST_ROOT")
    if root and (Path(root) / "MNIST" / "raw").is_dir():
        return Path(root)
    from conftest import make_fake_mnist
    return make_fake_mnist(base / "mnist", n_train=1200, n_test=600)


def run_config(base: Path, pg: PostgresServer, tracking_uri: str, data: Path, label: str, workers: int,
               threads: int, services: set[int]) -> dict:
    import optuna
    from mlflow.tracking import MlflowClient

    tag = uuid.uuid4().hex[:8]
    study_name, experiment = f"bench-{workers}w{threads}t-{tag}", f"bench-workers-{tag}"
    storage = pg.url("optuna")
    procs, logs = [], []
    busy0, workers0, services0 = cpu_busy_s(), children_cpu_s(), group_cpu_s(services)
    start, launched = time.monotonic(), datetime.datetime.now()
    for i in range(workers):
        work = base / study_name / f"w{i}"
        work.mkdir(parents=True)
        args = [sys.executable, str(REPO / "sweep.py"), "-m", *TRIAL, f"data.root={data}", "data.download=false",
                f"train.num_threads={threads}", f"hydra.sweeper.n_trials={N_TRIALS}",
                f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}",
                f"hydra.sweeper.sampler.seed={i}", f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}",
                "tracking.artifact_location=null",  # proxied by the server (the smoke preset's is a local folder)
                f"selection.registered_model=bench-{tag}", f"cache.dir={work / 'cache'}",
                f"hydra.sweep.dir={work / 'multirun'}"]
        log = open(work / "console.txt", "w")
        logs.append(work / "console.txt")
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
               "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": str(threads)}
        if threads > 1:
            # OpenMP threads spin while waiting: if anything else wants a core (the services,
            # another user's job), a 2-thread torch on 2 cores slows down ~20x. Passive waits.
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        procs.append(subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT))
    exited: dict[int, datetime.datetime] = {}
    while len(exited) < len(procs):  # each worker's exit time (polled: they end in any order)
        for i, p in enumerate(procs):
            if i not in exited and p.poll() is not None:
                exited[i] = datetime.datetime.now()
                if p.returncode != 0:
                    raise SystemExit(f"{label}: a worker failed:\n{logs[i].read_text()[-3000:]}")
        if time.monotonic() - start > 1800:
            raise SystemExit(f"{label}: still running after 30 min")
        time.sleep(0.05)
    wall = time.monotonic() - start
    workers_cpu = children_cpu_s() - workers0
    services_cpu = group_cpu_s(services) - services0
    other_cpu = cpu_busy_s() - busy0 - workers_cpu - services_cpu

    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    if states != ["COMPLETE"] * N_TRIALS:
        raise SystemExit(f"{label}: expected {N_TRIALS} COMPLETE trials, got {sorted(states)}")
    trials = study.get_trials(deepcopy=False)
    client = MlflowClient(tracking_uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp_id], "tags.`ecosplit.role` = 'trial' and attributes.status = 'FINISHED'",
                              max_results=1000)
    worker_of = {int(r.data.tags["optuna.trial_number"]): r.data.params["cache.dir"] for r in runs}

    dur = {t.number: (t.datetime_complete - t.datetime_start).total_seconds() for t in trials}
    work = {t.number: sum(t.user_attrs[k] for k in WORK) for t in trials}
    task = {t.number: t.user_attrs["time_task_s"] for t in trials}
    gaps = []  # a worker's previous tell -> its next ask
    for w in set(worker_of.values()):
        mine = sorted((t for t in trials if worker_of.get(t.number) == w), key=lambda t: t.datetime_start)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(mine, mine[1:])]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    return {
        "label": label, "workers": workers, "wall": wall, "steady": (last - first).total_seconds(),
        "startup_s": (first - launched).total_seconds(), "tail_s": (max(exited.values()) - last).total_seconds(),
        "workers_cpu": workers_cpu, "services_cpu": services_cpu, "other_cpu": other_cpu,
        "trial_s": statistics.mean(dur.values()), "work_s": statistics.mean(work.values()),
        "tracking_s": statistics.mean(task[n] - work[n] for n in dur),
        "sweeper_s": statistics.mean(dur[n] - task[n] for n in dur),
        "gap_s": statistics.mean(gaps) if gaps else 0.0,
        "train_s": statistics.mean(t.user_attrs["time_train_s"] for t in trials),
        "eval_s": statistics.mean(t.user_attrs["time_eval_s"] for t in trials),
    }


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="ecosplit-bench-workers-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as an unprivileged user when we are root
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    print(f"bench_workers: {N_TRIALS} trials per study; {os.cpu_count()} cores; trial: {' '.join(TRIAL)}")
    print("storage: throwaway PostgreSQL (tests/services.py); tracking: throwaway `mlflow server` on 127.0.0.1 "
          "backed by the same PostgreSQL, artifacts proxied by the server")
    data = data_root(base)
    print(f"data: {data}")
    # untimed: every configuration then starts with the same warm file cache
    subprocess.run([sys.executable, "-c", "import sweep"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                   check=True)
    print("load average before start (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    results = []
    try:
        with PostgresServer(base / "postgres") as pg:
            pg.create_database("optuna")
            pg.create_database("mlflow")
            import optuna  # Optuna's tables, made untimed: no configuration pays for creating them
            optuna.storages.RDBStorage(pg.url("optuna"))
            with MlflowServer(pg.url("mlflow"), base / "mlflow-artifacts") as mlflow_server:
                for label, workers, threads in CONFIGS:
                    services = {pg.proc.pid, mlflow_server.proc.pid}  # both lead their own process group
                    r = run_config(base, pg, mlflow_server.uri, data, label, workers, threads, services)
                    results.append(r)
                    print(f"  done: {label}  {r['wall']:.1f} s", flush=True)
    except BaseException:
        print(f"logs kept in {base}", file=sys.stderr)
        raise
    shutil.rmtree(base, ignore_errors=True)

    print()
    print("config                   wall    trials/min  steady trials/min  mean trial  work   "
          "tracking  sweeper  gap   overhead")
    for r in results:
        overhead = (r["trial_s"] + r["gap_s"] - r["work_s"]) / (r["trial_s"] + r["gap_s"])
        print(f"{r['label']}  {r['wall']:6.1f} s  {60 * N_TRIALS / r['wall']:8.1f}    "
              f"{60 * N_TRIALS / r['steady']:10.1f}       {r['trial_s']:6.2f} s  {r['work_s']:5.2f} s "
              f"{r['tracking_s']:6.3f} s  {r['sweeper_s']:5.3f} s {r['gap_s']:5.3f} s  {overhead:6.1%}")
    one, two = results[0], results[1]
    print()
    print(f"speed-up 2 vs 1 worker (1 thread each): wall {one['wall'] / two['wall']:.2f}x, "
          f"steady state {one['steady'] / two['steady']:.2f}x   (target >= 1.6x)")
    print(f"speed-up 3 vs 1 worker (1 thread each): wall {one['wall'] / results[2]['wall']:.2f}x, "
          f"steady state {one['steady'] / results[2]['steady']:.2f}x")
    print(f"1 worker, 2 threads vs 1 thread: wall {one['wall'] / results[3]['wall']:.2f}x")
    print()
    print("CPU seconds used during each run (of cores x wall available): the workers, the services (PostgreSQL + "
          "mlflow server) and everything else on the machine (other users' processes)")
    for r in results:
        print(f"  {r['label']}  workers {r['workers_cpu']:6.1f}   services {r['services_cpu']:5.1f}   "
              f"other {r['other_cpu']:6.1f}   of {os.cpu_count() * r['wall']:6.1f} core-s")
    base_r = results[0]
    fixed = base_r["trial_s"] + base_r["gap_s"] - base_r["work_s"]
    print("\nwhat no number of workers shortens (s): start-up = launch -> first trial starts (imports, study, "
          "on_start); tail = last trial ends -> last worker exits (results, on_complete)")
    for r in results:
        print(f"  {r['label']}  start-up {r['startup_s']:5.1f}   tail {r['tail_s']:5.1f}")
    print(f"\nfixed overhead per trial (1 worker): {fixed:.3f} s = {fixed / (fixed + base_r['work_s']):.1%} of this "
          f"smoke trial (work {base_r['work_s']:.2f} s; target < 10%); under 10% from ~{fixed / 0.1 - fixed:.1f} s of "
          "work per trial")
    print("columns: wall = first start -> last exit (process start-up, on_start, on_complete incl. model "
          "registration); steady = first trial start -> last trial end; mean trial = Optuna's ask -> tell; work = "
          "train + intermediate eq. (8) values + prune/fine-tune + evaluate; tracking = data loading, in-task MLflow "
          "calls and cache lookups (task - work); "
          "sweeper = ask/suggest/Hydra job launch/tell (trial - task); gap = a worker's tell -> next ask; "
          "overhead = (trial + gap - work) / (trial + gap), target < 10%")


if __name__ == "__main__":
    main()
