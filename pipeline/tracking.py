"""Every MLflow call of the project: store, experiment, runs, params, metrics, artifacts, secrets.

Credentials in storage URLs or tracking URIs (``postgresql://user:pw@host/db``) are masked in
everything recorded here: params, tags, the logged config and log lines (``configure`` installs
a log-record factory that masks every record of the process, and stops MLflow from printing
"View run at <tracking uri>" when that URI carries a password).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse
from typing import Any, Callable, Iterable, Mapping, Sequence

import mlflow
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

# the one home of secret masking, shared with the sweeper plugin (which never imports pipeline)
from hydra_plugins.ecosplit_optuna_sweeper import _interrupt as interrupts
from hydra_plugins.ecosplit_optuna_sweeper._sqlite import set_wal
from hydra_plugins.ecosplit_optuna_sweeper.masking import MASK, install_log_masking, mask_secrets  # noqa: F401

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow 3 param value limit
MAX_TAG_CHARS = 5000  # MLflow 3 tag value limit is 8000
BATCH_PARAMS_TAGS, BATCH_METRICS = 100, 1000  # what one log_batch call takes


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


def use(uri: str, sqlite_wal: bool = True) -> None:
    """Point MLflow at ``uri`` (reading runs needs it too), with secrets masked in its output; an
    SQLite file store in write-ahead-log mode unless ``sqlite_wal`` is False (``wal_for``)."""
    install_log_masking()
    # no "Downloading artifacts: 0%" bars on stderr for our few small files (they came before an
    # error line too); a user who sets the variable keeps theirs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if sqlite_wal:
        wal_for(uri)
    if mask_secrets(uri) != uri:
        quiet_run_urls()  # MLflow would print "View run ... at <tracking uri>/#/...", password included
    mlflow.set_tracking_uri(uri)
    path = _sqlite_file(uri)
    if path not in ("", ":memory:"):
        store, lock = (uri, os.path.realpath(path)), _schema_lock
    elif uri.startswith("postgresql"):
        store, lock = (uri, ""), _postgres_schema_lock
    else:  # a tracking server creates its tables once, as it starts
        return
    if store not in _OPENED:
        import sqlalchemy

        try:
            with lock(path or uri):
                MlflowClient(uri)  # opens MLflow's store: creates or migrates its tables; cached for the process
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:  # unreachable, refused, malformed
            raise _cannot_open(uri, exc) from exc
        _OPENED.add(store)


_OPENED: set[tuple[str, str]] = set()  # database stores this process has opened under a schema lock
# pg_advisory_lock's key for opening an MLflow store (per database): the first 8 bytes of
# sha256(b"ecosplit mlflow schema"), as a signed 64-bit integer
_PG_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"ecosplit mlflow schema").digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _postgres_schema_lock(uri: str, wait_s: float = 120.0):
    """``_schema_lock`` for a PostgreSQL tracking database: MLflow's table creation races there
    too (two of three processes opening a fresh database together failed on a duplicate
    ``alembic_version`` key), so a session-level advisory lock of that database, on a connection
    of its own (autocommit: no transaction left open), is held while MLflow opens the store and
    unlocked explicitly (a pooler such as PgBouncer keeps the session when the connection closes).
    A holder that keeps it past ``wait_s`` (a few seconds is usual) is not waited for further, and
    without a connection for it the store is opened as MLflow does: MLflow's error then says what
    is wrong."""
    import sqlalchemy

    key = {"key": _PG_SCHEMA_LOCK_KEY}
    conn = engine = None
    locked = False
    try:
        try:
            engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT",
                                              connect_args={"connect_timeout": 10})
            conn = engine.connect()
            started, told = time.monotonic(), False
            while not (locked := bool(conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:key)"), key).scalar())):
                waited = time.monotonic() - started
                if waited > wait_s:
                    log.warning("the tracking database's schema lock is still held after %.0f s: opening it "
                                "without", wait_s)
                    break
                if waited > 5 and not told:
                    log.info("waiting for another process to open the tracking database (schema lock)")
                    told = True
                time.sleep(0.1)
        except Exception as exc:
            log.debug("no schema lock on the tracking database (%s): the store is opened without it",
                      type(exc).__name__)
        yield  # outside the except: MLflow's own error is not chained to the lock's
    finally:
        try:
            if locked:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), key)
            if conn is not None:
                conn.close()
        except Exception as exc:  # closing the session releases it anyway (without a pooler)
            log.debug("schema unlock failed: %s", type(exc).__name__)
        if engine is not None:
            engine.dispose()


@contextlib.contextmanager
def _schema_lock(path: str):
    """One process at a time opens an SQLite tracking store: MLflow creates a new file's tables
    (and migrates an old one) in several transactions, with no lock of its own, so two commands
    started together on a fresh ``mlflow.db`` both create them and one fails ("duplicate column
    name: step"). The lock file is in the temporary folder, keyed by the store's real path, so
    nothing is added beside the store; SQLite stores are on one machine anyway (``wal_for``)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; open the store as MLflow does
        yield
        return
    key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"ecosplit-mlflow-store-{key}.lock"
    try:  # read-only: another user's lock file (made with their umask) still locks where it is readable
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:  # theirs unreadable (umask 077), or /tmp's protected_regular: open as MLflow does
        log.debug("no lock on %s (%s): the store is opened without it", path, exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_server(uri: str, wait_s: float | None) -> None:
    """Called as a command starts (``tracking.uri``, ``tracking.server_wait_s``): for a tracking server URI
    (http/https), requests to its health page until one is answered or ``wait_s`` has passed, each
    through MLflow's own client (its credentials and TLS settings). A server that never answers is
    one line naming ``tracking.uri``, not MLflow's retries (seven with back-off, ~4 min by MLflow's
    own estimate) then a traceback; any HTTP answer counts. ``wait_s`` None: no check. Later
    requests, a sweep's trials among them, keep MLflow's retries (a restart mid-sweep is waited for).
    A PostgreSQL tracking database likewise (``_check_database``): MLflow would retry ~100 s first.
    Any database URI is parsed first, ``wait_s`` None too (``_check_database_url``)."""
    if uri.startswith(DATABASE_SCHEMES):
        _check_database_url(uri)
    if wait_s is not None and uri.startswith("postgresql"):
        _check_database(uri, wait_s)
    if wait_s is None or not uri.startswith(("http://", "https://")):
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    from .config import ConfigError
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        try:
            http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=max(left, 1.0),
                         raise_on_status=False)
            return
        except mlflow.exceptions.MlflowException as e:
            if time.monotonic() + 1.0 < deadline:
                time.sleep(1.0)  # e.g. a server still starting refuses connections
                continue
            cause = e.__cause__ or e.__context__ or e
            raise ConfigError(f"tracking.uri={mask_secrets(uri)}: no MLflow tracking server answered there within "
                              f"tracking.server_wait_s={wait_s:g} s ({type(cause).__name__}); start it, set "
                              "tracking.uri to one that runs, or wait longer") from None


DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite")  # MLflow's database stores


def _check_database_url(uri: str) -> None:
    """A database URI that names no database MLflow could open (a malformed URL, a driver not
    installed) as one line naming ``tracking.uri``, without connecting or creating a file: a
    sweep says so before it opens its study, whatever ``tracking.server_wait_s``."""
    import sqlalchemy

    try:
        sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool).dispose()  # connects on first use only
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as e:
        raise _cannot_open(uri, e) from None


