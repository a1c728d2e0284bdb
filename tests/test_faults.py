"""Fault injection on the real app: `sweep.py -m experiment=smoke` (tests/fault_app.py: the same
app with one trial misbehaving on demand), one test per fault. Each test lets the fault happen,
checks what it left, then re-runs the same command and checks the study is finished:

* exactly n_trials COMPLETE (+PRUNED) trials, nothing RUNNING or WAITING in Optuna;
* every FAIL trial has its fail_reason;
* in MLflow nothing RUNNING, one parent run ended FINISHED, one FINISHED trial run per COMPLETE
  trial and no trial number with two runs (no duplicate child runs);
* nothing that completed before the fault was lost.

SQLite rows use the app's default storage and tracking store (files in the working directory);
PostgreSQL rows use the session's PostgreSQL server and `mlflow server` (conftest.py), one
study and one experiment per test. Smoke trials on the synthetic MNIST take ~1-3 s each.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import REPO, study_runs

APP = REPO / "tests" / "fault_app.py"
FAIL_KIND = "ecosplit_optuna:fail_kind"
OWNER = "ecosplit_optuna:owner"
RUN_TIMEOUT_S = 300
# one training config for all trials (trials after the first reuse the dense model: fast), and a
# selection nobody meets (nothing registered: saves ~4 s of model logging per finished sweep)
FAST = ("search.one_minus_mu=1e-5", "selection.min_val_accuracy=1.0")


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_sweep_left_behind():
    """A test that fails while its sweep is paused must not leave the process waiting."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store: copied into a test's working directory it saves
    the ~5 s schema migration that the app's first run would do."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns"))
    store.engine.dispose()
    return folder / "mlflow.db"


