"""pipeline.tracking's batching of params, metrics and tags, and its background calls (no store:
MlflowClient is replaced by a recorder)."""
import threading
import time

import pytest

from pipeline import tracking


class Recorder:
    """Stands in for MlflowClient: records every log_batch call."""
    calls: list = []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.calls.append((run_id, {m.key: (m.value, m.step, m.model_id) for m in metrics},
                           {p.key: p.value for p in params}, {t.key: t.value for t in tags}))


@pytest.fixture
def calls(monkeypatch):
    Recorder.calls = []
    monkeypatch.setattr(tracking, "MlflowClient", Recorder)
    return Recorder.calls


def test_a_run_log_sends_params_metrics_and_tags_in_one_call_with_secrets_masked(calls):
    batch = tracking.RunLog("r1")
    batch.params({"tracking.uri": "http://u:pw@host:5000", "train.mu": 0.99997})
    batch.tags({"optuna.state": "COMPLETE"})
    batch.metrics({"val_accuracy": 0.5, "objective": 1}, step=3, model_id="m-1")
    batch.send()
    batch.send()  # nothing queued: no call
    assert calls == [("r1", {"val_accuracy": (0.5, 3, "m-1"), "objective": (1.0, 3, "m-1")},
                      {"tracking.uri": "http://u:***@host:5000", "train.mu": "0.99997"}, {"optuna.state": "COMPLETE"})]
    assert batch.has_tag("optuna.state") and not batch.has_tag("failure_reason")  # sent tags are remembered


def test_take_splits_off_what_one_call_takes_in_the_order_queued(calls):
    batch = tracking.RunLog("r1")
    batch.tags({"a": 1, "b": 2})
    batch.params({f"p{i:03d}": i for i in range(130)})
    first = batch.take()
    first.send()
    batch.send()
    (_, _, params1, tags1), (_, _, params2, tags2) = calls
    # 100 params + tags a call: the 2 tags and the first 98 params, then the other 32 params
    assert tags1 == {"a": "1", "b": "2"} and list(params1) == [f"p{i:03d}" for i in range(98)]
    assert tags2 == {} and list(params2) == [f"p{i:03d}" for i in range(98, 130)]


def test_flush_sends_one_call_or_everything_queued(calls):
    """A trial's settings (179 params) take two calls: both go in the background as it starts, so
    its final batch on the trial's path holds only its metrics and tags."""
    batch = tracking.RunLog("r1")
    batch.params({f"p{i:03d}": i for i in range(230)})
    batch.flush()
    batch.join()
    assert [len(c[2]) for c in calls] == [100]  # one call's worth
    batch.flush(everything=True)
    batch.join()
    assert [len(c[2]) for c in calls] == [100, 100, 30]
    batch.send()  # nothing left for the final batch
    assert len(calls) == 3


def test_flush_sends_in_the_background_at_most_every_older_than_s(calls, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: now[0])
    batch = tracking.RunLog("r1")
    batch.metrics({"loss": 1.0}, step=1)
    batch.flush(older_than_s=5)
    batch.join()
    assert calls == []  # the last flush (creation) was 0 s ago
    now[0] += 5
    batch.flush(older_than_s=5)
    batch.metrics({"loss": 0.5}, step=2)
    batch.flush(older_than_s=5)  # 0 s after the last flush: waits
    batch.join()
    assert [c[1] for c in calls] == [{"loss": (1.0, 1, None)}]


def test_background_calls_run_in_order_off_the_caller_thread_and_join_raises_the_first_error():
    batch = tracking.RunLog("r1")
    seen = []
    first = batch.in_background(lambda: seen.append(("a", threading.current_thread().name)) or "a")
    batch.in_background(lambda: seen.append(("b", threading.current_thread().name)))
    batch.join()
    assert first.result() == "a" and [s[0] for s in seen] == ["a", "b"]
    assert all(name.startswith("ecosplit-mlflow") for _, name in seen)

    def fail():
        raise RuntimeError("store gone")
    batch.in_background(fail)
    batch.in_background(lambda: seen.append(("c", "")))
    with pytest.raises(RuntimeError, match="store gone"):
        batch.join()
    assert seen[-1][0] == "c"  # the calls after a failing one still ran


class RunRecorder(Recorder):
    """Recorder that also creates and ends runs (run ids r1, r2, ...), noting the thread of each call."""

    def create_run(self, experiment_id, tags=None, run_name=None):
        self.calls.append(("create", experiment_id, dict(tags), run_name, threading.current_thread().name))
        run_id = f"r{sum(c[0] == 'create' for c in self.calls)}"
        return type("Run", (), {"info": type("Info", (), {"run_id": run_id, "artifact_uri": f"mlflow-artifacts:/7/{run_id}"})})

    def set_terminated(self, run_id, status):
        self.calls.append(("end", run_id, status))


@pytest.fixture
def run_calls(monkeypatch):
    Recorder.calls = []
    monkeypatch.setattr(tracking, "MlflowClient", RunRecorder)
    monkeypatch.setattr(tracking, "_CONTEXT_TAGS", {"mlflow.user": "me", "mlflow.source.name": "sweep.py"})
    return Recorder.calls


