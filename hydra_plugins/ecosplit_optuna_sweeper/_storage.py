"""RDB storage, heartbeats, and freeing the trials of processes that died.

A trial is RUNNING while a sweeper process owns it. The owner records who it is on the trial
(host, boot id, PID and the PID's start time) and, with heartbeats on (the default for RDB
storages), beats for it every ``heartbeat_interval`` seconds from a thread. A RUNNING trial
is freed - told FAIL with its reason and re-queued with the same params, at most
``max_retry`` times - when

* its owner ran on this host and that process is gone (at once: no grace period), or
* its heartbeat is older than ``grace_period`` seconds (any host), or
* its owner had heartbeats on but none was ever recorded and it started more than
  ``grace_period`` seconds ago (the owner died between ``ask`` and its first beat).

A RUNNING trial with neither an owner record nor a heartbeat (made by another tool, or a
sweeper with heartbeats off) is never freed here: nothing tells whether it is alive.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import socket
import threading
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._outcome import FAIL_REASON

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

# trial system attributes written by this sweeper
FAIL_KIND = "ecosplit_optuna:fail_kind"  # why it failed: see _loop.FailKind
OWNER = "ecosplit_optuna:owner"  # {"host", "boot", "pid", "start", "heartbeat"}
# overrides the host name recorded on trials (containers whose host names collide)
ENV_HOST = "ECOSPLIT_OPTUNA_HOST"

T = TypeVar("T")


# --------------------------------------------------------------------------- storage
def rdb_storage(
    url: str,
    engine_kwargs: Optional[Dict[str, Any]] = None,
    heartbeat_interval: Optional[int] = None,
    grace_period: Optional[int] = None,
    attempts: int = 5,
    sqlite_wal: bool = True,
) -> optuna.storages.RDBStorage:
    """RDBStorage(url). Server databases get ``pool_pre_ping`` (a restarted server's dropped
    connections are replaced instead of failing the next query). Processes started together
    on an empty database race to create Optuna's schema (unique violations): the losers retry.
    An SQLite file gets write-ahead logging (``sqlite_wal``, see :func:`_use_wal`)."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    check_url(url)
    kwargs: Dict[str, Any] = {"engine_kwargs": dict(engine_kwargs or {})}
    if not url.startswith("sqlite"):
        kwargs["engine_kwargs"].setdefault("pool_pre_ping", True)
    if heartbeat_interval:
        kwargs["heartbeat_interval"] = heartbeat_interval
        kwargs["grace_period"] = grace_period
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, **kwargs)
            if sqlite_wal and storage.engine.name == "sqlite" and storage.engine.url.database not in (None, "", ":memory:"):
                _use_wal(storage.engine)
            return storage
        except (IntegrityError, ProgrammingError) as e:
            if attempt == attempts:
                raise
            log.info("Optuna's tables are being created by another process (%s); retrying",
                     type(getattr(e, "orig", e)).__name__)
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def check_url(url: str) -> None:
    """A storage URL that cannot name a database (``optuna.db``, ``sqlite:/x.db``) or an SQLite
    file in a folder that does not exist is a ``ConfigError`` naming ``hydra.sweeper.storage``,
    not SQLAlchemy's traceback or an "unreachable, re-run later" that waiting will not mend."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ._outcome import ConfigError
    from .masking import redact_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"hydra.sweeper.storage={redact_url(url)!r} is no database URL: e.g. "
                          "sqlite:///optuna.db (a file beside the command) or postgresql://user@host/db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = os.path.dirname(os.path.abspath(parsed.database))
        if not os.path.isdir(folder):
            raise ConfigError(f"hydra.sweeper.storage={redact_url(url)}: the folder {folder} does not exist "
                              "(create it, or give an SQLite file in a folder that does)")


def _use_wal(engine: Any) -> None:
    """Every connection of ``engine`` (an SQLite file) runs in write-ahead-log mode with
    ``synchronous=NORMAL``.

    In SQLite's default mode every commit syncs the file to disk (~13-18 ms per commit on this
    project's machine, and a trial commits at least four times: creation, its params, its
    state); in WAL mode with synchronous=NORMAL a commit appends to the log without a sync
    (the log is synced at checkpoints). Committed transactions survive a crash of the process
    (SIGKILL, OOM), which is what recovery relies on; after a power loss or an OS crash the
    last ones may be rolled back, the file stays consistent. Readers no longer wait for a
    writer, so several sweepers and their jobs on one file block each other less. WAL needs all
    users on one machine (as SQLite does anyway: no network file systems). The journal mode is
    stored in the file: every later user of it, Optuna or not, uses WAL too; ``*.db-wal`` and
    ``*.db-shm`` files sit beside it while it is open."""
    from sqlalchemy import event

    from ._sqlite import set_wal

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        set_wal(dbapi_connection, "SQLite storage")

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections Optuna opened to create its tables get the pragmas too


def is_connection_error(e: BaseException) -> bool:
    """A database that went away (restart, network): worth retrying. Optuna wraps database
    errors in StorageInternalError, so the whole chain of causes is looked at."""
    try:
        from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    except ImportError:  # pragma: no cover
        return False
    seen = set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (OperationalError, InterfaceError)):
            return True
        if isinstance(cur, DBAPIError) and getattr(cur, "connection_invalidated", False):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def retrying(fn: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
    """fn(), retried with back-off while the database is unreachable (up to timeout_s)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_connection_error(e) or time.monotonic() + delay > deadline:
                raise
            log.warning("storage unreachable while %s (%s); retrying in %.1f s",
                        what, type(e).__name__, delay)
            time.sleep(delay)
            delay = min(2 * delay, 8.0)