def _check_database(uri: str, wait_s: float) -> None:
    """``check_server`` for a PostgreSQL tracking database: connections until one opens or
    ``wait_s`` has passed (a server still starting refuses them); a malformed URL at once."""
    import sqlalchemy

    from .config import ConfigError
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        try:
            engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool,
                                              connect_args={"connect_timeout": max(1, int(left))})
            try:
                engine.connect().close()
                return
            finally:
                engine.dispose()
        except sqlalchemy.exc.OperationalError as e:
            if time.monotonic() + 1.0 < deadline:
                time.sleep(1.0)
                continue
            detail = str(e.orig if e.orig is not None else e).strip().splitlines()[0]
            raise ConfigError(mask_secrets(f"tracking.uri={uri}: the tracking database did not answer within "
                                           f"tracking.server_wait_s={wait_s:g} s ({detail}); start it, set "
                                           "tracking.uri to one that runs, or wait longer")) from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as e:  # a malformed URL, a missing driver
            raise _cannot_open(uri, e) from None


def _cannot_open(uri: str, exc: BaseException):
    """The ConfigError naming ``tracking.uri`` for a database store MLflow cannot open."""
    from .config import ConfigError
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ConfigError(mask_secrets(f"tracking.uri={uri}: MLflow cannot open this tracking database "
                                    f"({type(exc).__name__}: {detail})"))