def test_a_background_run_is_created_off_the_caller_thread_with_start_runs_tags_then_ended(run_calls):
    batch = tracking.RunLog()
    with tracking.background_run("7", "trial-3", {"ecosplit.role": "trial"}, "p0", batch=batch) as same:
        assert same is batch
        batch.params({"train.mu": 0.5})
        batch.flush()  # queued before the run exists: sent to it once it does
        seen = batch.in_background(lambda: batch.run_id)
        batch.metrics({"objective": 0.25})
    (create, flushed, final, end) = run_calls
    assert create[:4] == ("create", "7", {"mlflow.user": "me", "mlflow.source.name": "sweep.py", "ecosplit.role": "trial",
                                          "mlflow.runName": "trial-3", "mlflow.parentRunId": "p0"}, "trial-3")
    assert create[4].startswith("ecosplit-mlflow")
    assert seen.result() == "r1" and flushed == ("r1", {}, {"train.mu": "0.5"}, {})
    assert final == ("r1", {"objective": (0.25, 0, None)}, {}, {}) and end == ("end", "r1", "FINISHED")


def test_a_background_run_ends_failed_with_the_reason_and_a_failed_creation_is_raised(run_calls, monkeypatch):
    with pytest.raises(ValueError, match="bad value"):
        with tracking.background_run("7", "trial-4", failed_tags={"optuna.state": "FAIL"}):
            raise ValueError("bad value")
    assert run_calls[-2:] == [("r1", {}, {}, {"failure_reason": "ValueError: bad value", "optuna.state": "FAIL"}),
                              ("end", "r1", "FAILED")]

    def store_down(*args, **kwargs):
        raise ConnectionError("store down")
    monkeypatch.setattr(RunRecorder, "create_run", store_down)
    run_calls.clear()
    with pytest.raises(ConnectionError, match="store down"):
        with tracking.background_run("7", "trial-5"):
            pass
    assert run_calls == []  # no run: nothing to tag or end


def test_a_local_artifact_folder_on_a_tracking_server_is_named_and_the_way_out_given():
    warning = tracking.server_with_local_artifacts("http://tracking-host:5055", "mlruns-smoke")
    assert "tracking.artifact_location=mlruns-smoke" in warning and "tracking.artifact_location=null" in warning
    assert tracking.server_with_local_artifacts("https://h", "/srv/mlruns") is not None
    # shared or server-chosen locations, and a local store, are fine
    assert tracking.server_with_local_artifacts("http://h:5055", None) is None
    assert tracking.server_with_local_artifacts("http://h:5055", "s3://bucket/mlruns") is None
    assert tracking.server_with_local_artifacts("http://h:5055", "mlflow-artifacts:/team") is None  # the server's
    assert tracking.server_with_local_artifacts("http://h:5055", "file:///srv/mlruns") is not None  # a local folder too
    assert tracking.server_with_local_artifacts("http://h:5055", "C:\\mlruns") is not None  # a drive letter: a path
    assert tracking.server_with_local_artifacts("sqlite:///mlflow-smoke.db", "mlruns-smoke") is None


def test_configure_warns_when_it_creates_a_server_experiment_with_local_artifacts(monkeypatch, caplog):
    created = {}

    class Client:
        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name, artifact_location=None):
            created[name] = artifact_location
            return "7"
    monkeypatch.setattr(tracking, "use", lambda uri, sqlite_wal=True: None)
    monkeypatch.setattr(tracking, "MlflowClient", Client)
    monkeypatch.setattr(tracking, "_EXPERIMENTS", {})
    with caplog.at_level("WARNING", logger="pipeline.tracking"):
        assert tracking.configure("http://tracking-host:5055", "team", "mlruns-smoke") == "7"
        assert tracking.configure("http://tracking-host:5055", "other", None) == "7"
    assert [r.getMessage() for r in caplog.records if "local folder" in r.getMessage()] == [
        tracking.server_with_local_artifacts("http://tracking-host:5055", created["team"]) + " (experiment team)"]


def journal_mode(path) -> str:
    import sqlite3
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_an_sqlite_store_runs_in_wal_mode_unless_told_not_to_and_other_files_are_left_alone(tmp_path, monkeypatch):
    from sqlalchemy import create_engine, text

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "_EXPERIMENTS", {})
    # as the sweep's Optuna storage is: another SQLite file of the same process
    other = create_engine(f"sqlite:///{tmp_path}/optuna.db")
    tracking.configure("sqlite:///mlflow.db", "wal")  # relative, as the default tracking.uri
    with tracking.run(tracking.configure("sqlite:///mlflow.db", "wal"), "r"):
        pass
    with other.connect() as conn:
        conn.execute(text("create table t (x int)"))
        conn.commit()
    tracking.configure(f"sqlite:///{tmp_path}/plain.db", "plain", sqlite_wal=False)
    with tracking.run(tracking.configure(f"sqlite:///{tmp_path}/plain.db", "plain", sqlite_wal=False), "r"):
        pass
    assert (journal_mode(tmp_path / "mlflow.db"), journal_mode(tmp_path / "optuna.db"),
            journal_mode(tmp_path / "plain.db")) == ("wal", "delete", "delete")


