"""What a sweep trial costs besides its own work: storage, tracking, the sweeper, data loading.

One `sweep.py -m` worker runs a small smoke study (bench_workers.py's trial: data.train_subset=600,
1 epoch, prune.finetune_epochs=1; 1 - mu searched on the continuous interval and train.path=null, so
every trial trains its own model from scratch and publishes it to the reuse cache) against a throwaway SQLite store (default) or, with
--server, a throwaway PostgreSQL + `mlflow server` on 127.0.0.1 (tests/services.py; artifacts
proxied by the server).

Per trial the task records time_task_s (the whole task) and its own work: time_train_s,
time_intermediate_s (eq. (8) after every epoch), time_prune_s, time_eval_s; and time_data_s
(loading the data). Optuna's datetime_start/complete give the trial as the sweeper sees it (ask,
suggest, Hydra's job launch, task, tell), the next trial's start the gap after it. Over the steady
trials 1..n-2 (trial 0 also pays the process's first MLflow calls; the last has no next start):

    per-trial wall = next trial's start - this trial's start
                   = work + overhead
    overhead       = data          (time_data_s)
                   + tracking      (task - work - data: MLflow runs, params, metrics, artifacts,
                                    the logged model, dataset input, cache claim/publish)
                   + sweeper       (trial - task: ask, suggest, Hydra's job launch, tell)
                   + gap           (tell -> next ask)

Calls made in a background thread while the trial computes cost no wall time here when a core is
idle, but CPU all the same; and on a shared machine every wall time above stretches with the
others' load. So the same split is printed in CPU seconds, which the others' load hardly moves:
the worker's CPU over the steady window (all its threads, polled from /proc) against the CPU of
the same trials' work replayed alone afterwards (their params, one process, no sweeper, no
tracking; a first trial replayed untimed to warm it up), which also checks that the replay gives
the sweep's objectives.

    .venv/bin/python benchmarks/bench_trial_tracking.py [--server [--requests]] [--trials 10] [--repo DIR ...] [--breakdown]

--requests (with --server) also counts the worker's HTTP requests to the tracking server in each
typical trial, by endpoint (benchmarks/request_log/sitecustomize.py, put on the worker's path).

--breakdown then runs the SQLite sweep once more with the overhead's pieces timed in the process
(Hydra's job launch and its parts, Optuna's ask and tell, the task's own steps around its work, the
reuse cache's calls; calls in the main thread only: a background thread's cost no wall time).

--repo runs another checkout's sweep.py (e.g. one before a change; given several times, the
checkouts alternate, --rounds times each, and the medians are printed side by side).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

# every trial trains its own model from scratch (1 - mu on the continuous interval, not the default grid;
# no warm start from a path model another trial trained): equal trials, and a replay alone does the same work
TRIAL = ["experiment=smoke", "data.train_subset=600", "train.epochs=1", "prune.finetune_epochs=1",
         "train.num_threads=1", "hydra/sweeper/ecosplit_pruner=none", "selection.min_val_accuracy=1.0",
         "search.one_minus_mu=tag(log, interval(3.0e-6, 5.0e-5))", "train.path=null"]
WORK = ("time_train_s", "time_intermediate_s", "time_prune_s", "time_eval_s")
TICK_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds of a live process, all its threads (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime, stime


def data_root(base: Path) -> Path:
    root = os.environ.get("MNIST_ROOT")
    if root and (Path(root) / "MNIST" / "raw").is_dir():
        return Path(root)
    from conftest import make_fake_mnist
    return make_fake_mnist(base / "mnist", n_train=1200, n_test=600)


def cpu_at(samples: list, when: datetime.datetime) -> float:
    """The worker's CPU seconds at ``when``, from the polled (time, cpu) samples."""
    before = [cpu for t, cpu in samples if t <= when]
    return before[-1] if before else samples[0][1]


REQUEST_LOG_SITE = Path(__file__).resolve().parent / "request_log"  # --requests: its sitecustomize counts them


