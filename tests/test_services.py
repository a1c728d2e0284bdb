"""Optuna and MLflow against real services: the session's PostgreSQL server and mlflow server
(fixtures `postgres` and `mlflow_server` in conftest.py, helpers in services.py)."""
from __future__ import annotations

import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.services


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_postgres_url_carries_password_and_is_postgres(postgres):
    url = postgres.url("optuna")
    assert url.startswith("postgresql://ecosplit:s3cret-") and postgres.password in url
    assert f"@127.0.0.1:{postgres.port}/optuna" in url
    with postgres.connect("optuna") as conn:
        assert conn.execute("SHOW server_version").fetchone()[0]
        assert conn.execute("SELECT current_database()").fetchone()[0] == "optuna"


def test_optuna_rdb_storage_on_postgres(postgres):
    url = postgres.url("optuna")
    name = _name("quadratic")
    study = optuna.create_study(study_name=name, storage=optuna.storages.RDBStorage(url))
    study.optimize(lambda t: (t.suggest_float("x", -10, 10) - 2) ** 2, n_trials=3)

    reloaded = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))
    trials = reloaded.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert reloaded.best_value == pytest.approx((reloaded.best_params["x"] - 2) ** 2)
    assert optuna.storages.RDBStorage(url).engine.dialect.name == "postgresql"


def test_optuna_heartbeat_fails_stale_trial_on_postgres(postgres):
    storage = optuna.storages.RDBStorage(postgres.url("optuna"), heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name=_name("heartbeat"), storage=storage)
    stale = storage.create_new_trial(study._study_id)
    storage.record_heartbeat(stale)
    time.sleep(3)  # > grace_period with no heartbeat (compared with the database's clock)
    alive = storage.create_new_trial(study._study_id)
    storage.record_heartbeat(alive)

    optuna.storages.fail_stale_trials(study)

    states = {t._trial_id: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {stale: TrialState.FAIL, alive: TrialState.RUNNING}


def test_mlflow_server_runs_metrics_and_artifacts(mlflow_server, postgres, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp_id = client.create_experiment(_name("services"))
    assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")
    parent = client.create_run(exp_id, run_name="parent")
    child = client.create_run(
        exp_id, run_name="child", tags={"mlflow.parentRunId": parent.info.run_id}
    )
    child_id = child.info.run_id
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        client.log_metric(child_id, "loss", loss, step=step)
    payload = tmp_path / "report.txt"
    payload.write_text("energy per cut\n")
    client.log_artifact(child_id, str(payload), artifact_path="reports")
    client.set_terminated(child_id)
    client.set_terminated(parent.info.run_id)

    fresh = MlflowClient(tracking_uri=mlflow_server.uri)
    got = fresh.get_run(child_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert got.data.metrics["loss"] == 0.25
    assert [m.value for m in fresh.get_metric_history(child_id, "loss")] == [0.9, 0.5, 0.25]
    assert got.info.status == "FINISHED"
    children = fresh.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [r.info.run_id for r in children] == [child_id]
    assert [a.path for a in fresh.list_artifacts(child_id, "reports")] == ["reports/report.txt"]
    local = fresh.download_artifacts(child_id, "reports/report.txt", str(tmp_path / "dl"))
    assert open(local).read() == "energy per cut\n"

    # The upload went through the server into its artifact root, the run into PostgreSQL.
    assert [p.read_text() for p in mlflow_server.artifact_root.rglob("report.txt")] == [
        "energy per cut\n"
    ]
    with postgres.connect("mlflow") as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (child_id,)).fetchone()
    assert row == ("FINISHED",)