def check_configured_server(cfg) -> None:
    """``check_server`` for a command's config (``tracking.uri``, ``tracking.server_wait_s``)."""
    from omegaconf import OmegaConf
    check_server(cfg.tracking.uri, OmegaConf.select(cfg, "tracking.server_wait_s"))


def run_url(run_id: str, experiment_id: str) -> str | None:
    """The run's page in the tracking server's UI, as MLflow prints it when a run ends (with its
    ``?workspace=`` for a workspace other than the default), without the URI's user and password;
    None for a store without such a page (a database, Databricks: MLflow prints its own)."""
    from urllib.parse import quote

    parts = urlparse(mlflow.get_tracking_uri())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl().rstrip("/")
    url = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    workspace = os.environ.get("MLFLOW_WORKSPACE", "").strip()
    return url + f"?workspace={quote(workspace, safe='')}" if workspace and workspace != "default" else url


def quiet_run_urls() -> None:
    """No "View run ... at <url>" lines on stdout as runs end in this process from now on: MLflow
    prints two per run ended on a tracking server, each after a ``get_run`` request of its own (a
    sweep's trial ends two runs, its own and the reuse cache's claim)."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def existing_experiment(uri: str, experiment: str, sqlite_wal: bool = True) -> str | None:
    """The id of ``experiment`` in the store at ``uri``, or None; unlike ``configure`` it creates
    neither the store nor the experiment."""
    if not store_exists(uri):
        return None
    use(uri, sqlite_wal)
    found = MlflowClient().get_experiment_by_name(experiment)
    return found.experiment_id if found is not None else None


def _sqlite_file(uri: str) -> str:
    """The file of a ``sqlite:///<path>`` URI as given (relative to the working directory), else ""."""
    prefix = "sqlite:///"
    return uri[len(prefix):].split("?", 1)[0] if uri.startswith(prefix) else ""


def store_exists(uri: str) -> bool:
    """False for a ``sqlite:///<path>`` tracking URI whose file (relative to the working
    directory) does not exist: opening it would create an empty store. True otherwise (a server
    cannot be checked without a request)."""
    path = _sqlite_file(uri)
    return path in ("", ":memory:") or Path(path).is_file()


_WAL_FILES: set[str] = set()  # real paths of the SQLite stores whose connections get WAL pragmas