# --------------------------------------------------------------------------- owners
def _boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> List[str]:
    """The fields of /proc/<pid>/stat after the command name (Linux; [] when absent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2:].split()


def _proc_start(pid: int) -> Optional[int]:
    """The start time of process pid in clock ticks since boot, or None."""
    fields = _proc_stat(pid)
    return int(fields[19]) if len(fields) > 19 else None


def host_name() -> str:
    return os.environ.get(ENV_HOST) or socket.gethostname()


def _pid_namespace() -> Optional[str]:
    """The PID namespace of this process (containers sharing a host name have their own)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def owner_record(heartbeat_interval: Optional[int]) -> Dict[str, Any]:
    """Who owns a trial: this process on this host."""
    pid = os.getpid()
    return {"host": host_name(), "boot": _boot_id(), "pidns": _pid_namespace(), "pid": pid,
            "start": _proc_start(pid), "heartbeat": heartbeat_interval}


# --------------------------------------------------------------------------- batched writes
def set_trial_attrs(
    storage: Any, trial_id: int, user_attrs: Optional[Dict[str, Any]] = None,
    system_attrs: Optional[Dict[str, Any]] = None,
) -> None:
    """Write several attributes of a RUNNING trial at once.

    Optuna's storage API writes one attribute per call, and on an RDB storage every call is
    its own transaction: one commit each (~13 ms on an SQLite file here, a round trip on a
    server). On an RDB storage they go in one transaction: the trial is checked once (a finished
    trial is refused as Optuna's setters refuse it, with UpdateFinishedTrialError), then each
    kind of attribute is written by one statement, the upsert Optuna's storage writes for one
    attribute given every row (SQLite, PostgreSQL, MySQL; other engines: that per-attribute
    statement for each); other storages get one call each."""
    user_attrs, system_attrs = user_attrs or {}, system_attrs or {}
    if not user_attrs and not system_attrs:
        return
    rdb = _rdb(storage)
    write = getattr(rdb, "_set_trial_attr_without_commit", None)
    if write is None:
        for k, v in user_attrs.items():
            storage.set_trial_user_attr(trial_id, k, v)
        for k, v in system_attrs.items():
            storage.set_trial_system_attr(trial_id, k, v)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        for model, attrs in ((models.TrialUserAttributeModel, user_attrs),
                             (models.TrialSystemAttributeModel, system_attrs)):
            items = list(attrs.items())
            for start in range(0, len(items), ATTRS_PER_STATEMENT):
                statement = _upsert(rdb.engine.name, model, trial_id, items[start:start + ATTRS_PER_STATEMENT])
                if statement is not None:
                    session.execute(statement)
                    continue
                for k, v in items[start:start + ATTRS_PER_STATEMENT]:
                    write(session, model, trial_id, k, v)


ATTRS_PER_STATEMENT = 200  # 3 bound values a row: within SQLite's oldest limit of 999


def _upsert(engine: str, model: Any, trial_id: int, items: List[Tuple[str, Any]]) -> Any:
    """Insert-or-update of (key, value) rows of a trial attribute table, as the statement
    Optuna's RDB storage writes for one (values as JSON); None for an engine it has none for."""
    import json
    import sqlite3

    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in items]
    if engine == "mysql":
        from sqlalchemy.dialects import mysql

        statement = mysql.insert(model).values(rows)
        return statement.on_duplicate_key_update(value_json=statement.inserted.value_json)
    if engine == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect
    elif engine == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects import sqlite as dialect
    else:
        return None
    statement = dialect.insert(model).values(rows)
    return statement.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                           set_=dict(value_json=statement.excluded.value_json))


