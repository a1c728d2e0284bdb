"""Ctrl-C that a library turned into another error.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives.
Code that re-raises what it catches as its own error hands on a different exception: OmegaConf
does (``format_and_raise``), and when Ctrl-C lands while it builds a ListConfig, the clean-up of
the half-built list fails and a ``ConfigKeyError`` comes out instead of the KeyboardInterrupt.
A trial the user interrupted was then told FAIL with that error and the sweep exited 1, not 130
(seen in CI: ``test_ctrl_c_then_the_same_command_continues_the_study``).

So the SIGINT handler counts: code that catches an error compares ``count()`` with the count
it took before (``interrupted_since``) and treats the error as the interrupt it hides. No Optuna
import: the app imports it too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_count = 0


def _on_sigint(signum: int, frame: object) -> None:
    global _count, _last
    _count += 1
    _last = KeyboardInterrupt
    raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler or ``docker stop``), handled as Ctrl-C is:
    the runs being recorded end KILLED, a sweep's running trials are re-queued."""


def _on_sigterm(signum: int, frame: object) -> None:
    global _count, _last
    _count += 1
    _last = Terminated
    raise Terminated


_last: type = KeyboardInterrupt  # what the latest counted signal raised


def raised() -> KeyboardInterrupt:
    """The interrupt the latest counted signal raised (Ctrl-C or SIGTERM), for code that finds it
    behind another error (``interrupted_since``) and raises it again."""
    return _last()


@contextlib.contextmanager
def _handling(signum: int, default: object, handler: object) -> Iterator[None]:
    """``handler`` for ``signum`` during the block, only where Python's ``default`` is in place
    (an ignored signal stays ignored, a handler someone else installed stays theirs), only in the
    main thread; the default is put back after unless another handler was installed meanwhile."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signum) is not default:
        yield
        return
    signal.signal(signum, handler)
    try:
        yield
    finally:
        if signal.getsignal(signum) is handler:  # one installed meanwhile stays
            signal.signal(signum, default)


def terminating() -> contextlib.AbstractContextManager:
    """Raise ``Terminated`` on SIGTERM during the block (counted as a SIGINT is), where SIGTERM
    would otherwise end the process at once with its runs left RUNNING. For an entry script's
    process, not a launcher's workers (their pool ends them with SIGTERM)."""
    return _handling(signal.SIGTERM, signal.SIG_DFL, _on_sigterm)


def reason(exc: BaseException) -> str:
    """How a run or trial the interrupt stopped records it."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (KeyboardInterrupt)"


def count() -> int:
    """SIGINTs handled in this process so far (while ``counting`` was active)."""
    return _count


def interrupted_since(mark: int) -> bool:
    """True when a SIGINT arrived after ``mark = count()`` was taken."""
    return _count > mark


def counting() -> contextlib.AbstractContextManager:
    """Count SIGINTs during the block, raising KeyboardInterrupt as Python's default handler
    does (``_handling``)."""
    return _handling(signal.SIGINT, signal.default_int_handler, _on_sigint)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) and SIGTERM back until the block is done; they are delivered right
    after. For steps that must not be cut in two (a run created but its id not yet kept)."""
    main = threading.current_thread() is threading.main_thread()
    if main and hasattr(signal, "pthread_sigmask"):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    else:  # pragma: no cover - not the main thread, or no POSIX signal masks
        yield
