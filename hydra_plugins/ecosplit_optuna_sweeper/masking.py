"""Passwords out of everything recorded: ``scheme://user:password@host`` -> ``scheme://user:***@host``.

The one home of secret masking for the sweeper and for the app (``pipeline/tracking.py``
imports it; this plugin never imports the app). Light: no Optuna, no Hydra.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Optional

MASK = "***"
# also in Hydra's override grammar, which escapes the colons: http\://user\:pw@host
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*\\*://[^:/@\s\\]*\\*:)(?P<pw>[^@\s]+)(?P<tail>@)"
)


def mask_secrets(text: Any) -> Any:
    """Mask URL passwords inside a string; anything else is returned as it is."""
    if isinstance(text, str):
        return _URL_PASSWORD.sub(lambda m: m["head"] + MASK + m["tail"], text)
    return text


def redact_url(url: Optional[str]) -> Optional[str]:
    """A database URL with its password masked (SQLAlchemy's rendering when it parses)."""
    if url is None:
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return mask_secrets(url)


class MaskingRecordFactory:
    """A log-record factory that masks URL passwords in every record of the process (Hydra's
    launch lines list the overrides, e.g. ``tracking.uri=http://user:pw@host``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format: the handler reports it
            return record
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return record


def install_log_masking() -> Any:
    """Mask every log record of this process (idempotent); returns the factory to restore."""
    previous = logging.getLogRecordFactory()
    if not isinstance(previous, MaskingRecordFactory):
        logging.setLogRecordFactory(MaskingRecordFactory(previous))
    return previous
