"""Real services for tests: a throwaway PostgreSQL server and an ``mlflow server`` on 127.0.0.1.

``PostgresServer(base_dir)`` runs initdb + postgres from the PostgreSQL server binaries
(``/usr/lib/postgresql/*/bin``, newest first, or ``$ECOSPLIT_PG_BIN``) on a free port of
127.0.0.1 with scram-sha-256 password auth; the superuser is ``ecosplit`` with a random password,
and the database ``ecosplit`` exists. PostgreSQL refuses to run as root, so when this process is
root the binaries run as an unprivileged user: ``$ECOSPLIT_PG_USER`` if set, else ``postgres``
(created by Debian's package), else ``nobody``, else a system user ``ecosplit-pg`` made with
useradd. Otherwise they run as the current user.

``MlflowServer(backend_store_uri, artifact_root)`` runs ``mlflow server`` (uvicorn, one worker)
with artifacts proxied by the server (``--serve-artifacts --artifacts-destination artifact_root``)
and waits for ``GET /health``.

Both are context managers; leaving the ``with`` (or ``stop()``) shuts the server down: postgres
with ``pg_ctl stop -m fast``, mlflow by SIGTERM to its process group (SIGKILL after a timeout).
``shutdown()`` / ``start_again()`` / ``restart(down_s)`` stop a server and bring it back on the
same port with the same data, as an administrator restarting it mid-sweep would.
Should the test process die without tearing down, the servers get a parent-death signal (Linux).
Nothing here talks to anything but 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PG_BIN_ENV = "ECOSPLIT_PG_BIN"
PG_USER_ENV = "ECOSPLIT_PG_USER"
PG_SYSTEM_USER = "ecosplit-pg"
PG_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = "apt-get install -y postgresql"


class ServiceError(RuntimeError):
    """A service could not be started; the message carries the reason and the log tail."""


def strict_services() -> bool:
    """True under CI: then even a service that is not installed fails its tests instead of skipping
    them (one that is installed but does not start fails them everywhere, see conftest.py)."""
    value = os.environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").lower()


# --------------------------------------------------------------------------------------------
# Locating PostgreSQL and the user to run it as


def _version_key(path: str) -> tuple:
    m = re.search(r"/postgresql/([0-9.]+)/bin", path)
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def find_pg_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        candidates = [override]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
        on_path = shutil.which("initdb")  # other distributions, Homebrew, ...
        if on_path:
            candidates.append(str(Path(on_path).resolve().parent))
    for c in candidates:
        if all(os.access(Path(c) / b, os.X_OK) for b in PG_SERVER_BINARIES):
            return Path(c)
    return None


def _existing_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def pg_run_user(create: bool = False) -> pwd.struct_passwd | None:
    """The unprivileged user postgres runs as when we are root (None when we are not root).

    Raises ServiceError if no user is found (and, with create=True, none could be made).
    """
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get(PG_USER_ENV)
    names = [wanted] if wanted else ["postgres", "nobody", PG_SYSTEM_USER]
    for name in names:
        pw = _existing_user(name)
        if pw is not None:
            if pw.pw_uid == 0:
                raise ServiceError(f"user {name!r} is root; PostgreSQL refuses to run as root")
            return pw
    if wanted:
        raise ServiceError(f"${PG_USER_ENV}={wanted!r} names no user on this machine")
    if not create:
        raise ServiceError(f"none of the users {names} exists to run PostgreSQL as (not root)")
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
        capture_output=True, text=True,
    )
    pw = _existing_user(PG_SYSTEM_USER)
    if pw is None:
        raise ServiceError(f"useradd {PG_SYSTEM_USER} failed: {proc.stderr.strip()}")
    return pw


def postgres_available() -> str | None:
    """None if a PostgreSQL server can be started here, else the reason why not."""
    if find_pg_bin() is None:
        where = os.environ.get(PG_BIN_ENV) or "/usr/lib/postgresql/*/bin or PATH"
        return (f"PostgreSQL server binaries ({', '.join(PG_SERVER_BINARIES)}) not found in "
                f"{where} (set ${PG_BIN_ENV}, or: {INSTALL_HINT})")
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        return f"psycopg (3) is not importable: {e}"
    if os.geteuid() == 0 and not os.environ.get(PG_USER_ENV):
        if not any(_existing_user(n) for n in ("postgres", "nobody", PG_SYSTEM_USER)) \
                and not (shutil.which("useradd") or os.path.exists("/usr/sbin/useradd")):
            return "running as root with no unprivileged user for PostgreSQL and no useradd"
    return None


def _reachable(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether uid can traverse every directory from / down to path (ignores ACLs)."""
    for d in [path, *path.parents]:
        st = d.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Child processes