def ask(study: optuna.Study, waiting: bool, user_attrs: Dict[str, Any],
        system_attrs: Dict[str, Any]) -> optuna.trial.Trial:
    """``study.ask()`` with attributes written along. A new trial is created with them in the
    one transaction that creates it (Optuna's ``create_new_trial`` with a template trial); a
    WAITING trial (a retry or ``enqueue_trial``) is popped first, as ``ask`` does, when the
    caller's last read of the study saw one (``waiting``), and gets them in one more."""
    storage = study._storage
    # as in study.ask(): samplers re-read the study for every trial
    study._thread_local.cached_all_trials = None
    trial_id = _pop_waiting(study) if waiting else None
    if trial_id is not None:
        set_trial_attrs(storage, trial_id, user_attrs, system_attrs)
    else:
        template = FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, values=None,
            datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
            distributions={}, user_attrs=dict(user_attrs), system_attrs=dict(system_attrs),
            intermediate_values={}, trial_id=-1,
        )
        trial_id = storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.trial.Trial(study, trial_id)


def _pop_waiting(study: optuna.Study) -> Optional[int]:
    """Set the first WAITING trial RUNNING (as ``study.ask()`` does); None when another
    process took them all."""
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _same_machine(owner: Dict[str, Any]) -> bool:
    """True only when a PID recorded by ``owner`` means a process we can see: same host name,
    same boot (two machines may share a name) and same PID namespace (containers)."""
    if owner.get("host") != host_name():
        return False
    for key, mine in (("boot", _boot_id()), ("pidns", _pid_namespace())):
        if owner.get(key) != mine:
            return False
    return True


def owner_gone(owner: Any) -> Optional[str]:
    """Why the owner of a trial is certainly dead (it ran on this host), or None."""
    # Another boot or namespace under the same name is not certainly dead (a second machine
    # with the same host name, another container): the heartbeat decides there.
    if not isinstance(owner, dict) or not _same_machine(owner):
        return None
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its owner process (PID {pid} on {host}) is gone"
    except PermissionError:
        pass  # exists, another user's
    if _proc_stat(pid)[:1] == ["Z"]:
        return f"its owner process (PID {pid} on {host}) is gone (zombie)"
    start = _proc_start(pid)
    if owner.get("start") is not None and start is not None and start != owner["start"]:
        return f"its owner process (PID {pid} on {host}) is gone (the PID was reused)"
    return None


def _heartbeat_ages(storage: Any, study_id: int) -> Dict[int, Optional[float]]:
    """Seconds since the last heartbeat of every RUNNING trial of the study (None: it never
    beat), in one query, measured on the database's clock as the beats are written."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import orm

    with _create_scoped_session(storage.scoped_session) as session:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        running = (
            session.query(models.TrialModel)
            .options(orm.selectinload(models.TrialModel.heartbeats))
            .filter(models.TrialModel.state == TrialState.RUNNING)
            .filter(models.TrialModel.study_id == study_id)
            .all()
        )
        return {t.trial_id: (now - t.heartbeats[0].heartbeat.replace(tzinfo=None)).total_seconds()
                if t.heartbeats else None for t in running}


def _rdb(storage: Any) -> Optional[optuna.storages.RDBStorage]:
    """The RDBStorage behind a study's storage (Optuna wraps it in a cache), or None."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def dead_trials(
    study: optuna.Study, grace_period: Optional[int], own_ids: Iterable[int] = (),
    trials: Optional[Sequence[FrozenTrial]] = None,
) -> List[Tuple[FrozenTrial, str]]:
    """The RUNNING trials of the study whose owner is dead, each with the reason (``trials``:
    the study's trials as just read, else they are read here)."""
    storage = _rdb(study._storage)
    own = set(own_ids)
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING and t._trial_id not in own]
    if not running or storage is None:
        return []
    stale: Set[int] = set()
    silent: Set[int] = set()
    if grace_period:
        ages = _heartbeat_ages(storage, study._study_id)
        stale = {i for i, age in ages.items() if age is not None and age > grace_period}
        silent = {i for i, age in ages.items() if age is None}
    now = datetime.datetime.now()
    out = []
    for t in running:
        owner = t.system_attrs.get(OWNER)
        reason = owner_gone(owner)
        if reason is None and t._trial_id in stale:
            reason = f"no heartbeat for more than grace_period={grace_period} s"
        if (
            reason is None
            and t._trial_id in silent
            and isinstance(owner, dict)
            and owner.get("heartbeat")
            and t.datetime_start is not None
            and (now - t.datetime_start).total_seconds() > grace_period  # type: ignore[operator]
        ):
            reason = f"no heartbeat since it started, more than grace_period={grace_period} s ago"
        if reason is not None:
            out.append((t, reason))
    return out