class Run:
    """One start of the command: its process and its console output."""

    def __init__(self, proc: subprocess.Popen, out: Path, err: Path, fault_dir: Path | None):
        self.proc, self.out_path, self.err_path, self.fault_dir = proc, out, err, fault_dir

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the sweep did not end within {timeout} s:\n{self.tail()}") from None

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def tail(self, n: int = 4000) -> str:
        return f"--- stdout ---\n{self.stdout[-n:]}\n--- stderr ---\n{self.stderr[-n:]}"

    def wait_paused(self, timeout: float = 180) -> dict:
        """The paused trial's marker ({pid, trial}) once the fault app paused in it."""
        marker = self.fault_dir / "paused"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists():
                try:
                    return json.loads(marker.read_text())
                except json.JSONDecodeError:  # being written
                    pass
            if self.proc.poll() is not None:
                raise AssertionError(f"the sweep ended (exit {self.proc.returncode}) before the "
                                     f"trial paused:\n{self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"no trial paused within {timeout} s:\n{self.tail()}")

    def release(self) -> None:
        (self.fault_dir / "release").touch()

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout or text in self.stderr:
                return True
            if self.proc.poll() is not None:
                return text in self.stdout or text in self.stderr
            time.sleep(0.1)
        return False


class Sweep:
    """One command line (`fault_app.py -m experiment=smoke ...`) in one working directory, run as
    many times as a test needs; with or without a fault, the command line is the same."""

    def __init__(self, work: Path, data_root: Path, n_trials: int, *extra: str, postgres=None,
                 tracking_uri: str | None = None, mlflow_db_template: Path | None = None,
                 register: bool = False):
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.n_trials = n_trials
        mode = "multi" if "objective=multi" in extra else "scalar"
        self.args = ["experiment=smoke", f"data.root={data_root}", "data.download=false",
                     f"sweep.n_trials={n_trials}", *(FAST if not register else FAST[:1]), *extra]
        if postgres is None:  # the app's defaults: files in the working directory
            self.storage = f"sqlite:///{work / 'optuna-smoke.db'}"
            self.study_name = f"smoke-{mode}"
        else:
            name = f"faults-{uuid.uuid4().hex[:8]}"
            self.storage = postgres.url("optuna")
            self.study_name = f"{name}-{mode}"
            self.args += [f"sweep.storage={self.storage}", f"sweep.name={name}"]
        if tracking_uri is None:
            # the smoke preset's own store (conf/experiment/smoke.yaml)
            self.tracking_uri, self.experiment = f"sqlite:///{work / 'mlflow-smoke.db'}", "ecosplit"
            if mlflow_db_template is not None and not (work / "mlflow-smoke.db").exists():
                shutil.copy(mlflow_db_template, work / "mlflow-smoke.db")
        else:
            self.tracking_uri, self.experiment = tracking_uri, f"faults-{uuid.uuid4().hex[:8]}"
            self.args += [f"tracking.uri={tracking_uri}", f"tracking.experiment={self.experiment}",
                          "tracking.artifact_location=null",  # the server's store, not the preset's local folder
                          f"cache.experiment={self.experiment}-cache",  # models shared within this test only
                          f"selection.registered_model={self.experiment}"]
        self.starts = 0

    def start(self, fault: str | None = None, trial: int = 1, args: tuple[str, ...] = ()) -> Run:
        i = self.starts
        self.starts += 1
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FAULT", "ECOSPLIT_OPTUNA_", "MLFLOW_TRACKING"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        fault_dir = None
        if fault:
            fault_dir = self.work / f"fault-{i}"
            shutil.rmtree(fault_dir, ignore_errors=True)
            env.update(FAULT=fault, FAULT_TRIAL=str(trial), FAULT_DIR=str(fault_dir))
        out, err = self.work / f"run-{i}.out", self.work / f"run-{i}.err"
        cmd = [sys.executable, str(APP), "-m", *self.args, *args]
        with open(out, "w") as o, open(err, "w") as e:
            # SIGINT must raise KeyboardInterrupt even if pytest was started with it ignored
            proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=o, stderr=e, text=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _STARTED.append(proc)
        return Run(proc, out, err, fault_dir)

    def run(self, fault: str | None = None, trial: int = 1, args: tuple[str, ...] = ()) -> Run:
        r = self.start(fault, trial, args)
        r.wait()
        return r

    # -- what the study and the tracking store hold ------------------------------------------
    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study().get_trials(deepcopy=False)

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        return next(t for t in self.trials() if t.number == number)

    def complete_values(self) -> dict[int, list[float]]:
        return {t.number: t.values for t in self.trials() if t.state == TrialState.COMPLETE}

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def runs(self, role: str | None = None, status: str | None = None) -> list:
        """Runs of the sweep's experiment, and of the cache's for role trained-model."""
        experiment = self.cache_experiment if role == "trained-model" else self.experiment
        return study_runs(self.client(), experiment, self.study_name, role, status)

    @property
    def cache_experiment(self) -> str:
        return next((a.split("=", 1)[1] for a in self.args if a.startswith("cache.experiment=")), "ecosplit-cache")

    def trial_runs(self, number: int) -> list:
        return [r for r in self.runs("trial") if r.data.tags.get("optuna.trial_number") == str(number)]

    def trial_run(self, number: int):
        (run,) = self.trial_runs(number)
        return run

    def wait_for_trial_run(self, number: int, timeout: float = 30):
        """The trial's MLflow run, once it exists: a background thread creates it while the
        trial goes on, so a pause in the trial can come first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.trial_runs(number)
            if runs:
                return runs[0]
            time.sleep(0.1)
        raise AssertionError(f"trial {number}'s MLflow run was not created within {timeout} s")

    def parent(self):
        parents = self.runs("sweep")
        assert len(parents) == 1, [(p.info.run_id, p.info.status) for p in parents]
        return parents[0]


def check_finished(sweep: Sweep, before: dict[int, list[float]] | None = None) -> list:
    """The study is done and both stores say so consistently (see the module docstring)."""
    trials = sweep.trials()
    states = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == sweep.n_trials, states
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], states
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), states
    assert not sweep.runs(status="RUNNING"), [(r.info.run_name, r.info.status) for r in sweep.runs()]
    assert not sweep.runs("trained-model", "RUNNING")
    parent = sweep.parent()
    assert parent.info.status == "FINISHED", (parent.info.status, parent.data.tags.get("failure_reason"))
    trial_runs = sweep.runs("trial")
    per_number = collections.Counter(r.data.tags["optuna.trial_number"] for r in trial_runs)
    assert all(n == 1 for n in per_number.values()), per_number  # no duplicate child runs
    finished = sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs
                      if r.info.status == "FINISHED" and r.data.tags["optuna.state"] == "COMPLETE")
    assert finished == sorted(t.number for t in trials if t.state == TrialState.COMPLETE), (finished, states)
    for r in trial_runs:  # every ended trial run says how Optuna saw its trial
        assert r.data.tags["optuna.state"] in ("COMPLETE", "PRUNED", "FAIL"), r.data.tags
    assert {r.data.tags.get("mlflow.parentRunId") for r in trial_runs} == {parent.info.run_id}
    for r in trial_runs:  # a trial run that did not finish says why
        if r.info.status != "FINISHED":
            assert r.data.tags.get("failure_reason"), (r.info.run_name, r.info.status)
    if before is not None:  # nothing completed before the fault was lost or changed
        after = sweep.complete_values()
        assert before and all(after.get(n) == v for n, v in before.items()), (before, after)
    return trials


def assert_one_error_line(run: Run, *needles: str) -> str:
    lines = run.error_lines()
    assert len(lines) == 1, f"expected one 'error:' line on stderr, got {lines}\n{run.tail()}"
    assert "Traceback" not in run.stderr, run.tail()
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def retry_of(sweep: Sweep, number: int) -> optuna.trial.FrozenTrial:
    (retry,) = [t for t in sweep.trials() if number in t.system_attrs.get("retry_history", [])]
    return retry


def this_host() -> str:
    return os.environ.get("ECOSPLIT_OPTUNA_HOST") or socket.gethostname()


# --------------------------------------------------------------------------------------------
# the rows


@pytest.mark.parametrize("fault, reason", [
    ("raise", "InjectedFault: injected fault in trial 1"),  # the task raises
    ("nan", "non-finite objective"),  # eq. (8) comes out NaN
])
def test_a_failing_trial_is_fail_with_its_reason_and_the_rerun_completes(fault, reason, tmp_path, fake_mnist,
                                                                           mlflow_db_template):
    sweep = Sweep(tmp_path, fake_mnist, 2, mlflow_db_template=mlflow_db_template)
    first = sweep.run(fault=fault)
    # one failure of a 2-trial budget is more than max_failure_rate=0.2 allows: the sweep stops
    assert first.proc.returncode == 1, first.tail()
    assert_one_error_line(first, "sweep aborted", reason)
    failed = sweep.trial(1)
    assert failed.state == TrialState.FAIL and failed.system_attrs[FAIL_KIND] == "task"
    assert reason in failed.user_attrs["fail_reason"]
    run = sweep.trial_run(1)
    assert run.info.status == "FAILED" and reason.split(": ")[-1] in run.data.tags["failure_reason"]
    assert sweep.parent().info.status == "FAILED"  # on_abort
    assert not sweep.runs(status="RUNNING")
    before = sweep.complete_values()

    again = sweep.run()  # the same command, the bug fixed
    assert again.proc.returncode == 0, again.tail()
    check_finished(sweep, before)


def test_bad_data_root_stops_with_one_line_and_exit_2_then_the_right_root_completes(tmp_path, fake_mnist, mlflow_db_template):
    missing = tmp_path / "no-mnist-here"
    bad = Sweep(tmp_path, missing, 2, mlflow_db_template=mlflow_db_template, register=True)
    first = bad.run()
    assert first.proc.returncode == 2, first.tail()
    assert_one_error_line(first, str(missing), "data.root")
    (t0,) = bad.trials()  # stopped at the first trial
    assert t0.state == TrialState.FAIL and t0.system_attrs[FAIL_KIND] == "config"
    assert str(missing) in t0.user_attrs["fail_reason"]
    assert not bad.runs(status="RUNNING")
    assert bad.parent().info.status == "FAILED"  # on_abort, with the reason
    assert "data.root" in bad.parent().data.tags.get("failure_reason", "")

    good = Sweep(tmp_path, fake_mnist, 2, mlflow_db_template=mlflow_db_template, register=True)
    again = good.run()
    assert again.proc.returncode == 0, again.tail()
    trials = check_finished(good)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2  # the mistake took no slot
    version = good.client().get_model_version_by_alias("ecosplit-smoke", "champion")
    assert version.run_id in {r.info.run_id for r in good.runs("trial", "FINISHED")}


@pytest.mark.parametrize("sig,status,line", [(signal.SIGINT, 130, "interrupted:"),
                                             # kill, timeout, a batch scheduler, docker stop: as Ctrl-C
                                             (signal.SIGTERM, 143, "terminated (SIGTERM):")])
def test_sigint_fails_and_requeues_the_running_trial_and_the_rerun_completes(sig, status, line, tmp_path, fake_mnist,
                                                                            mlflow_db_template):
    sweep = Sweep(tmp_path, fake_mnist, 2, mlflow_db_template=mlflow_db_template)
    first = sweep.start(fault="pause")
    paused = first.wait_paused()
    assert paused["trial"] == 1 and paused["pid"] == first.pid  # the job runs in the sweeper process
    first.proc.send_signal(sig)
    assert first.wait(60) == status, first.tail()
    last = [line for line in first.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(line) and not first.error_lines(), first.tail()
    interrupted = sweep.trial(1)
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"] == "interrupted"
    assert interrupted.system_attrs[FAIL_KIND] == "interrupted"
    waiting = [t for t in sweep.trials() if t.state == TrialState.WAITING]
    assert [t.params for t in waiting] == [interrupted.params]  # re-queued with the same params
    assert sweep.trial_run(1).info.status == "KILLED"
    assert sweep.parent().info.status == "KILLED"  # on_abort
    assert not sweep.runs(status="RUNNING")
    if sig == signal.SIGTERM:
        return  # the re-run is the same as after a Ctrl-C
    before = sweep.complete_values()

    again = sweep.run()
    assert again.proc.returncode == 0, again.tail()
    check_finished(sweep, before)
    retry = retry_of(sweep, 1)
    assert retry.state == TrialState.COMPLETE and retry.params == interrupted.params


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def test_sigkill_with_default_settings_the_rerun_frees_the_trial_at_once(backend, request, tmp_path, fake_mnist, mlflow_db_template):
    if backend == "sqlite":
        sweep = Sweep(tmp_path, fake_mnist, 2, mlflow_db_template=mlflow_db_template)
    else:
        postgres, mlflow_server = request.getfixturevalue("postgres"), request.getfixturevalue("mlflow_server")
        sweep = Sweep(tmp_path, fake_mnist, 2, postgres=postgres, tracking_uri=mlflow_server.uri)
    first = sweep.start(fault="pause")  # default heartbeat settings: interval 10 s, grace 30 s
    assert first.wait_paused()["pid"] == first.pid
    sweep.wait_for_trial_run(1)  # killed inside its run, as the test means
    os.kill(first.pid, signal.SIGKILL)  # OOM killer, closed laptop, pre-empted node
    assert first.wait(30) == -signal.SIGKILL
    killed = sweep.trial(1)
    assert killed.state == TrialState.RUNNING  # nobody told Optuna
    owner = killed.system_attrs[OWNER]
    assert owner["pid"] == first.pid and owner["host"] == this_host(), owner  # the sweeper, not pytest
    assert sweep.trial_run(1).info.status == "RUNNING"  # nor MLflow
    before = sweep.complete_values()

    again = sweep.run()  # the same command
    assert again.proc.returncode == 0, again.tail()
    killed = sweep.trial(1)
    assert killed.state == TrialState.FAIL and killed.system_attrs[FAIL_KIND] == "dead"
    # freed by the same-host owner check (the PID is gone), not after the 30 s heartbeat grace
    expected = f"worker died: its owner process (PID {first.pid} on {this_host()}) is gone"
    assert killed.user_attrs["fail_reason"] == expected, killed.user_attrs
    retry = retry_of(sweep, 1)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    run = sweep.trial_run(1)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == expected
    check_finished(sweep, before)


def test_postgres_restarted_mid_sweep_is_survived(tmp_path, fake_mnist, postgres, mlflow_db_template):
    """The Optuna database restarts while a trial runs; the trial ends while it is down. The
    sweeper retries (and reconnects: the server dropped every pooled connection) or fails with
    one clear line; either way nothing is lost and the re-run completes."""
    sweep = Sweep(tmp_path, fake_mnist, 2, postgres=postgres, mlflow_db_template=mlflow_db_template)
    first = sweep.start(fault="pause")
    first.wait_paused()
    before = sweep.complete_values()
    postgres.shutdown()
    try:
        first.release()  # the trial ends and is told while the database is down
        saw_outage = first.wait_for_output("storage unreachable", timeout=60)
    finally:
        postgres.start_again()
    status = first.wait()
    assert saw_outage, first.tail()
    if status != 0:  # failing is allowed, but clearly
        assert status == 1, first.tail()
        assert_one_error_line(first, "unreachable")
    assert not [t for t in sweep.trials() if t.state == TrialState.RUNNING]

    again = sweep.run()
    assert again.proc.returncode == 0, again.tail()
    check_finished(sweep, before)
    if status == 0:  # the retry carried the trial's result through the outage
        assert sweep.trial(1).state == TrialState.COMPLETE


def test_mlflow_server_restarted_mid_sweep_is_survived(tmp_path, fake_mnist, postgres, mlflow_server):
    sweep = Sweep(tmp_path, fake_mnist, 2, postgres=postgres, tracking_uri=mlflow_server.uri)
    first = sweep.start(fault="pause")
    first.wait_paused()
    before = sweep.complete_values()
    mlflow_server.shutdown()
    try:
        first.release()  # the trial logs its results while the server is down
        saw_outage = first.wait_for_output("Retrying", timeout=60)
    finally:
        mlflow_server.start_again()
    status = first.wait()
    assert saw_outage, first.tail()
    assert status == 0, first.tail()
    assert sweep.trial(1).state == TrialState.COMPLETE
    assert "objective" in sweep.trial_run(1).data.metrics  # logged across the restart

    again = sweep.run()
    assert again.proc.returncode == 0, again.tail()
    check_finished(sweep, before)


def test_multi_objective_sweep_with_a_failing_trial_completes_on_rerun(tmp_path, fake_mnist, mlflow_db_template):
    sweep = Sweep(tmp_path, fake_mnist, 2, "objective=multi", mlflow_db_template=mlflow_db_template)
    first = sweep.run(fault="raise")
    assert first.proc.returncode == 1, first.tail()
    assert_one_error_line(first, "sweep aborted")
    assert sweep.trial(0).state == TrialState.COMPLETE  # trained without trial.report: no crash
    before = sweep.complete_values()

    again = sweep.run()
    assert again.proc.returncode == 0, again.tail()
    trials = check_finished(sweep, before)
    assert [d.name for d in sweep.study().directions] == ["MINIMIZE", "MINIMIZE"]
    assert all(len(t.values) == 2 for t in trials if t.state == TrialState.COMPLETE)
    parent = sweep.parent()
    assert parent.data.params["objective.mode"] == "multi"
    assert {"pareto.csv", "pareto.png"} <= {a.path for a in sweep.client().list_artifacts(parent.info.run_id)}
