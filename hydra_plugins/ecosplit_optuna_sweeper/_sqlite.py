"""The SQLite pragmas behind write-ahead-log mode, shared by the sweeper's Optuna storage
(``_storage._use_wal``) and ecosplit's MLflow store (``pipeline.tracking.wal_for``). No Optuna
import: the app imports it too."""

import logging
import sqlite3
from typing import Any

log = logging.getLogger(__name__)


def set_wal(dbapi_connection: Any, what: str) -> None:
    """``journal_mode=WAL`` and ``synchronous=NORMAL`` on one new SQLite connection; if SQLite
    refuses (e.g. locked past the busy timeout) the connection keeps its defaults."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.OperationalError as e:
        log.debug("%s: WAL not set on this connection (%s)", what, e)
    finally:
        cursor.close()
