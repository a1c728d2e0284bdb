"""Shared fixtures: synthetic MNIST in IDX format and small Hydra configs composed like the app's."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

# Before torch loads (here and in every subprocess a test starts): OpenMP threads sleep when idle
# instead of spinning. With the tests in 2 processes on 2 cores (make test), spinning threads took
# the cores from the other process's work: 13m43s instead of 18m51s of CPU for the same suite
# (8m06s instead of 10m33s of wall). Results do not change: only how idle threads wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as in LeCun's MNIST files: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def make_fake_mnist(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """A learnable toy MNIST: each digit is a bright square whose position encodes the label."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            r, c = 2 + 2 * (y // 5) * 6, 2 + (y % 5) * 5
            images[i, r : r + 6, c : c + 4] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    return make_fake_mnist(tmp_path_factory.mktemp("mnist"))


def study_runs(client, experiment: str, study_name: str, role: str | None = None, status: str | None = None) -> list:
    """The MLflow runs of one sweep (tag ecosplit.study), optionally of one role and status."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    flt = [f"tags.`ecosplit.study` = '{study_name}'"]
    if role:
        flt.append(f"tags.`ecosplit.role` = '{role}'")
    if status:
        flt.append(f"attributes.status = '{status}'")
    return client.search_runs([exp.experiment_id], " and ".join(flt), max_results=1000)


def compose_cfg(config_name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture
def small_train_cfg(fake_mnist, tmp_path):
    """train.yaml shrunk for speed: toy data, one epoch, a throwaway MLflow store."""
    return compose_cfg(
        "train",
        [
            f"data.root={fake_mnist}",
            "data.download=false",
            "train.epochs=1",
            "train.batch_size=32",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/artifacts",
        ],
    )


# --------------------------------------------------------------------------------------------
# Real services for tests marked `services` (tests/services.py): a throwaway PostgreSQL server
# and an `mlflow server` on 127.0.0.1, one of each per session. They run wherever PostgreSQL's
# server binaries are found (`make test` on a developer machine as well as in CI): a server that
# then fails to start fails its tests with the reason and the log tail. Only a machine without
# the binaries (or psycopg) skips them, with the reason and the install hint - except under CI
# (CI set, not "0"/"false"), where that fails too. `-m "not services"` leaves them out.
import shutil as _shutil  # noqa: E402
import tempfile as _tempfile  # noqa: E402

from services import (  # noqa: E402
    MlflowServer,
    PostgresServer,
    ServiceError,
    postgres_available,
    strict_services,
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "services: needs real services (PostgreSQL server, mlflow server on 127.0.0.1); "
        "skipped only when PostgreSQL's server binaries are missing and CI is not set",
    )


def _service_unavailable(reason: str, *, installed: bool):
    """Skip only when the service is not installed here (and not under CI); a service that is
    installed but does not start is a failure: the tests it gates would silently not run."""
    if installed:
        pytest.fail(f"service installed but not starting: {reason}", pytrace=False)
    if strict_services():
        pytest.fail(f"service unavailable under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def services_dir():
    """A world-traversable temp dir (the unprivileged postgres user must reach its data dir;
    pytest's tmp_path under /tmp/pytest-of-root is 0700), removed at the end of the session."""
    path = Path(_tempfile.mkdtemp(prefix="ecosplit-services-"))
    os.chmod(path, 0o711)
    yield path
    _shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(services_dir):
    """A running PostgresServer with the databases `optuna` and `mlflow` (and `ecosplit`)."""
    reason = postgres_available()
    if reason:
        _service_unavailable(reason, installed=False)
    try:
        server = PostgresServer(services_dir / "postgres")
    except ServiceError as e:
        server, reason = None, str(e)
    if server is None:
        _service_unavailable(reason, installed=True)
    with server:
        server.create_database("optuna")
        server.create_database("mlflow")
        yield server


@pytest.fixture(scope="session")
def mlflow_server(postgres, services_dir):
    """A running MlflowServer on the `mlflow` database of `postgres`; artifacts in a temp dir,
    uploaded and downloaded through the server (mlflow-artifacts:/)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_DISABLE_TELEMETRY", "NO_PROXY", "no_proxy")}
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the clients in this process, too
    for key in ("NO_PROXY", "no_proxy"):  # requests must reach 127.0.0.1 directly
        os.environ[key] = ",".join(filter(None, [saved[key], "127.0.0.1,localhost"]))
    try:
        try:
            server = MlflowServer(postgres.url("mlflow"), services_dir / "mlflow-artifacts")
        except ServiceError as e:
            server, reason = None, str(e)
        if server is None:  # mlflow is a dependency: installed wherever the tests run
            _service_unavailable(reason, installed=True)
        with server:
            yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pytest_collection_modifyitems(config, items):
    """Tests using the service fixtures are `services` tests (`-m "not services"` leaves them out)."""
    for item in items:
        if {"postgres", "mlflow_server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