def unwatched(study: optuna.Study, trials: Sequence[FrozenTrial]) -> List[int]:
    """Numbers of RUNNING trials nothing here can ever free: no heartbeat, and either no owner
    record or an owner with heartbeats off on another machine."""
    storage = _rdb(study._storage)
    if storage is None:
        return []
    silent = {i for i, age in _heartbeat_ages(storage, study._study_id).items() if age is None}
    out = []
    for t in trials:
        if t.state != TrialState.RUNNING or t._trial_id not in silent:
            continue
        owner = t.system_attrs.get(OWNER)
        if not isinstance(owner, dict) or (not owner.get("heartbeat") and not _same_machine(owner)):
            out.append(t.number)
    return out


# --------------------------------------------------------------------------- fail + re-queue
def fail_trial(study: optuna.Study, trial_id: int, number: int, reason: str, kind: str) -> bool:
    """Tell a RUNNING trial FAIL with its reason; False if someone finished it first."""
    storage = study._storage

    def do() -> None:
        set_trial_attrs(storage, trial_id, {FAIL_REASON: reason}, {FAIL_KIND: kind})
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)

    try:
        retrying(do, f"failing trial {number}")
        return True
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    except Exception as e:
        log.warning("could not mark trial %d as FAIL (%s): %s", number, reason, e)
        return False


def requeue(study: optuna.Study, trial_id: int, number: int, max_retry: Optional[int]) -> None:
    """Add a WAITING copy of the FAILed trial (same params; ``failed_trial`` and
    ``retry_history`` system attrs as Optuna's retry callback), at most ``max_retry`` times.
    The copy carries neither the FAIL's reason nor its owner."""
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        callback = retry_cls(max_retry=max_retry)
    try:
        frozen = copy.deepcopy(retrying(lambda: study._storage.get_trial(trial_id), "re-queueing"))
        frozen.user_attrs.pop(FAIL_REASON, None)
        for key in (FAIL_KIND, OWNER):
            frozen.system_attrs.pop(key, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # not retried: a commit whose acknowledgement was lost would queue a second copy
            callback(study, frozen)
    except Exception as e:
        log.warning("could not re-queue trial %d with the same params: %s", number, e)


def free_dead_trials(
    study: optuna.Study, grace_period: Optional[int], max_retry: Optional[int],
    own_ids: Iterable[int] = (), trials: Optional[Sequence[FrozenTrial]] = None,
) -> List[int]:
    """Fail and re-queue the trials of dead owners; returns their numbers."""
    freed = []
    for t, reason in dead_trials(study, grace_period, own_ids, trials):
        if fail_trial(study, t._trial_id, t.number, f"worker died: {reason}", "dead"):
            log.warning("trial %d was RUNNING but %s: failed and re-queued with the same params",
                        t.number, reason)
            requeue(study, t._trial_id, t.number, max_retry)
            freed.append(t.number)
    return freed


# --------------------------------------------------------------------------- heartbeat
class Heartbeat:
    """Record Optuna heartbeats for the trials of the running batch (the sweeper process is
    alive exactly as long as the batch is being run on its behalf). A failed write is a
    WARNING (once per outage): a trial that cannot beat is freed by other workers.

    On an SQLite file (``at_once=False``) a trial's first beat comes at the next tick, at most
    one interval after it is added: the owner record says heartbeats are on, and an owner that
    never beat is judged only ``grace_period`` (> interval) after the trial started (see
    :func:`dead_trials`), so a trial shorter than the interval costs no heartbeat write. That
    judgement compares the trial's start, written on the owner's clock, with the judge's
    clock: fine on SQLite, whose users all run on one machine. A server database may be
    shared by machines whose clocks differ, so there (``at_once=True``) the first beat is
    written at once and ages are measured on the database's clock only."""

    def __init__(self, storage: Any, interval: int, at_once: bool = True) -> None:
        self._storage = storage
        self._interval = interval
        self._at_once = at_once
        self._ids: set = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, ids: Sequence[int]) -> None:
        for i in ids:
            try:
                self._storage.record_heartbeat(i)
            except Exception as e:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "heartbeat for trial id %s failed (%s: %s); other workers free this "
                        "run's trials after grace_period if it lasts", i, type(e).__name__, e,
                    )
                continue
            if self._failing:
                self._failing = False
                log.warning("heartbeats recorded again")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._ids)
            self._beat(ids)

    def add(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._ids.update(ids)
        if self._at_once:
            self._beat(ids)

    def remove(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._ids.difference_update(ids)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
