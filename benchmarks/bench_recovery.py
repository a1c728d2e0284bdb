"""Recovery after a SIGKILL, and what heartbeats cost.

(a) Time from re-running a SIGKILLed sweep to its freed trial restarting. A smoke sweep
    (tests/fault_app.py = sweep.py with a pause injected into trial 0, inside its MLflow run) is
    killed with SIGKILL while trial 0 runs; the same command is started again at once. The
    killed trial is freed (FAIL "worker died: ...", re-queued with the same params) and its
    retry starts:
      same host   the re-run sees that the owner PID on this host is gone: freed at once;
      other host  the killed worker ran with ECOSPLIT_OPTUNA_HOST=other-host, so the re-run
                  cannot check its PID and waits until its heartbeat is older than grace_period.
    Both with the default heartbeat settings (interval 10 s, grace 30 s) and a shorter interval
    (2 s, grace 6 s). Storage and tracking: the app's defaults (SQLite files in a temp dir).
    Printed per case: re-run start -> trial freed, re-run start -> retry started, kill -> retry
    started (Optuna's datetime_complete of the killed trial and datetime_start of its retry).
    "re-run start -> sweeper ready" (process start, imports, study opened) is the floor of the
    same-host figure.

(b) Heartbeat cost per trial. The sweeper records one heartbeat per running trial when the trial
    starts and every heartbeat_interval seconds after, from a thread. Measured here: the time of
    one ``record_heartbeat`` through the plugin's storage (SQLite file; and a throwaway PostgreSQL
    server from tests/services.py when its binaries are installed), N calls on a RUNNING trial.
    Cost per trial = (1 + T / interval) beats x time per beat; share = cost / T, for a default
    trial of T seconds: measured side by side with --default-trial (one real default trial,
    30 epochs on $MNIST_ROOT, heartbeats on), else README's estimate of 50 s.

    .venv/bin/python benchmarks/bench_recovery.py --repeats 3   # ~4.5 min on 2 cores (1 repeat: ~1.5 min)
    MNIST_ROOT=../shared/mnist .venv/bin/python benchmarks/bench_recovery.py --skip-a --default-trial  # ~2 min

No assertions: it prints the figures and ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

APP = REPO / "tests" / "fault_app.py"
SMOKE = ["experiment=smoke", "data.download=false", "sweep.n_trials=1", "search.one_minus_mu=1e-5",
         "selection.min_val_accuracy=1.0"]
HEARTBEATS = {  # label -> overrides (interval, grace)
    "default (10 s / 30 s)": [],
    "short   (2 s / 6 s)  ": ["hydra.sweeper.heartbeat_interval=2"],
}
README_TRIAL_S = 50.0  # README: a default trial, 30 epochs on the 5k subset, 2 cores


def data_root(tmp: Path) -> Path:
    root = os.environ.get("MNIST_ROOT")
    if root and (Path(root) / "MNIST" / "raw").is_dir():
        return Path(root)
    from conftest import make_fake_mnist

    return make_fake_mnist(tmp / "fake-mnist")


def env_base() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAULT", "ECOSPLIT_OPTUNA_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the sweep never paused (exit {proc.poll()})")
        time.sleep(0.02)


def ready_time(log: Path) -> float | None:
    """When the re-run's sweeper had opened the study (its first log line, local time)."""
    import datetime

    for line in log.read_text(errors="replace").splitlines():
        if "Optuna study '" in line and line.startswith("[20"):
            stamp = line[1:24]
            return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def kill_and_rerun(work: Path, data: Path, other_host: bool, hb: list[str]) -> dict:
    """One measurement: start, pause in trial 0, SIGKILL, re-run the same command at once."""
    import optuna

    work.mkdir(parents=True)
    cmd = [sys.executable, str(APP), "-m", *SMOKE, f"data.root={data}", *hb]
    victim_env = {**env_base(), "FAULT": "pause", "FAULT_TRIAL": "0", "FAULT_DIR": str(work / "fault")}
    if other_host:
        victim_env["ECOSPLIT_OPTUNA_HOST"] = "other-host"
    with open(work / "victim.log", "w") as log:
        victim = subprocess.Popen(cmd, cwd=work, env=victim_env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(work / "fault" / "paused", victim)
    os.kill(victim.pid, signal.SIGKILL)
    t_kill = time.time()
    victim.wait()
    t_rerun = time.time()
    with open(work / "rerun.log", "w") as log:
        rerun = subprocess.run(cmd, cwd=work, env=env_base(), stdout=log, stderr=subprocess.STDOUT)
    if rerun.returncode != 0:
        raise RuntimeError(f"the re-run failed (exit {rerun.returncode}); see {work / 'rerun.log'}")
    study = optuna.load_study(study_name="smoke-scalar", storage=f"sqlite:///{work / 'optuna-smoke.db'}")
    trials = study.get_trials(deepcopy=False)
    killed = trials[0]
    retry = next(t for t in trials if 0 in t.system_attrs.get("retry_history", []))
    freed = killed.datetime_complete.timestamp()
    restarted = retry.datetime_start.timestamp()
    ready = ready_time(work / "rerun.log")
    return {
        "ready": (ready - t_rerun) if ready else float("nan"),
        "freed": freed - t_rerun,
        "restart": restarted - t_rerun,
        "kill_restart": restarted - t_kill,
        "reason": killed.user_attrs.get("fail_reason", ""),
    }


def part_a(tmp: Path, data: Path, repeats: int) -> None:
    print("(a) SIGKILL mid-trial, then the same command again at once (SQLite defaults, smoke trial)")
    print(f"    {'case':<44} {'ready':>7} {'freed':>7} {'restart':>8} {'kill->restart':>14}   freed because")
    rows = {}
    for hb_label, hb in HEARTBEATS.items():
        for other in (False, True):
            label = f"{'other host' if other else 'same host '} heartbeat {hb_label}"
            results = [kill_and_rerun(tmp / f"a-{uuid.uuid4().hex[:8]}", data, other, hb) for _ in range(repeats)]
            med = {k: statistics.median(r[k] for r in results) for k in ("ready", "freed", "restart", "kill_restart")}
            rows[(hb_label, other)] = med
            reason = results[-1]["reason"].replace("worker died: ", "")
            print(f"    {label:<44} {med['ready']:6.1f}s {med['freed']:6.1f}s {med['restart']:7.1f}s "
                  f"{med['kill_restart']:13.1f}s   {reason}")
    print("    ready/freed/restart: seconds after the re-run was started; medians of", repeats, "run(s)")
    for hb_label in HEARTBEATS:
        same, other = rows[(hb_label, False)], rows[(hb_label, True)]
        print(f"    heartbeat {hb_label.strip()}: other host / same host (re-run -> restart) = "
              f"{other['restart'] / same['restart']:.1f}x")


def time_heartbeats(url: str, n: int) -> list[float]:
    import optuna

    from hydra_plugins.ecosplit_optuna_sweeper._storage import rdb_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = rdb_storage(url, heartbeat_interval=10, grace_period=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(storage=storage, study_name=f"hb-{uuid.uuid4().hex[:8]}")
        trial = study.ask()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        study._storage.record_heartbeat(trial._trial_id)
        times.append(time.perf_counter() - t)
    study.tell(trial, 0.0)
    storage.engine.dispose()
    return times


def default_trial_seconds(tmp: Path) -> float:
    """One default trial (conf/sweep.yaml as is, heartbeats on) on $MNIST_ROOT: its duration."""
    import optuna

    root = os.environ.get("MNIST_ROOT")
    if not (root and (Path(root) / "MNIST" / "raw").is_dir()):
        raise SystemExit("--default-trial needs MNIST_ROOT (the 5k-train subset of README)")
    work = tmp / "default-trial"
    work.mkdir()
    cmd = [sys.executable, str(REPO / "sweep.py"), "-m", f"data.root={root}", "data.download=false",
           "sweep.n_trials=1", "selection.min_val_accuracy=1.0"]
    with open(work / "sweep.log", "w") as log:
        subprocess.run(cmd, cwd=work, env=env_base(), stdout=log, stderr=subprocess.STDOUT, check=True)
    (t,) = optuna.load_study(study_name="ecosplit-scalar", storage=f"sqlite:///{work / 'optuna.db'}").trials
    return t.duration.total_seconds()


def part_b(tmp: Path, n: int, trial_s: float, measured: bool) -> None:
    print(f"\n(b) heartbeat cost: {n} record_heartbeat calls on a RUNNING trial (the plugin's storage)")
    urls = {"SQLite file": f"sqlite:///{tmp / 'heartbeat.db'}"}
    server = None
    from services import PostgresServer, postgres_available

    if postgres_available() is None:
        server = PostgresServer(tmp / "postgres")
        urls["PostgreSQL (127.0.0.1)"] = server.url()
    try:
        where = "measured here" if measured else "README's estimate"
        print(f"    default trial T = {trial_s:.1f} s ({where})")
        print(f"    {'storage':<24} {'per beat (median / p95)':>24} {'interval':>9} {'beats/trial':>12} "
              f"{'cost/trial':>11} {'share of T':>11}")
        for name, url in urls.items():
            times = sorted(time_heartbeats(url, n))
            med, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
            for interval in (10, 2):
                beats = 1 + int(trial_s // interval)
                cost = beats * statistics.mean(times)
                print(f"    {name:<24} {med * 1e3:9.2f} ms / {p95 * 1e3:6.2f} ms {interval:7d} s {beats:12d} "
                      f"{cost * 1e3:8.1f} ms {cost / trial_s:10.4%}")
    finally:
        if server is not None:
            server.stop()
    print("    (the beats run in a thread beside the trial: the share bounds their wall-time cost; the\n"
          "    throwaway PostgreSQL runs with fsync=off, a production server's commit costs more)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="kill/re-run measurements per case (median)")
    ap.add_argument("--beats", type=int, default=200, help="record_heartbeat calls timed per storage")
    ap.add_argument("--default-trial", action="store_true",
                    help="time one real default trial on $MNIST_ROOT for (b) instead of README's 50 s")
    ap.add_argument("--skip-a", action="store_true", help="only (b)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    os.chmod(tmp, 0o711)  # the throwaway PostgreSQL's user must reach its data dir
    try:
        data = data_root(tmp)
        print(f"data: {data}; {os.cpu_count()} CPUs\n")
        if not args.skip_a:
            part_a(tmp, data, args.repeats)
        trial_s = default_trial_seconds(tmp) if args.default_trial else README_TRIAL_S
        part_b(tmp, args.beats, trial_s, args.default_trial)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