def requests_per_trial(folder: Path, trials) -> dict:
    """--requests: the HTTP requests the worker made in each typical trial's window (its start to
    the next trial's start; calls a trial leaves to a background thread may fall in the next):
    the median count and, by endpoint, the median count of each."""
    import re
    times, paths = [], []
    for f in folder.glob("*.txt"):
        for line in f.read_text().splitlines():
            when, _, rest = line.partition(" ")
            times.append(float(when))
            paths.append(re.sub(r"/[0-9a-f]{32}|/m-[0-9a-f]{32}|/\d+(?=/)", "/<id>", rest))  # ids of runs, models, experiments
    per_trial, by_path = [], {}
    for t, nxt in zip(trials[2:], trials[3:]):  # typical trials 2..n-2
        lo, hi = t.datetime_start.timestamp(), nxt.datetime_start.timestamp()
        inside = [p for w, p in zip(times, paths) if lo <= w < hi]
        per_trial.append(len(inside))
        for p in set(paths):
            by_path.setdefault(p, []).append(inside.count(p))
    return {"median": statistics.median(per_trial), "min": min(per_trial), "max": max(per_trial),
            "by_path": {p: statistics.median(c) for p, c in by_path.items() if statistics.median(c) > 0}}


def run(repo: Path, base: Path, storage: str, tracking_uri: str, n_trials: int, count_requests: bool = False) -> dict:
    import optuna
    work = base / "work"
    work.mkdir()
    data = data_root(base)
    args = [sys.executable, str(repo / "sweep.py"), "-m", *TRIAL, f"data.root={data}",
            "data.download=false", f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=bench", f"tracking.uri={tracking_uri}", f"cache.dir={work / 'cache'}"]
    if tracking_uri.startswith("http"):  # artifacts proxied by the server (the smoke preset's is a local folder)
        args.append("tracking.artifact_location=null")
    env = {**os.environ, "PYTHONPATH": str(repo), "MLFLOW_DISABLE_TELEMETRY": "true",
           "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1"}
    if count_requests:
        (base / "requests").mkdir()
        env.update(PYTHONPATH=f"{REQUEST_LOG_SITE}{os.pathsep}{repo}", ECOSPLIT_REQUEST_LOG=str(base / "requests"))
    launched, start = datetime.datetime.now(), time.monotonic()
    with open(base / "console.txt", "w") as log:
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        samples = []  # (when, worker CPU s): polled, a child's CPU is readable only while it lives
        while proc.poll() is None:
            cpu = process_cpu_s(proc.pid)
            if cpu is not None:
                samples.append((datetime.datetime.now(), cpu))
            time.sleep(0.02)
    exited, wall = datetime.datetime.now(), time.monotonic() - start
    if proc.returncode:
        raise SystemExit((base / "console.txt").read_text()[-4000:])
    study = optuna.load_study(study_name="bench", storage=storage)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    if [t.state.name for t in trials] != ["COMPLETE"] * n_trials:
        raise SystemExit(f"expected {n_trials} COMPLETE trials, got {[t.state.name for t in trials]}")
    rows = []
    for t, nxt in zip(trials, trials[1:]):
        a = t.user_attrs
        work_s = sum(a[k] for k in WORK)
        trial_s = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({"number": t.number, "wall": (nxt.datetime_start - t.datetime_start).total_seconds(),
                     "work": work_s, "data": a["time_data_s"], "tracking": a["time_task_s"] - work_s - a["time_data_s"],
                     "sweeper": trial_s - a["time_task_s"],
                     "gap": (nxt.datetime_start - t.datetime_complete).total_seconds(),
                     "train": a["time_train_s"], "eval": a["time_eval_s"]})
    steady = rows[1:]  # trials 1..n-2
    first, last = trials[1].datetime_start, trials[-1].datetime_start
    cpu_s = cpu_at(samples, last) - cpu_at(samples, first)
    replayed = replay_work(repo, data, trials[:-1])  # trial 0 warms the replay up
    same = all(math.isclose(r["objective"], trials[r["number"]].values[0], rel_tol=1e-9) for r in replayed)
    return {"rows": rows, "steady": steady, "wall_s": wall, "cpu_per_trial": cpu_s / len(steady),
            "requests": requests_per_trial(base / "requests", trials) if count_requests else None,
            "work_cpu_per_trial": statistics.mean(r["cpu_s"] for r in replayed[1:]), "same_objectives": same,
            "startup_s": (trials[0].datetime_start - launched).total_seconds(),
            "tail_s": (exited - trials[-1].datetime_complete).total_seconds()}


REPLAY = """
import json, sys, time
from hydra import compose, initialize_config_dir
from pipeline import sweep
from pipeline.stages import load_data, measure, prune_model, train_dense
from pipeline.training import evaluate

args = json.loads(sys.argv[1])
out = []
with initialize_config_dir(version_base="1.3", config_dir=args["conf"]):
    for trial in args["trials"]:
        cfg = compose("sweep", overrides=args["overrides"] + [f"{k}={v}" for k, v in trial["params"].items()])
        data = load_data(cfg)
        start = time.process_time()  # the work of pipeline.sweep._trial_metrics, without MLflow
        dense = train_dense(cfg, data, lambda rec, model: sweep.intermediate_metrics(cfg, model, data, rec.val_loss))
        pruned = prune_model(cfg, dense, data)
        metrics = measure(dense, pruned, data, dense_test=evaluate(dense, data.test))
        objective = sweep.eq8_terms(cfg, dense, pruned, metrics["val_loss"])["objective"]
        out.append({"number": trial["number"], "cpu_s": time.process_time() - start, "objective": objective})
print(json.dumps(out))
"""


# (module, attribute, label): the overhead's pieces, timed in the real process by --breakdown; a
# label given twice times either function (hydra/launcher=ecosplit's or Hydra's basic launcher's,
# whichever the checkout runs; a module or function it lacks is skipped)
RUN_JOB = "job launch (run_job), task included"
TIMED = [
    ("hydra_plugins.ecosplit_optuna_sweeper._launcher", "run_job", RUN_JOB),
    # (Hydra's plugin scan re-executes the basic launcher's module, which then imports the wrapped run_job)
    ("hydra.core.utils", "run_job", RUN_JOB),
    ("hydra_plugins.ecosplit_optuna_sweeper._launcher", "save_config", "  .hydra/config.yaml, hydra.yaml, overrides.yaml"),
    ("hydra.core.utils", "_save_config", "  .hydra/config.yaml, hydra.yaml, overrides.yaml"),
    ("hydra.core.hydra_config", "HydraConfig.set_config", "  HydraConfig.set_config"),
    ("hydra_plugins.ecosplit_optuna_sweeper._job_config", "JobConfigLoader.load_sweep_config",
     "job config (the kept one copied, the new values applied)"),
    ("hydra_plugins.ecosplit_optuna_sweeper._loop", "EcosplitOptunaSweeperImpl._ask_batch", "Optuna ask + suggest"),
    ("hydra_plugins.ecosplit_optuna_sweeper._loop", "EcosplitOptunaSweeperImpl._tell_batch", "Optuna tell"),
    ("hydra_plugins.ecosplit_optuna_sweeper._loop", "EcosplitOptunaSweeperImpl._sync", "sweeper sync"),
    ("hydra.core.utils", "configure_log", "logging set-up (the launcher's calls around a job, run_job's)"),
    # imported by name before the wrap above (the basic launcher's module imports it after)
    ("hydra_plugins.ecosplit_optuna_sweeper._launcher", "configure_log",
     "logging set-up (the launcher's calls around a job, run_job's)"),
    ("pipeline.sweep", "run_trial", "task (run_trial)"),
    ("pipeline.sweep", "_trial_metrics", "  its work + cache (_trial_metrics)"),
    ("pipeline.sweep", "validate_sweep", "  validation"),
    ("pipeline.sweep", "load_data", "  data (load_data: the process's splits)"),
    ("pipeline.sweep", "training_key", "  training key (sha256 of the training config and data)"),
    ("pipeline.tracking", "flatten", "  settings as params (flatten)"),
    ("pipeline.sweep", "dataset_input", "  dataset input (digest, profile)"),
    ("pipeline.tracking", "RunLog.join", "  waiting for the run's background MLflow calls"),
    ("pipeline.tracking", "RunLog.send", "  sending the final metrics and tags"),
    ("mlflow.tracking", "MlflowClient.set_terminated", "  ending the run"),
    ("pipeline.cache", "ModelCache._claim", "  cache: claim run"),
    # one search of the key's runs after the claim (older checkouts: _from_mlflow's look-up, then _owner's search)
    ("pipeline.cache", "ModelCache._runs", "  cache: search of the key's runs"),
    ("pipeline.cache", "ModelCache._owner", "  cache: owner check"),
    ("pipeline.cache", "ModelCache._from_mlflow", "  cache: look-up in MLflow (older checkouts)"),
    ("pipeline.cache", "ModelCache._save_local", "  cache: local save"),
]

BREAKDOWN = """
import atexit, functools, importlib, json, os, runpy, sys, threading, time
spent = {}
def timed(owner, name, label):
    f = getattr(owner, name)
    @functools.wraps(f)
    def g(*a, **k):
        if threading.current_thread() is not threading.main_thread():  # off the trial's path: no wall time
            return f(*a, **k)
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent.setdefault(label, []).append(time.perf_counter() - t)
    setattr(owner, name, g)
for module, attr, label in json.loads(sys.argv[1]):
    try:
        owner = importlib.import_module(module)
    except ImportError:  # a checkout before that module
        continue
    *path, name = attr.split(".")
    for p in path:
        owner = getattr(owner, p)
    if hasattr(owner, name):  # a function of other checkouts is skipped
        timed(owner, name, label)
atexit.register(lambda: open(os.environ["BREAKDOWN_OUT"], "w").write(json.dumps(spent)))
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


COMPOSE = """
import statistics, sys, time
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
conf_dir, name = sys.argv[1:3]
with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
    master = compose(name, return_hydra_config=True)
    loader = GlobalHydra.instance().config_loader()
    times = []
    for _ in range(40):
        start = time.perf_counter()
        loader.load_sweep_config(master, [])
        times.append(time.perf_counter() - start)
print(statistics.median(times[5:]))
"""


def composition_ms(conf_dir: Path, name: str) -> float:
    """Hydra composing one sweep job's config from scratch (``load_sweep_config``), median ms."""
    out = subprocess.run([sys.executable, "-c", COMPOSE, str(conf_dir), name], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.split()[-1]) * 1e3


def breakdown(repo: Path, n_trials: int) -> None:
    """--breakdown: the same SQLite sweep once more, with the overhead's pieces (TIMED) timed in
    the process (perf_counter around each call, no profiler); medians over trials 2..n-1 (trial
    0 pays first calls, trial 1 the job-config check)."""
    base = Path(tempfile.mkdtemp(prefix="ecosplit-bench-breakdown-"))
    work = base / "work"
    work.mkdir()
    data = data_root(base)
    args = [sys.executable, "-c", BREAKDOWN, json.dumps(TIMED), str(repo / "sweep.py"), "-m", *TRIAL,
            f"data.root={data}", "data.download=false", f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.storage=sqlite:///{base}/optuna.db", "hydra.sweeper.study_name=bench",
            f"tracking.uri=sqlite:///{base}/mlflow.db", f"cache.dir={work / 'cache'}"]
    env = {**os.environ, "PYTHONPATH": str(repo), "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
           "BREAKDOWN_OUT": str(base / "breakdown.json")}
    with open(base / "console.txt", "w") as log:
        if subprocess.run(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
            raise SystemExit((base / "console.txt").read_text()[-4000:])
    spent = json.loads((base / "breakdown.json").read_text())
    per_trial, per_call = {}, {}  # label -> seconds per steady trial (median over trials 2..n-1), calls a trial
    labels = list(dict.fromkeys(label for _, _, label in TIMED))
    for label in labels:
        calls = spent.get(label, [])
        if len(calls) < n_trials:  # not called in every trial (e.g. the cache's calls when a model is there)
            per_trial[label], per_call[label] = float("nan"), 0
            continue
        k = per_call[label] = len(calls) // n_trials  # calls per trial (three .hydra files, ...); extra ones at start-up
        sums = [sum(calls[i:i + k]) for i in range(len(calls) - n_trials * k, len(calls), k)]
        per_trial[label] = statistics.median(sums[2:n_trials - 1])
    print(f"\nwhere a steady trial's time goes (ms per trial, median over trials 2..{n_trials - 2} of one SQLite "
          "sweep, timed in the process; indented lines are parts of the line above)")
    for label in labels:
        calls = f" ({per_call[label]} calls)" if per_call[label] > 1 else ""
        if math.isnan(per_trial[label]):
            print(f"  {'-':>8s}  {label} (not in every trial, or not in this checkout)")
        else:
            print(f"  {per_trial[label] * 1e3:8.1f}  {label}{calls}")
    launch = per_trial[RUN_JOB] - per_trial["task (run_trial)"]
    print(f"  {launch * 1e3:8.1f}  = Hydra's job launch (run_job without the task)")
    task = per_trial["task (run_trial)"] - per_trial["  its work + cache (_trial_metrics)"]
    print(f"  {task * 1e3:8.1f}  = the task outside its work and cache calls (validation, params, run start/end)")
    print(f"Hydra composing a job's config from scratch instead of the copy: {composition_ms(repo / 'conf', 'sweep'):.1f} ms "
          f"for sweep.py, {composition_ms(repo / 'tests' / 'sweeper_app' / 'conf', 'config'):.1f} ms for a one-file app "
          "(tests/sweeper_app; median of 35)")


def replay_work(repo: Path, data: Path, trials: list) -> list[dict]:
    """CPU seconds of each trial's work done alone (``REPLAY``) and its objective."""
    overrides = [o for o in TRIAL if not o.startswith(("hydra", "search.one_minus_mu="))]
    overrides += [f"data.root={data}", "data.download=false"]
    args = {"conf": str(repo / "conf"), "overrides": overrides,
            "trials": [{"number": t.number, "params": t.params} for t in trials]}
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", REPLAY, json.dumps(args)], cwd=repo, env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    return json.loads(out.stdout.splitlines()[-1])


def run_once(repo: Path, server: bool, n_trials: int, count_requests: bool = False) -> dict:
    base = Path(tempfile.mkdtemp(prefix="ecosplit-bench-tracking-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as an unprivileged user when we are root
    if server:
        from tests.services import MlflowServer, PostgresServer
        with PostgresServer(base / "postgres") as pg:
            pg.create_database("optuna")
            pg.create_database("mlflow")
            import optuna  # Optuna's tables, made untimed
            optuna.storages.RDBStorage(pg.url("optuna"))
            with MlflowServer(pg.url("mlflow"), base / "mlflow-artifacts") as mlflow_server:
                return run(repo, base, pg.url("optuna"), mlflow_server.uri, n_trials, count_requests)
    return run(repo, base, f"sqlite:///{base}/optuna.db", f"sqlite:///{base}/mlflow.db", n_trials)


def summary(r: dict) -> dict:
    """Sums over the steady trials, per trial."""
    n = len(r["steady"])
    mean = {k: sum(row[k] for row in r["steady"]) / n for k in r["steady"][0] if k != "number"}
    mean["overhead"] = mean["wall"] - mean["work"]
    mean["cpu"], mean["work_cpu"] = r["cpu_per_trial"], r["work_cpu_per_trial"]
    # typical trials: 2..n-2, without trial 1, which also pays the sweep's one check of the
    # job-config copy against Hydra's own composition (_job_config.py)
    shares = [(row["wall"] - row["work"]) / row["wall"] for row in r["steady"] if row["number"] >= 2]
    mean["typical"], mean["typical_min"], mean["typical_max"] = statistics.median(shares), min(shares), max(shares)
    first = next(row for row in r["steady"] if row["number"] == 1)
    typical_s = statistics.median(row["wall"] - row["work"] for row in r["steady"] if row["number"] >= 2)
    mean["trial1_extra"] = (first["wall"] - first["work"]) - typical_s
    return mean


def print_run(repo: Path, r: dict) -> None:
    print(f"\n{repo}: {len(r['rows']) + 1} trials in {r['wall_s']:.1f} s (start-up {r['startup_s']:.1f} s: launch -> "
          f"trial 0 starts; tail {r['tail_s']:.1f} s: last trial told -> exit)")
    print("trial   wall     work   (train   eval)   overhead = data  tracking  sweeper   gap    overhead/wall")
    for row in r["rows"]:
        over = row["wall"] - row["work"]
        print(f"{row['number']:5d}  {row['wall']:6.3f}  {row['work']:6.3f}  ({row['train']:6.3f} {row['eval']:6.3f})  "
              f"{over:7.3f} = {row['data']:5.3f}  {row['tracking']:7.3f}  {row['sweeper']:7.3f}  {row['gap']:5.3f}   "
              f"{over / row['wall']:6.1%}")
    m = summary(r)
    print(f"per steady trial (1..{len(r['rows']) - 1}): wall {m['wall']:.3f} s = work {m['work']:.3f} s + overhead "
          f"{m['overhead']:.3f} s (data {m['data']:.3f}, tracking {m['tracking']:.3f}, sweeper {m['sweeper']:.3f}, "
          f"gap {m['gap']:.3f}) -> overhead {m['overhead'] / m['wall']:.1%} of the trial's wall time (target < 10%)")
    print(f"typical trial (2..{len(r['rows']) - 1}): overhead median {m['typical']:.1%} ({m['typical_min']:.1%}-"
          f"{m['typical_max']:.1%}); trial 1 carries {m['trial1_extra']:.3f} s more, once per sweep (the check "
          "of the job-config copy against Hydra's composition)")
    print(f"in CPU seconds: worker {m['cpu']:.3f} s per steady trial (all threads) = its work replayed alone "
          f"{m['work_cpu']:.3f} s + overhead {m['cpu'] - m['work_cpu']:.3f} s -> overhead "
          f"{(m['cpu'] - m['work_cpu']) / m['cpu']:.1%} of the trial's CPU; replay's objectives "
          f"{'identical to' if r['same_objectives'] else 'DIFFERENT from'} the sweep's")
    if r["requests"] is not None:
        q = r["requests"]
        print(f"HTTP requests to the tracking server per typical trial: median {q['median']} ({q['min']}-{q['max']}); "
              "by endpoint (median per trial):")
        for path, n in sorted(q["by_path"].items(), key=lambda item: (-item[1], item[0])):
            print(f"  {n:4g}  {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="store_true", help="PostgreSQL + mlflow server instead of SQLite")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--repo", type=Path, action="append", help="the checkout whose sweep.py runs (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each checkout, alternating")
    parser.add_argument("--requests", action="store_true",
                        help="with --server: count the worker's HTTP requests per trial (benchmarks/request_log)")
    parser.add_argument("--breakdown", action="store_true",
                        help="then one more SQLite sweep that times the overhead's pieces in the process")
    args = parser.parse_args()
    if args.trials < 4:
        parser.error("--trials must be >= 4 (trials 1..n-2 are measured)")
    if args.requests and not args.server:
        parser.error("--requests counts requests to a tracking server: add --server")
    repos = [p.resolve() for p in args.repo or [REPO]]
    print(f"tracking: {'PostgreSQL + mlflow server' if args.server else 'SQLite (optuna.db, mlflow.db)'}; "
          f"{args.trials} trials: {' '.join(TRIAL)}")
    print("load average before start (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    results: dict[Path, list] = {p: [] for p in repos}
    for _ in range(args.rounds):
        for repo in repos:
            r = run_once(repo, args.server, args.trials, args.requests)
            results[repo].append(summary(r))
            print_run(repo, r)
    if len(repos) > 1 or args.rounds > 1:
        print("\nmedian over rounds, per steady trial:   wall    work   overhead (data  tracking sweeper  gap)  "
              "overhead/wall | CPU: worker  work   overhead/CPU | typical trial (2..n-2): median, range")
        for repo, runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            share = statistics.median(r["overhead"] / r["wall"] for r in runs)
            cpu_share = statistics.median((r["cpu"] - r["work_cpu"]) / r["cpu"] for r in runs)
            print(f"  {str(repo)[-30:]:30s} {med['wall']:6.3f}  {med['work']:6.3f}  {med['overhead']:6.3f}  "
                  f"({med['data']:5.3f} {med['tracking']:6.3f} {med['sweeper']:6.3f} {med['gap']:5.3f})  {share:6.1%}"
                  f"      | {med['cpu']:6.3f} {med['work_cpu']:6.3f}  {cpu_share:6.1%}"
                  f"       | {med['typical']:6.1%} ({min(r['typical_min'] for r in runs):.1%}-"
                  f"{max(r['typical_max'] for r in runs):.1%})")
    if args.breakdown:
        breakdown(repos[0], args.trials)


if __name__ == "__main__":
    main()