def test_uploads_go_where_the_runs_and_models_creation_said_without_looking_it_up(tmp_path, monkeypatch):
    """A trial's files (its own run's, its logged model's, the reuse cache claim's) go to the
    artifact location their creation returned: MlflowClient's uploads would first ask the store
    for it (get_run / get_logged_model, a request each on a tracking server)."""
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "_EXPERIMENTS", {})
    experiment_id = tracking.configure(f"sqlite:///{tmp_path}/mlflow.db", "uploads", str(tmp_path / "artifacts"))
    batch = tracking.RunLog()
    files = tmp_path / "files"
    (files / "checkpoints").mkdir(parents=True)
    (files / "checkpoints" / "pruned.pt").write_bytes(b"weights")
    (files / "layers.csv").write_text("layer\n")
    looked_up = []
    for name in ("get_run", "get_logged_model"):
        real = getattr(TrackingServiceClient, name)
        monkeypatch.setattr(TrackingServiceClient, name,
                            lambda self, id_, _real=real, _name=name: looked_up.append(_name) or _real(self, id_))
    with tracking.background_run(experiment_id, "trial-0", batch=batch):
        batch.join()  # created
        tracking.log_artifacts(batch.run_id, files, batch.artifact_uri)
        model_id = tracking.log_model(batch.run_id, experiment_id, "pruned", [files / "checkpoints" / "pruned.pt"])
    assert looked_up == []
    client = MlflowClient()
    assert sorted(f.path for f in client.list_artifacts(batch.run_id)) == ["checkpoints", "layers.csv"]
    assert [f.path for f in client.list_artifacts(batch.run_id, "checkpoints")] == ["checkpoints/pruned.pt"]
    assert [f.path for f in client.list_logged_model_artifacts(model_id)] == ["pruned.pt"]
    assert (tmp_path / "artifacts" / batch.run_id / "artifacts" / "layers.csv").is_file()


@pytest.mark.parametrize("uri,url", [
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/#/experiments/7/runs/r1"),
    # no user and password in a link printed to the console (a masked one would not open)
    ("https://me:secret@host.example/mlflow/", "https://host.example/mlflow/#/experiments/7/runs/r1"),
    ("http://[::1]:5000", "http://[::1]:5000/#/experiments/7/runs/r1"),
    ("sqlite:///mlflow.db", None),
    ("databricks", None),  # MLflow prints its own links there
])
def test_the_sweeps_run_page_is_the_servers_without_credentials(monkeypatch, uri, url):
    import mlflow

    monkeypatch.delenv("MLFLOW_WORKSPACE", raising=False)
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
    assert tracking.run_url("r1", "7") == url
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team a")  # as MLflow's own link
    assert tracking.run_url("r1", "7") == (url and url + "?workspace=team%20a")


def test_a_command_waits_for_a_tracking_server_up_to_server_wait_s_then_refuses_with_one_line():
    """A server coming up while a command starts is waited for (workers started with it); one that
    never answers is a ConfigError naming the settings once tracking.server_wait_s has passed."""
    import http.server
    import socket

    from pipeline.config import ConfigError

    with socket.socket() as s:  # a port nothing listens on yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^tracking.uri={uri}: no MLflow tracking server answered there within "
                                          r"tracking.server_wait_s=1.5 s \(ConnectionError\)"):
        tracking.check_server(uri, 1.5)
    assert 1.0 <= time.monotonic() - started < 10
    tracking.check_server(uri, None)  # null: no check

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    def serve_later():
        time.sleep(1.5)  # the server starts after the command
        server = http.server.HTTPServer(("127.0.0.1", port), Health)
        server.handle_request()
        server.server_close()

    thread = threading.Thread(target=serve_later)
    thread.start()
    tracking.check_server(uri, 30)  # answered within the wait: no error
    thread.join(timeout=10)
    assert not thread.is_alive()


def _open_together(tmp_path, uri: str) -> None:
    """Three processes that have imported MLflow open the tracking store ``uri`` at one moment."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    go = tmp_path / "go"
    code = (f"import os, pathlib, sys, time\nfrom pipeline import tracking\npathlib.Path(sys.argv[1]).touch()\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.002)\n"
            f"tracking.configure({uri!r}, 'together')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"ready-{i}")], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.01)  # every process has imported MLflow and waits for the go
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-600:] for e in errors]


def test_commands_started_together_on_a_fresh_sqlite_store_all_open_it(tmp_path):
    """MLflow creates a new SQLite store's tables in several transactions with no lock: without
    ``tracking._schema_lock`` two of three processes failed ("duplicate column name: step")."""
    _open_together(tmp_path, f"sqlite:///{tmp_path}/mlflow.db")


def test_commands_started_together_on_a_fresh_postgres_store_all_open_it(tmp_path, postgres):
    """The same on a fresh PostgreSQL database (commands pointed at the database, no tracking
    server): without ``tracking._postgres_schema_lock`` two of three failed (duplicate key in
    ``alembic_version``)."""
    import uuid

    name = f"together_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    _open_together(tmp_path, postgres.url(name))