def wal_for(uri: str) -> None:
    """Every later connection of this process to the SQLite file of ``uri`` (MLflow's, whose
    engine MLflow makes) runs in write-ahead-log mode with ``synchronous=NORMAL``, as the
    sweeper's Optuna storage does (``hydra.sweeper.sqlite_wal``): a commit appends to the log
    instead of syncing the file, which cuts a trial's MLflow writes
    (``benchmarks/bench_trial_tracking.py --breakdown``: its final batch 19.1 -> 13.7 ms, the
    run's end 4.2 -> 3.1 ms). Committed runs survive a crash of the
    process; after a power loss or an OS crash the last commits may be rolled back. WAL needs
    every user of the file on one machine and no network file system (``tracking.sqlite_wal:
    false`` then); the mode is stored in the file, and ``mlflow.db-wal``/``-shm`` sit beside it
    while it is open. Other SQLite files (the Optuna storage) are left alone."""
    path = _sqlite_file(uri)
    if path in ("", ":memory:"):
        return
    if not _WAL_FILES:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        event.listen(Engine, "connect", _wal_pragmas)  # every engine: MLflow's are made inside MLflow
    _WAL_FILES.add(os.path.realpath(path))


def _wal_pragmas(dbapi_connection: Any, _record: Any) -> None:
    import sqlite3
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    main = next((row[2] for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main"), "")
    if main and os.path.realpath(main) in _WAL_FILES:
        set_wal(dbapi_connection, "MLflow SQLite store")


def _plain_path(location: str) -> bool:
    """A location with no URI scheme: a folder path (a Windows drive letter is no scheme)."""
    return len(urlparse(location).scheme) <= 1


def server_with_local_artifacts(uri: str, artifact_location: str | None) -> str | None:
    """Why an experiment made on a tracking server with a plain local folder for its artifacts
    would not share them (None when it would): the server records the path, and every machine
    then writes there on its own disk (e.g. the smoke preset's ``mlruns-smoke`` under a
    ``tracking.uri=http://...`` override)."""
    local = artifact_location and (_plain_path(artifact_location) or urlparse(artifact_location).scheme == "file")
    if not uri.startswith(("http://", "https://")) or not local:
        return None
    return (f"tracking.artifact_location={artifact_location} is a local folder while tracking.uri is a tracking "
            "server: each machine would keep its artifacts (checkpoints, the reuse cache's models) on its own "
            "disk; set tracking.artifact_location=null for the server's artifact store, or give a shared URI")


def configure(uri: str, experiment: str, artifact_location: str | None = None, sqlite_wal: bool = True,
              setting: str = "tracking.experiment") -> str:
    """Point MLflow at ``uri`` (``use``) and return the id of ``experiment`` (created if missing).
    An experiment deleted in MLflow (its UI's delete) is one line naming ``setting``: MLflow refuses
    runs in it only when the first one is created, after a command's work.

    Called once in the parent process before trials start, so parallel workers never race to
    create the database schema or the experiment.
    """
    use(uri, sqlite_wal)
    if artifact_location and _plain_path(artifact_location):
        # a plain path is stored as given: make it absolute, or it would move with the working directory
        artifact_location = str(Path(artifact_location).expanduser().resolve())
    if (uri, experiment) in _EXPERIMENTS:  # once per process: every sweep trial calls this
        return _EXPERIMENTS[(uri, experiment)]
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        from .config import ConfigError
        raise ConfigError(f"{setting}={experiment}: the experiment is deleted in {mask_secrets(uri)}; restore it "
                          f"(mlflow experiments restore --experiment-id {found.experiment_id}) or choose another name")
    if found is not None:
        experiment_id = found.experiment_id
    else:
        if warning := server_with_local_artifacts(uri, artifact_location):
            log.warning("%s (experiment %s)", warning, experiment)
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:
            # another worker created it between our lookup and create
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    _EXPERIMENTS[(uri, experiment)] = experiment_id
    return experiment_id


def _clean(values: Mapping[str, Any], max_chars: int) -> dict[str, str]:
    """Param or tag values as MLflow takes them: strings, secrets masked, within its length limit."""
    return {k: mask_secrets(str(v))[:max_chars] for k, v in values.items()}


class RunLog:
    """Params, metrics and tags of one run, queued and sent together: one ``log_batch`` call where
    ``log_params``, ``log_metrics`` and ``set_tags`` make one each (MLflow splits a batch above 100
    params + tags or 1000 metrics). Secrets are masked. ``send`` sends now; ``flush`` and
    ``in_background`` leave MLflow's latency to a worker thread while the caller computes."""

    def __init__(self, run_id: str | None = None, experiment_id: str | None = None):
        self.run_id, self.experiment_id = run_id, experiment_id  # set by ``run`` when handed to it
        self.artifact_uri: str | None = None  # the run's, once ``run``/``background_run`` made it
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._tag_keys: set[str] = set()  # every tag ever queued, sent or not
        self._metrics: list[Metric] = []
        self._flushed_at = time.monotonic()
        self._worker: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def in_background(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Call ``fn`` (MLflow calls that need nothing back soon) in this run's worker thread, in
        the order given, while the caller goes on computing: the store's latency overlaps the
        work. ``join`` waits for them; ``run`` joins before the run ends."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="ecosplit-mlflow")
        self._pending.append(self._worker.submit(fn, *args, **kwargs))
        return self._pending[-1]

    def join(self) -> None:
        """Wait for every background call; raise the first one's error."""
        pending, self._pending = self._pending, []
        try:
            for future in pending:
                future.result()
        finally:
            if self._worker is not None and not self._pending:
                self._worker.shutdown(wait=True)
                self._worker = None

    def take(self) -> "RunLog":
        """What one ``log_batch`` call takes of the queue, in the order queued, as a RunLog of its
        own (e.g. to send it in the background while this one goes on queueing)."""
        part = RunLog(self.run_id, self.experiment_id)
        tags = list(self._tags.items())[:BATCH_PARAMS_TAGS]
        params = list(self._params.items())[:BATCH_PARAMS_TAGS - len(tags)]
        part._tags, part._params = dict(tags), dict(params)
        part._metrics, self._metrics = self._metrics[:BATCH_METRICS], self._metrics[BATCH_METRICS:]
        for k, _ in params:
            del self._params[k]
        for k, _ in tags:
            del self._tags[k]
        return part

    def params(self, params: Mapping[str, Any]) -> None:
        self._params.update(_clean(params, MAX_PARAM_CHARS))

    def tags(self, tags: Mapping[str, Any]) -> None:
        self._tags.update(_clean(tags, MAX_TAG_CHARS))
        self._tag_keys.update(tags)

    def has_tag(self, key: str) -> bool:
        return key in self._tag_keys

    def metrics(self, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None,
                dataset: tuple[str, str] | None = None) -> None:
        """Queue ``metrics`` at ``step``; with ``model_id`` they are the logged model's metrics too,
        measured on ``dataset`` (name, digest) if given."""
        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        self._metrics += [Metric(k, float(v), now, step, model_id=model_id, dataset_name=name, dataset_digest=digest)
                          for k, v in metrics.items()]

    def send(self) -> None:
        """Send what is queued, now."""
        if not (self._params or self._tags or self._metrics):
            return
        MlflowClient().log_batch(self.run_id, metrics=self._metrics,
                                 params=[Param(k, v) for k, v in self._params.items()],
                                 tags=[RunTag(k, v) for k, v in self._tags.items()])
        self._params, self._tags, self._metrics = {}, {}, []

    def flush(self, older_than_s: float = 0.0, everything: bool = False) -> None:
        """Send what one call takes of the queue (``everything``: all of it, in as many calls) in
        the background, if the last flush is at least ``older_than_s`` ago (e.g. per-epoch values:
        at most one call every ``older_than_s``)."""
        if time.monotonic() - self._flushed_at < older_than_s:
            return
        while self._params or self._tags or self._metrics:
            part = self.take()

            def send(part: RunLog = part) -> None:
                part.run_id = self.run_id  # known by now, also for a run ``background_run`` creates
                part.send()
            self.in_background(send)
            self._flushed_at = time.monotonic()
            if not everything:
                break


@contextlib.contextmanager
def run(experiment_id: str, run_name: str, tags: Mapping[str, str] | None = None, parent_run_id: str | None = None,
        batch: RunLog | None = None, failed_tags: Mapping[str, str] | None = None):
    """An MLflow run that ends FINISHED on success, KILLED on Ctrl-C and FAILED on an error (with
    ``failure_reason`` and ``failed_tags``). What ``batch`` still holds is sent as the run ends."""
    tags = _clean(tags or {}, MAX_TAG_CHARS)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    batch = batch if batch is not None else RunLog()
    batch.run_id, batch.experiment_id, batch.artifact_uri = active.info.run_id, experiment_id, active.info.artifact_uri
    with _ending(batch, mlflow.end_run, failed_tags):
        yield active


_CONTEXT_TAGS: dict[str, str] = {}


def context_tags() -> dict[str, str]:
    """The tags ``mlflow.start_run`` adds to a run (user, source name and type, git commit, ...),
    resolved once per process: they do not change between a sweep's trials."""
    if not _CONTEXT_TAGS:
        from mlflow.tracking.context import registry
        _CONTEXT_TAGS.update(registry.resolve_tags({}))
    return dict(_CONTEXT_TAGS)


@contextlib.contextmanager
def background_run(experiment_id: str, run_name: str, tags: Mapping[str, str] | None = None,
                   parent_run_id: str | None = None, batch: RunLog | None = None,
                   failed_tags: Mapping[str, str] | None = None):
    """``run`` without waiting for the store: the run is created by ``batch``'s worker thread (with
    the tags ``mlflow.start_run`` gives it) while the caller goes on, and ended as ``run`` ends
    it. Yields ``batch``: its ``run_id`` is set once the run exists, so a call that needs it is
    queued with ``batch.in_background`` (it runs after the creation) and reads it there. No
    fluent active run: calls in the block go through ``MlflowClient``."""
    tags = {**context_tags(), **_clean(tags or {}, MAX_TAG_CHARS), "mlflow.runName": run_name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    batch = batch if batch is not None else RunLog()
    batch.run_id, batch.experiment_id = None, experiment_id

    def create() -> None:
        info = MlflowClient().create_run(experiment_id, tags=tags, run_name=run_name).info
        batch.run_id, batch.artifact_uri = info.run_id, info.artifact_uri

    def end(status: str) -> None:
        MlflowClient().set_terminated(batch.run_id, status)
    batch.in_background(create)
    with _ending(batch, end, failed_tags):
        yield batch


@contextlib.contextmanager
def _ending(batch: RunLog, end: Callable[[str], None], failed_tags: Mapping[str, str] | None):
    """End ``batch``'s run as the block ends (``end(status)``): FINISHED once its background calls
    are done and the rest of the batch is sent; on Ctrl-C KILLED, on an error FAILED, with
    ``failure_reason`` and ``failed_tags``."""
    mark = interrupts.count()
    try:
        yield
        batch.join()
        batch.send()
    except BaseException as caught:  # SystemExit and KeyboardInterrupt too: never leave it RUNNING
        # a Ctrl-C behind another error (see _interrupt) ends the run KILLED and is raised as one
        masked = interrupts.interrupted_since(mark) and not isinstance(caught, KeyboardInterrupt)
        exc = interrupts.raised() if masked else caught
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            batch.join()
        except Exception as e:  # already failing: a background call's own error is secondary
            if e is not caught:
                log.warning("MLflow run %s: a background call failed too: %s", batch.run_id, e)
        if batch.run_id is not None:  # None: never created (background_run), nothing to end
            try:
                if not batch.has_tag("failure_reason"):  # keep a reason the caller set
                    batch.tags({"failure_reason": failure_reason(exc)})
                batch.tags(failed_tags or {})
                batch.send()
            except Exception as e:  # e.g. the store is gone: still try to end the run
                log.warning("could not record why MLflow run %s ended: %s", batch.run_id, e)
            try:
                end(status)
            except Exception as e:  # the store is gone: report it, but raise what ended the run
                log.warning("could not end MLflow run %s as %s: %s", batch.run_id, status, e)
        if masked:
            raise exc from caught
        raise
    else:
        end("FINISHED")


def failure_reason(exc: BaseException) -> str:
    """Why a run ended early, in one line: the user error behind an exit status 2 (its cause), an
    interruption, or the exception's type and message."""
    if isinstance(exc, KeyboardInterrupt):
        return interrupts.reason(exc)
    if isinstance(exc, SystemExit):
        cause = exc.__cause__
        return failure_reason(cause) if cause is not None else f"exit status {exc.code}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_TAG_CHARS] if text else type(exc).__name__


def log_params(params: Mapping[str, Any]) -> None:
    """Params of the active run (masked, one batch)."""
    batch = RunLog(mlflow.active_run().info.run_id)
    batch.params(params)
    batch.send()


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


def log_dataset(run_id: str, name: str, digest: str, source: str, profile: Mapping[str, Any],
                context: str = "training") -> None:
    """The run's data as an MLflow dataset input (the UI's Dataset column): ``name``, ``digest``
    (what identifies the data, wherever it lies), ``source`` (a local path or URI, secrets masked)
    and ``profile`` (e.g. split sizes)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    # what mlflow.data's local dataset source records: source type "local", {"uri": ...}
    dataset = Dataset(name=name, digest=digest, source_type="local",
                      source=json.dumps({"uri": mask_secrets(str(source))}), profile=json.dumps(dict(profile)))
    inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
    client = MlflowClient()
    try:
        client.log_inputs(run_id, inputs)
    except mlflow.exceptions.MlflowException:
        # Sweep workers logging the same new dataset at once: the store inserts the dataset row
        # for one and refuses the other's duplicate (PostgreSQL: UniqueViolation on dataset_pk,
        # seen with 3 workers in bench_workers); the row exists now, so a second call only links
        # it to this run. A second refusal is a real error.
        client.log_inputs(run_id, inputs)


def log_model(run_id: str, experiment_id: str, name: str, files: Sequence[str | os.PathLike],
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              model_type: str | None = None) -> str:
    """An MLflow 3 logged model of the run holding ``files``, READY and among the run's outputs;
    its id. Four calls, no flavor (no environment inference, no graph tracing): cheap enough for
    every sweep trial."""
    client = MlflowClient()
    model = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, model_type=model_type,
        params=_clean(params or {}, MAX_PARAM_CHARS), tags=_clean(tags or {}, MAX_TAG_CHARS))
    try:
        repo = artifact_repo(model.artifact_location)
        for path in files:
            repo.log_artifact(str(path))
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    return model.model_id


def artifact_repo(artifact_uri: str):
    """The artifact store at a run's or logged model's ``artifact_uri``, resolved as
    ``MlflowClient``'s ``log_artifacts``/``log_model_artifact`` resolve it, minus their look-up of
    the URI (a ``get_run``/``get_logged_model`` request per run the first time): the caller has it
    from the run's or model's creation."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

    uri = mlflow.get_tracking_uri()
    return get_artifact_repository(add_databricks_profile_info_to_artifact_uri(artifact_uri, uri), tracking_uri=uri)


def log_artifacts(run_id: str, local_dir: str | os.PathLike, artifact_uri: str | None = None) -> None:
    """The files of ``local_dir`` as the run's artifacts; with the run's ``artifact_uri`` (known
    from its creation) without asking the store for it."""
    if artifact_uri is None:
        MlflowClient().log_artifacts(run_id, str(local_dir))
    else:
        artifact_repo(artifact_uri).log_artifacts(str(local_dir))


def download(run_id: str, artifact_path: str, dst_dir: str | None = None) -> Path:
    dst_dir = dst_dir or tempfile.mkdtemp(prefix="ecosplit-")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=dst_dir))


def get_run(run_id: str):
    return MlflowClient().get_run(run_id)
