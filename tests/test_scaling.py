"""Several `sweep.py -m` workers on one Optuna study in PostgreSQL and one MLflow tracking server.

Every worker is an independent process (as on separate machines): its own working directory,
sweep dir and local cache dir, a different sampler seed; they share only the storage URL, the
study name and the tracking URI. Smoke-sized trials on the synthetic MNIST (or $MNIST_ROOT).
"""
from __future__ import annotations

import csv
import io
import os
import signal
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

# tests using the postgres / mlflow_server fixtures are marked `services` by conftest.py

HEARTBEAT = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3")
FAIL_KIND = "ecosplit_optuna:fail_kind"  # the sweeper's trial system attributes
OWNER = "ecosplit_optuna:owner"
# fixed (not searched): one training config for all trials, the first of the sweep's train.path
# (trained from scratch: one model)
FIXED_MU = "search.one_minus_mu=3.0e-6"


class Sweep:
    """One study + one MLflow experiment; starts and inspects its workers."""

    def __init__(self, base: Path, postgres, tracking_uri: str, data: Path, n_trials: int, *extra: str):
        tag = uuid.uuid4().hex[:8]
        self.base, self.study_name, self.experiment = base, f"scale-{tag}", f"scaling-{tag}"
        self.cache_experiment = f"scaling-cache-{tag}"  # models shared within this sweep only
        self.storage = postgres.url("optuna")
        self.tracking_uri = tracking_uri
        self.n_trials = n_trials
        self.model_name = f"scaling-{tag}"
        self.common = [
            "experiment=smoke", f"data.root={data}", "data.download=false",
            f"hydra.sweeper.storage={self.storage}", f"hydra.sweeper.study_name={self.study_name}",
            f"hydra.sweeper.n_trials={n_trials}", f"tracking.uri={tracking_uri}",
            "tracking.artifact_location=null",  # through the server, as workers on other machines need it
            f"tracking.experiment={self.experiment}", f"cache.experiment={self.cache_experiment}",
            f"selection.registered_model={self.model_name}",
            "train.num_threads=1", *extra,  # several workers share 2 cores
        ]
        self.logs: list[Path] = []

    def start(self, i: int, *extra: str) -> subprocess.Popen:
        work = self.base / f"w{i}"
        work.mkdir(exist_ok=True)
        args = [sys.executable, str(REPO / "sweep.py"), "-m", *self.common, f"hydra.sweeper.sampler.seed={i}",
                f"cache.dir={work / 'cache'}", f"hydra.sweep.dir={work / 'multirun'}", *extra]
        env = {**os.environ, "PYTHONPATH": pythonpath(), "MLFLOW_DISABLE_TELEMETRY": "true"}
        log = work / f"console-{len(self.logs)}.txt"  # stdout + stderr of this start
        self.logs.append(log)
        out = open(log, "w")
        # SIGINT must raise KeyboardInterrupt even if this process was started with it ignored
        return subprocess.Popen(args, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def wait(self, procs, timeout=300) -> None:
        for p in procs:
            p.wait(timeout=timeout)
        for p, log in zip(procs, self.logs[-len(procs):]):
            assert p.returncode == 0, log.read_text()[-4000:]

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def experiment_id(self) -> str | None:
        exp = self.client().get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp else None

    def runs(self, role: str | None = None, status: str | None = None):
        return study_runs(self.client(), self.experiment, self.study_name, role, status)

    def cache_runs(self, status: str | None = None):
        return study_runs(self.client(), self.cache_experiment, self.study_name, "trained-model", status)

    def wait_for_running_trial(self, worker: int, after: int = 0, timeout: float = 180):
        """The first trial run of worker i (by cache dir) that is RUNNING and has a trial number
        >= after; polled every 0.1 s."""
        cache_dir = str(self.base / f"w{worker}" / "cache")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs("trial", "RUNNING"):
                number = int(run.data.tags.get("optuna.trial_number", -1))
                if run.data.params.get("cache.dir") == cache_dir and number >= after:
                    return run
            time.sleep(0.1)
        log = self.logs[-1].read_text()[-3000:]
        raise AssertionError(f"worker {worker} never had a RUNNING trial run; log:\n{log}")

    def wait_for_claim(self, trial_id: int, timeout: float = 60):
        """The RUNNING cache claim (trained-model run) of the trial with this storage id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.cache_runs("RUNNING"):
                if run.data.tags.get("optuna.trial_id") == str(trial_id):
                    return run
            time.sleep(0.1)
        raise AssertionError(f"trial id {trial_id} never claimed a training")


def pythonpath() -> str:
    """The repository, after any PYTHONPATH given to pytest (e.g. a patched copy of a module)."""
    return os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))


def data_root(fake_mnist) -> Path:
    """The real offline MNIST when $MNIST_ROOT provides it, else the synthetic one."""
    root = os.environ.get("MNIST_ROOT")
    return Path(root) if root and (Path(root) / "MNIST" / "raw").is_dir() else fake_mnist


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def check_study_and_runs(sweep: Sweep) -> None:
    """n_trials COMPLETE trials, nothing RUNNING or WAITING; one FINISHED child run per COMPLETE
    trial, all under the one parent run; no run left RUNNING."""
    study = sweep.study()
    trials = study.get_trials(deepcopy=False)
    done = completed(study)
    assert len(done) == sweep.n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # no configuration ran twice (a restarted seeded sampler must not replay its proposals)
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done), [t.params for t in done]
    parents = sweep.runs("sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", parents
    parent_id = parents[0].info.run_id
    finished = [r for r in sweep.runs("trial", "FINISHED") if r.data.tags["optuna.state"] == "COMPLETE"]
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in finished)
    assert numbers == sorted(t.number for t in done)  # one each, none twice, none for a FAIL trial
    assert {r.data.tags["mlflow.parentRunId"] for r in sweep.runs("trial")} == {parent_id}
    assert not sweep.runs(status="RUNNING") and not sweep.cache_runs("RUNNING")


def pareto_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def three_workers(tmp_path_factory, postgres, mlflow_server, fake_mnist):
    """3 workers started together on a fresh study of 6 trials, all trials sharing one training
    config (fixed mu); the tracking URI carries a password as well as the storage URL."""
    secret = "trk-" + uuid.uuid4().hex[:12]
    uri = mlflow_server.uri.replace("http://", f"http://tracker:{secret}@")
    sweep = Sweep(tmp_path_factory.mktemp("three"), postgres, uri, data_root(fake_mnist), 6, *HEARTBEAT, FIXED_MU)
    started = time.monotonic()
    procs = [sweep.start(i) for i in range(3)]
    sweep.wait(procs)
    sweep.elapsed = time.monotonic() - started
    sweep.secrets = (postgres.password, secret)
    return sweep


def test_workers_complete_exactly_n_trials_under_one_parent_with_one_front(three_workers):
    sweep = three_workers
    check_study_and_runs(sweep)
    client = sweep.client()
    parent = sweep.runs("sweep")[0]
    assert parent.data.metrics["trials_complete"] == sweep.n_trials
    rows = pareto_rows(Path(client.download_artifacts(parent.info.run_id, "pareto.csv")).read_text())
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in completed(sweep.study()))
    # with a heartbeat each worker waits for the others' trials: every front covers the study
    for i in range(3):
        local = next((sweep.base / f"w{i}" / "multirun").glob("pareto.csv"))
        assert len(pareto_rows(local.read_text())) == sweep.n_trials
    # the budget was shared: the study is the n_trials COMPLETE trials plus, if two workers asked
    # at the same moment, surplus asks that never ran (test_concurrent_asks_... makes that happen)
    trials = sweep.study().get_trials(deepcopy=False)
    surplus = [t for t in trials if t.state == TrialState.FAIL and t.system_attrs.get(FAIL_KIND) == "surplus"]
    assert len(trials) == sweep.n_trials + len(surplus), [(t.number, t.state.name, t.user_attrs) for t in trials]
    ran = {r.data.tags["optuna.trial_number"] for r in sweep.runs("trial")}
    assert not ran & {str(t.number) for t in surplus}


def test_a_model_trained_by_one_worker_is_reused_by_the_others_through_mlflow(three_workers):
    sweep = three_workers
    trials = sorted(sweep.runs("trial", "FINISHED"), key=lambda r: int(r.data.tags["optuna.trial_number"]))
    assert len({r.data.tags["ecosplit.cache_key"] for r in trials}) == 1
    by_worker: dict[str, list[str]] = {}
    for r in trials:  # cache.dir (param) tells the workers apart
        by_worker.setdefault(r.data.params["cache.dir"], []).append(r.data.tags["ecosplit.dense_source"])
    sources = [s for ss in by_worker.values() for s in ss]
    assert sources.count("trained") == 1, by_worker
    assert sources.count("mlflow") == len(by_worker) - 1 >= 1, by_worker
    for ss in by_worker.values():  # after its first trial a worker has the model locally
        assert ss[0] in ("trained", "mlflow") and set(ss[1:]) <= {"local"}, by_worker
    assert len(sweep.cache_runs("FINISHED")) == 1
    assert not sweep.runs("trained-model")  # in the cache's experiment, not the sweep's


def _wait_for_lock_waiters(postgres, n: int, procs, timeout: float = 180) -> None:
    """Until n sessions on the `optuna` database wait for a lock (the workers, inside ask())."""
    deadline = time.monotonic() + timeout
    with postgres.connect("postgres", autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'optuna' "
                                   "AND wait_event_type = 'Lock'").fetchone()[0]
            if waiting >= n:
                return
            assert all(p.poll() is None for p in procs), "a worker ended before asking"
            time.sleep(0.1)
    raise AssertionError(f"{n} workers never waited in ask()")


def test_concurrent_asks_beyond_n_trials_are_failed_as_surplus_and_never_run(tmp_path, postgres, mlflow_server, fake_mnist):
    """Two workers on a study of n_trials=1 both find it empty and ask at the same moment (made
    certain: trial creation is held back by a table lock until both wait in ask()). The later
    trial is surplus: told FAIL with its reason, never run, and the study ends with 1 trial."""
    sweep = Sweep(tmp_path, postgres, mlflow_server.uri, data_root(fake_mnist), 1, FIXED_MU)
    optuna.storages.RDBStorage(sweep.storage).engine.dispose()  # Optuna's tables exist
    with postgres.connect("optuna") as lock:
        # reads go on (the workers sync and count 0 trials); no trial can be created
        lock.execute("LOCK TABLE trials IN SHARE MODE")
        first = sweep.start(0)
        _wait_for_lock_waiters(postgres, 1, [first])  # the first waits in ask() (the study exists)
        second = sweep.start(1)
        _wait_for_lock_waiters(postgres, 2, [first, second])
        lock.commit()  # both asks go through: trials 0 and 1 of a 1-trial study
    sweep.wait([first, second])

    trials = sweep.study().get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.FAIL)], trials
    surplus = trials[1]
    assert surplus.system_attrs[FAIL_KIND] == "surplus", surplus.system_attrs
    assert surplus.user_attrs["fail_reason"] == "surplus: the study already had n_trials=1"
    assert [r.data.tags["optuna.trial_number"] for r in sweep.runs("trial")] == ["0"]  # never ran
    check_study_and_runs(sweep)
    logs = [log.read_text() for log in sweep.logs]
    assert sum("trial 1 is surplus (the study reached n_trials=1)" in text for text in logs) == 1, logs


@pytest.mark.parametrize("text, masked", [
    ("postgresql://ecosplit:pw-1@127.0.0.1:5432/optuna", "postgresql://ecosplit:***@127.0.0.1:5432/optuna"),
    ("tracking.uri=http\\://u\\:pw-1@127.0.0.1\\:5000", "tracking.uri=http\\://u\\:***@127.0.0.1\\:5000"),
    ("sqlite:////tmp/optuna.db and http://127.0.0.1:5000", "sqlite:////tmp/optuna.db and http://127.0.0.1:5000"),
])
def test_masking_covers_hydra_escaped_overrides(text, masked):
    from hydra_plugins.ecosplit_optuna_sweeper.masking import mask_secrets as plugin_mask
    from pipeline.tracking import mask_secrets

    assert mask_secrets(text) == plugin_mask(text) == masked


def _strings_of_run(client: MlflowClient, run, dst: Path) -> list[str]:
    out = [run.info.run_name or "", run.info.artifact_uri or ""]
    out += [f"{k}={v}" for k, v in run.data.params.items()]
    out += [f"{k}={v}" for k, v in run.data.tags.items()]
    out += list(run.data.metrics)
    out += [f"{d.dataset.name} {d.dataset.source} {d.dataset.profile}" for d in run.inputs.dataset_inputs]
    folder = Path(client.download_artifacts(run.info.run_id, "", str(dst / run.info.run_id)))
    out += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
    return out


def test_no_password_is_recorded_anywhere(three_workers, tmp_path):
    sweep = three_workers
    client = sweep.client()
    exp_id = sweep.experiment_id()
    texts: list[str] = []
    cache_id = client.get_experiment_by_name(sweep.cache_experiment).experiment_id
    runs = client.search_runs([exp_id, cache_id], max_results=1000)
    assert len(runs) >= sweep.n_trials + 2  # trials, the parent, the trained model
    for run in runs:
        texts += _strings_of_run(client, run, tmp_path)
    for exp in (client.get_experiment(exp_id), client.get_experiment(cache_id)):
        texts += [exp.name, exp.artifact_location, *[f"{k}={v}" for k, v in exp.tags.items()]]
    models = client.search_logged_models([exp_id])
    assert len(models) >= sweep.n_trials  # every trial's pruned model
    texts += [f"{m.name} {m.artifact_location} {m.params} {m.tags}" for m in models]
    versions = client.search_model_versions(f"name = '{sweep.model_name}'")
    assert len(versions) == 1  # the workers ending together registered it once
    for mv in versions:
        texts += [mv.source or "", str(mv.tags), mv.description or ""]
    study = sweep.study()
    texts += [str(study.user_attrs), str(study._storage.get_study_system_attrs(study._study_id))]
    texts += [f"{t.params} {t.user_attrs} {t.system_attrs}" for t in study.get_trials(deepcopy=False)]
    files = list(sweep.logs)  # stdout + stderr of every worker
    for i in range(3):
        multirun = sweep.base / f"w{i}" / "multirun"
        files += [p for p in multirun.rglob("*") if p.is_file() and ".hydra" not in p.parts]
    assert any(p.suffix == ".log" for p in files) and any(p.name == "pareto.csv" for p in files)
    texts += [p.read_bytes().decode("latin-1") for p in files]
    for secret in sweep.secrets:
        leaks = [t[max(0, t.find(secret) - 200):t.find(secret) + 50] for t in texts if secret in t]
        assert not leaks, leaks[:3]
    # masked, not merely absent: the recorded config names the URLs with *** for the password
    parent = sweep.runs("sweep")[0]
    assert parent.data.tags["optuna.storage"].startswith("postgresql://ecosplit:***@127.0.0.1:")
    a_trial = sweep.runs("trial")[0]
    assert a_trial.data.params["tracking.uri"].startswith("http://tracker:***@127.0.0.1:")
    # Hydra's own .hydra/hydra.yaml keeps the command line as typed (documented, not recorded)


def test_a_killed_worker_trial_is_failed_retried_and_its_run_ends_killed(tmp_path, postgres, mlflow_server, fake_mnist):
    # 5 epochs: the victim is killed while training, holding the cache claim for its config
    # (train.path=null: the victim's trial trains its own model, not a start another worker may hold)
    sweep = Sweep(tmp_path, postgres, mlflow_server.uri, data_root(fake_mnist), 4, *HEARTBEAT, "train.epochs=5",
                  "train.path=null")
    victim, other = sweep.start(0), sweep.start(1)
    run = sweep.wait_for_running_trial(0)
    killed_id = int(run.data.tags["optuna.trial_id"])
    claim = sweep.wait_for_claim(killed_id)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    before = {t.number: t.values for t in completed(sweep.study())}
    restarted = sweep.start(0)  # the same command again on the "machine" that died
    sweep.wait([other, restarted])

    check_study_and_runs(sweep)
    study = sweep.study()
    killed = next(t for t in study.get_trials(deepcopy=False) if t._trial_id == killed_id)
    # freed by whichever worker looked first: the owner (the killed sweeper process) is gone
    assert killed.state == TrialState.FAIL and killed.system_attrs[FAIL_KIND] == "dead", killed
    assert killed.user_attrs["fail_reason"].startswith(f"worker died: its owner process (PID {victim.pid} "), killed
    retries = [t for t in study.get_trials(deepcopy=False) if killed.number in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params
    assert sweep.client().get_run(run.info.run_id).info.status in ("KILLED", "FAILED")
    assert sweep.client().get_run(claim.info.run_id).info.status == "KILLED"  # the retry took over
    after = {t.number: t.values for t in completed(study)}
    assert all(after[n] == v for n, v in before.items())  # nothing completed was lost


def test_ctrl_c_then_the_same_command_continues_the_study(tmp_path, postgres, mlflow_server, fake_mnist):
    sweep = Sweep(tmp_path, postgres, mlflow_server.uri, data_root(fake_mnist), 3)
    proc = sweep.start(0)
    run = sweep.wait_for_running_trial(0, after=1)  # trial 0 done, trial >= 1 running
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, sweep.logs[-1].read_text()[-3000:]
    study = sweep.study()
    trial_id = int(run.data.tags["optuna.trial_id"])
    interrupted = next(t for t in study.get_trials(deepcopy=False) if t._trial_id == trial_id)
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"] == "interrupted"
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [interrupted.params]  # re-queued with the same params
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert sweep.client().get_run(run.info.run_id).info.status == "KILLED"
    before = {t.number: t.values for t in completed(study)}
    assert before

    sweep.wait([sweep.start(0)])  # the same command again
    check_study_and_runs(sweep)
    study = sweep.study()
    after = {t.number: t.values for t in completed(study)}
    assert all(after[n] == v for n, v in before.items())
    rerun = next(t for t in completed(study)
                 if t.number not in before and interrupted.number in t.system_attrs.get("retry_history", []))
    assert rerun.params == interrupted.params and "fail_reason" not in rerun.user_attrs
    # both starts print the one parent run's page once, and none of MLflow's per-run lines
    parent = sweep.runs("sweep")[0].info
    link = f"MLflow: the sweep's run, every trial nested under it: {mlflow_server.uri}/#/experiments/{parent.experiment_id}/runs/{parent.run_id}\n"
    for log in sweep.logs:
        text = log.read_text()
        assert text.count(link) == 1 and "View run" not in text, text[-3000:]


def test_launcher_subprocesses_reach_the_trial_without_the_password_in_overrides(tmp_path, postgres):
    """joblib (loky) workers rebuild the live trial from the storage: the job's overrides carry the
    URL masked, the job reads the real one from its own hydra.sweeper.storage."""
    app = REPO / "tests" / "sweeper_app" / "my_app.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOSPLIT_OPTUNA_")}
    env["PYTHONPATH"] = pythonpath()
    name = f"joblib-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, str(app), "--multirun", f"hydra.sweep.dir={tmp_path / 'multirun'}",
           f"hydra.sweeper.storage={postgres.url('optuna')}", f"hydra.sweeper.study_name={name}",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
           "report_steps=1", "hydra/sweeper/ecosplit_pruner=median"]  # the app asserts current_trial() is not None
    sweeper = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = sweeper.communicate(timeout=180)
    assert sweeper.returncode == 0, out + err
    assert postgres.password not in out + err
    assert "ECOSPLIT_OPTUNA_STORAGE='postgresql://ecosplit:***@" in out + err
    trials = optuna.load_study(study_name=name, storage=postgres.url("optuna")).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        # the sweeper process owns the trial; the job ran in a joblib worker process and reached
        # it there (the app asserts current_trial() is not None and returns its number)
        assert t.system_attrs[OWNER]["pid"] == sweeper.pid, t.system_attrs
        assert t.user_attrs["pid"] != sweeper.pid and t.user_attrs["trial_seen"] == t.number, t.user_attrs
