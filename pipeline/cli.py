"""What the thin entry scripts share: one clear line and exit status 2 for bad input."""
from __future__ import annotations

import functools
import logging
import sys

from .config import ConfigError
from .data import DataUnavailableError
from .model import UnknownCutError

log = logging.getLogger("ecosplit")

USER_ERRORS = (ConfigError, DataUnavailableError, UnknownCutError)


def user_errors_exit(fn):
    """Turn a user error into ``error: <message>`` on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
