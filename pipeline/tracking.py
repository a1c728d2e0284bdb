"""Every MLflow call of the project: store, experiment, runs, params, metrics, artifacts, secrets.

Credentials in storage URLs or tracking URIs (``postgresql://user:pw@host/db``) are masked in
everything recorded here: params, tags, the logged config and log lines (``configure`` installs
a log-record factory that masks every record of the process, and stops MLflow from printing
"View run at <tracking uri>" when that URI carries a password).
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import mlflow
from mlflow.tracking import MlflowClient

# the one home of secret masking, shared with the sweeper plugin (which never imports pipeline)
from hydra_plugins.ecosplit_optuna_sweeper.masking import MASK, install_log_masking, mask_secrets  # noqa: F401

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow 3 param value limit


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"train": {"mu": 0.9}} -> {"train.mu": 0.9}; lists stay single values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


_EXPERIMENTS: dict[tuple[str, str], str] = {}


def use(uri: str) -> None:
    """Point MLflow at ``uri`` (reading runs needs it too), with secrets masked in its output."""
    install_log_masking()
    if mask_secrets(uri) != uri:
        # MLflow prints "View run ... at <tracking uri>/#/..." on stdout, password included
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)


def existing_experiment(uri: str, experiment: str) -> str | None:
    """The id of ``experiment`` in the store at ``uri``, or None; unlike ``configure`` it creates
    neither the store nor the experiment."""
    if not store_exists(uri):
        return None
    use(uri)
    found = MlflowClient().get_experiment_by_name(experiment)
    return found.experiment_id if found is not None else None


def store_exists(uri: str) -> bool:
    """False for a ``sqlite:///<path>`` tracking URI whose file (relative to the working
    directory) does not exist: opening it would create an empty store. True otherwise (a server
    cannot be checked without a request)."""
    prefix = "sqlite:///"
    path = uri[len(prefix):].split("?", 1)[0] if uri.startswith(prefix) else ""
    return path in ("", ":memory:") or Path(path).is_file()


def configure(uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Point MLflow at ``uri`` and return the id of ``experiment`` (created if missing).

    Called once in the parent process before trials start, so parallel workers never race to
    create the database schema or the experiment.
    """
    use(uri)
    if (uri, experiment) in _EXPERIMENTS:  # once per process: every sweep trial calls this
        return _EXPERIMENTS[(uri, experiment)]
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:
            # another worker created it between our lookup and create
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    _EXPERIMENTS[(uri, experiment)] = experiment_id
    return experiment_id


@contextlib.contextmanager
def run(experiment_id: str, run_name: str, tags: Mapping[str, str] | None = None, parent_run_id: str | None = None):
    """An MLflow run that ends FINISHED on success, KILLED on Ctrl-C and FAILED on an error."""
    tags = {k: mask_secrets(str(v)) for k, v in (tags or {}).items()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    try:
        yield active
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: never leave it RUNNING
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            if "failure_reason" not in MlflowClient().get_run(active.info.run_id).data.tags:  # keep a set one
                set_tags({"failure_reason": failure_reason(exc)})
            mlflow.end_run(status)
        except Exception as e:  # the store is gone: report it, but raise what ended the run
            log.warning("could not end MLflow run %s as %s: %s", active.info.run_id, status, e)
        raise
    else:
        mlflow.end_run("FINISHED")


MAX_TAG_CHARS = 5000  # MLflow 3 tag value limit is 8000


def failure_reason(exc: BaseException) -> str:
    """Why a run ended early, in one line: the user error behind an exit status 2 (its cause), an
    interruption, or the exception's type and message."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    if isinstance(exc, SystemExit):
        cause = exc.__cause__
        return failure_reason(cause) if cause is not None else f"exit status {exc.code}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_TAG_CHARS] if text else type(exc).__name__


def log_params(params: Mapping[str, Any]) -> None:
    clean = {k: str(mask_secrets(v))[:MAX_PARAM_CHARS] for k, v in params.items()}
    items = list(clean.items())
    for i in range(0, len(items), 100):  # MLflow's batch limit
        mlflow.log_params(dict(items[i : i + 100]))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(mask_secrets(text), artifact_file)


def log_file(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


def rows_to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def log_table(rows: Iterable[Mapping[str, Any]], artifact_file: str) -> None:
    log_text(rows_to_csv(rows), artifact_file)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: mask_secrets(str(v)) for k, v in tags.items()})


def download(run_id: str, artifact_path: str, dst_dir: str | None = None) -> Path:
    dst_dir = dst_dir or tempfile.mkdtemp(prefix="ecosplit-")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=dst_dir))


def get_run(run_id: str):
    return MlflowClient().get_run(run_id)