def _child_setup(pw: pwd.struct_passwd | None, death_signal: int | None):
    """preexec_fn: drop to pw (if given), then ask for death_signal when this process dies."""
    parent = os.getpid()

    def setup():
        if pw is not None:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)  # clears any parent-death signal: set it afterwards
            os.umask(0o077)
        if death_signal is not None and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(1, int(death_signal), 0, 0, 0)  # PR_SET_PDEATHSIG
            except Exception:
                pass
            if os.getppid() != parent:  # the parent already died
                os._exit(1)

    return setup


def _stop_group(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Signal proc's process group (it was started in a new session), escalating to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while group members (e.g. uvicorn workers) linger.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# PostgreSQL


class PostgresServer:
    """A throwaway PostgreSQL server in base_dir, started by the constructor.

    base_dir keeps the logs; data and socket directories go into base_dir too when the server's
    user can reach it, else into a private directory under the system temp dir. ``stop()``
    removes the data and socket directories (not base_dir, not the logs).
    """

    superuser = "ecosplit"
    default_database = "ecosplit"

    def __init__(self, base_dir: Path, *, start_timeout: float = 60.0, port: int | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.password = "s3cret-" + secrets.token_hex(8)
        self.host = HOST
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "postgres.log"
        self.initdb_log_path = self.base_dir / "initdb.log"
        self._private_home: Path | None = None
        self._stopped = False
        self.bin = find_pg_bin()
        if self.bin is None:
            raise ServiceError(postgres_available() or "PostgreSQL binaries not found")
        try:
            self.run_as = pg_run_user(create=True)
            self._prepare_dirs()
            self._initdb()
            self._start(start_timeout, port)
            self.create_database(self.default_database)
        except BaseException as e:
            self.stop()
            if isinstance(e, ServiceError):
                raise
            raise ServiceError(self._failure(f"PostgreSQL did not start: {e!r}")) from e

    # -- public API --------------------------------------------------------------------------

    def url(self, database: str | None = None, *, driver: str | None = None) -> str:
        """URL with the password: ``postgresql://ecosplit:PW@127.0.0.1:PORT/database``.

        Both Optuna's RDBStorage and ``mlflow server --backend-store-uri`` accept the plain form
        (SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3); driver="psycopg" gives
        ``postgresql+psycopg://``. It is also a libpq DSN for psycopg.connect().
        """
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        db = database or self.default_database
        return f"{scheme}://{self.superuser}:{self.password}@{self.host}:{self.port}/{db}"

    def dsn(self, database: str | None = None) -> str:
        """libpq form for psycopg.connect()."""
        return self.url(database, driver=None)

    def connect(self, database: str | None = None, **kwargs):
        import psycopg

        return psycopg.connect(self.dsn(database or "postgres"), connect_timeout=5, **kwargs)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name (no-op if it exists)."""
        from psycopg import sql

        with self.connect("postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self, mode: str = "fast") -> None:
        """Stop the server as an administrator restarting it would: ``pg_ctl stop -m mode``
        (``fast`` closes every client connection). Data, port and password stay, so
        ``start_again()`` brings the same database back on the same address."""
        if self.proc is None or self.proc.poll() is not None:
            return
        proc = self._run([self.bin / "pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", "30"],
                         timeout=40, log=self.log_path)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise ServiceError(self._failure(f"pg_ctl stop -m {mode} did not stop PostgreSQL "
                                             f"(exit {proc.returncode})")) from None

    def start_again(self, timeout: float = 60.0) -> None:
        """Start the server shut down by ``shutdown()`` on the same port (same URLs)."""
        if self.running:
            return
        self._start(timeout, self.port)

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        """``shutdown()``, ``down_s`` seconds with no server, ``start_again()``."""
        self.shutdown(mode)
        time.sleep(down_s)
        self.start_again()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self._run([self.bin / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast",
                           "-w", "-t", "30"], timeout=40)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _stop_group(self.proc, signal.SIGQUIT, 10)  # immediate shutdown, then kill
        if self.proc is not None and self.proc.returncode != 0:
            _stop_group(self.proc, signal.SIGKILL, 5)  # stray backends of a crashed postmaster
        for d in ("data_dir", "socket_dir"):
            path = getattr(self, d, None)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        if self._private_home is not None:
            shutil.rmtree(self._private_home, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port}, data={getattr(self, 'data_dir', None)})"

    # -- internals ---------------------------------------------------------------------------

    def _failure(self, reason: str) -> str:
        parts = [reason]
        for title, path in (("initdb log", self.initdb_log_path), ("postgres log", self.log_path)):
            tail = log_tail(path)
            if tail:
                parts.append(f"--- {title} ({path}) tail ---\n{tail}")
        return "\n".join(parts)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.home))
        return env

    def _run(self, cmd, *, timeout: float, log: Path | None = None) -> subprocess.CompletedProcess:
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            return subprocess.run(
                [str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=self.home, env=self._env(), timeout=timeout,
                preexec_fn=_child_setup(self.run_as, None), check=False,
            )
        finally:
            if log:
                out.close()

    def _prepare_dirs(self) -> None:
        home = self.base_dir
        if self.run_as is not None:
            gids = {self.run_as.pw_gid}
            if not _reachable(home, self.run_as.pw_uid, gids):
                # e.g. pytest's tmp_path under /tmp/pytest-of-root (0700): use a private dir.
                self._private_home = Path(tempfile.mkdtemp(prefix="ecosplit-pg-"))
                home = self._private_home
                os.chmod(home, 0o711)
                if not _reachable(home, self.run_as.pw_uid, gids):
                    raise ServiceError(
                        f"neither {self.base_dir} nor {home} is reachable by user "
                        f"{self.run_as.pw_name!r}; put the server under a world-traversable dir")
            else:
                os.chmod(home, os.stat(home).st_mode | 0o011)
        self.home = home
        self.data_dir = home / "data"
        self.socket_dir = home / "sock"
        for d in (self.data_dir, self.socket_dir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(mode=0o700)
            if self.run_as is not None:
                os.chown(d, self.run_as.pw_uid, self.run_as.pw_gid)

    def _initdb(self) -> None:
        # The password file lives in the (0700, server-owned) socket dir and is removed at once.
        pwfile = self.socket_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        if self.run_as is not None:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        try:
            proc = self._run(
                [self.bin / "initdb", "-D", self.data_dir, "-U", self.superuser,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
                 "--no-sync"],
                timeout=120, log=self.initdb_log_path,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            who = f" as {self.run_as.pw_name!r}" if self.run_as else ""
            raise ServiceError(self._failure(f"initdb{who} failed (exit {proc.returncode})"))

    def _start(self, timeout: float, port: int | None) -> None:
        attempts = 1 if port else 3
        for _ in range(attempts):
            self.port = port or free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            if self._start_once(timeout):
                return
            # Retry on another port only if the server exited because the port was taken.
            if self.proc.poll() is None or "already in use" not in _read_from(self.log_path, offset):
                break
        raise ServiceError(self._failure(
            f"PostgreSQL did not become ready on {self.host}:{self.port} within {timeout:.0f} s"))

    def _start_once(self, timeout: float) -> bool:
        import psycopg

        cmd = [
            self.bin / "postgres", "-D", self.data_dir, "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "max_connections=200", "-c", "shared_buffers=32MB",
            # Throwaway data: no durability needed.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "logging_collector=off",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.home, env=self._env(),
                start_new_session=True,
                # SIGINT = fast shutdown if the test process dies without tearing down.
                preexec_fn=_child_setup(self.run_as, signal.SIGINT),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False


# --------------------------------------------------------------------------------------------
# MLflow tracking server


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with server-proxied artifacts stored in artifact_root.

    The log goes to ``log_path`` (default: next to artifact_root); the process runs in
    ``artifact_root.parent`` so that nothing lands in the repository.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifact_root: Path,
        *,
        port: int | None = None,
        workers: int = 1,
        start_timeout: float = 60.0,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ):
        self.backend_store_uri = backend_store_uri
        self.artifact_root = Path(artifact_root).resolve()
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.workers = workers
        self.log_path = Path(log_path) if log_path else self.artifact_root.parent / "mlflow-server.log"
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._stopped = False
        try:
            attempts = 1 if port else 3
            for _ in range(attempts):
                self.port = port or free_port()
                offset = self.log_path.stat().st_size if self.log_path.exists() else 0
                if self._start_once(start_timeout):
                    return
                # Retry on another port only if the server exited because the port was taken.
                if self.proc.poll() is None or "already in use" not in _read_from(self.log_path, offset):
                    break
            raise ServiceError(self._failure(
                f"mlflow server did not answer {self.uri}/health within {start_timeout:.0f} s"))
        except BaseException as e:
            self.stop()
            if isinstance(e, ServiceError):
                raise
            raise ServiceError(self._failure(f"mlflow server did not start: {e!r}")) from e

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        try:
            with opener.open(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def shutdown(self) -> None:
        """Stop the server process (SIGTERM to its group); ``start_again()`` restarts it on the
        same port with the same stores, as a restart of a production tracking server."""
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGTERM, 20)

    def start_again(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        if not self._start_once(timeout):
            raise ServiceError(self._failure(
                f"mlflow server did not answer {self.uri}/health within {timeout:.0f} s after a restart"))

    def restart(self, down_s: float = 0.0) -> None:
        """``shutdown()``, ``down_s`` seconds with no server, ``start_again()``."""
        self.shutdown()
        time.sleep(down_s)
        self.start_again()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.shutdown()

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MlflowServer({self.uri})"

    def _failure(self, reason: str) -> str:
        tail = self.log_tail()
        return f"{reason}\n--- mlflow server log ({self.log_path}) tail ---\n{tail}" if tail else reason

    def _start_once(self, timeout: float) -> bool:
        mlflow_cli = Path(sys.executable).parent / "mlflow"
        cli = [str(mlflow_cli)] if mlflow_cli.exists() else [sys.executable, "-m", "mlflow"]
        cmd = [
            *cli, "server",  # the backend store URI (with its password) goes by env, not argv
            "--serve-artifacts", "--artifacts-destination", str(self.artifact_root),
            "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
            "--allowed-hosts", f"{self.host}:{self.port},localhost:{self.port}",
            *self.extra_args,
        ]
        env = dict(os.environ)
        env.update(
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
            # No huey job runner: fewer processes, nothing the tests need.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            NO_PROXY=",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1,localhost"])),
        )
        env.pop("MLFLOW_TRACKING_URI", None)
        for key in ("MLFLOW_REGISTRY_STORE_URI", "MLFLOW_DEFAULT_ARTIFACT_ROOT"):
            env.pop(key, None)
        env["MLFLOW_BACKEND_STORE_URI"] = self.backend_store_uri  # = --backend-store-uri
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.artifact_root.parent, env=env, start_new_session=True,
                # The mlflow CLI forwards SIGTERM to uvicorn.
                preexec_fn=_child_setup(None, signal.SIGTERM),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.25)
        return False
