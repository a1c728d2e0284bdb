"""What the thin entry scripts share: one clear line and exit status 2 for bad input.

Two layers: ``user_errors_exit`` wraps the task (bad settings, missing data, unknown cut points
found by our own checks) and ``run_cli`` wraps the Hydra main (mistakes Hydra finds while
composing the config: an unknown preset or group option, an override of a key that does not
exist, override grammar, interpolations).
"""
from __future__ import annotations

import functools
import gc
import logging
import os
import sys
from typing import Callable

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.ecosplit_optuna_sweeper import _interrupt as interrupts

from .config import ConfigError
from .data import DataUnavailableError
from .model import CheckpointError, UnknownCutError
from .training import TrainingDiverged

log = logging.getLogger("ecosplit")

USER_ERRORS = (ConfigError, DataUnavailableError, UnknownCutError, CheckpointError)
COMPOSITION_ERRORS = (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)
USER_ERROR_EXIT = 2  # the exit status of every user error (usage error, as argparse)
# a run that failed for a reason the user can act on: one line and exit status 1 (the run ended
# FAILED, with the reason); in a sweep's trial the trial FAILs and the sweep goes on
RUN_FAILURES = (TrainingDiverged,)
RUN_FAILURE_EXIT = 1
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
INTERRUPTED = "interrupted (Ctrl-C); the MLflow run it was recording, if any, ended KILLED"
TERMINATED_EXIT = 143  # 128 + SIGTERM
TERMINATED = "terminated (SIGTERM); the MLflow run it was recording, if any, ended KILLED"


def refuse(message: str, cause: BaseException | None = None, quiet: bool = False):
    """Print ``error: <message>`` on stderr (unless ``quiet``) and exit with status 2.

    The SystemExit is chained to ``cause``: the sweeper reads the trial's failure reason from it.
    """
    if not quiet:
        print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USER_ERROR_EXIT) from cause


def in_sweeper_trial() -> bool:
    """True inside a trial the ecosplit_optuna sweeper launched: the sweeper prints the trial's
    one error line itself (from the SystemExit's cause), so the task must not print a second."""
    from hydra_plugins.ecosplit_optuna_sweeper import ENV_TRIAL_ID
    return bool(os.environ.get(ENV_TRIAL_ID))


def user_errors_exit(fn):
    """Turn a user error into ``error: <message>`` on stderr and exit status 2 (no traceback);
    in a sweeper's trial only the exit, chained to the error (the sweeper prints the line)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _task_started
        _task_started = True
        mark = interrupts.count()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if interrupts.interrupted_since(mark):  # a Ctrl-C behind another error (see _interrupt)
                raise interrupts.raised() from exc
            if isinstance(exc, USER_ERRORS):
                refuse(str(exc), exc, quiet=in_sweeper_trial())
            if isinstance(exc, RUN_FAILURES) and not in_sweeper_trial():
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(RUN_FAILURE_EXIT) from exc
            raise

    return wrapper


# Set once a task has started in this process: from then on an OmegaConf error is a bug in our
# code (e.g. a misspelt key), not a composition mistake of the user's, and keeps its traceback.
_task_started = False


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def composition_message(exc: BaseException) -> str:
    """One line for what Hydra or OmegaConf refused while composing the config."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options is not None:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        kind = "preset" if group == "experiment" else "option"
        available = ", ".join(sorted(exc.options)) or "none"
        return f"{group}={name}: no such {kind} in conf/{group}/ (available: {available})"
    if isinstance(exc, OverrideParseException):
        return (f"bad override {exc.override!r}: {one_line(exc.message).split(' See https')[0]} "
                "(grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)")
    message = one_line(exc)
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and one_line(cause) not in message:
        message = f"{message}: {one_line(cause)}"  # e.g. which key is not in the config
    return message


def run_cli(main: Callable[[], object]) -> object:
    """Run a ``@hydra.main`` function; a composition error becomes one line and exit status 2.

    HYDRA_FULL_ERROR=1 during the call makes Hydra raise instead of printing its own multi-line
    report and exiting 1; the variable is restored afterwards. A user who set it keeps the full
    traceback.
    """
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return main()
    except COMPOSITION_ERRORS as exc:
        if saved == "1" or _task_started:
            raise
        refuse(composition_message(exc), exc)
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def run_script(main: Callable[[], object]) -> object:
    """``run_cli`` for an entry script's ``__main__``, with the garbage collector kept off the
    objects that live until the exit: what the imports made is frozen first (every full
    collection walked it again: ~0.4 s of CPU in a sweep worker's start), and everything at the
    end (the interpreter's exit would walk it all: ~1.2 s at the end of every sweep worker;
    0.1 s frozen). Exit handlers still run (MLflow's and logging's flushes) and files are still
    closed. ``freeze_heap`` freezes once more where the script's work says so. Ctrl-C ends it with
    one line and exit status 130, SIGTERM likewise with 143."""
    global _in_script
    _in_script = True
    gc.freeze()
    try:
        with interrupts.counting(), interrupts.terminating():
            return run_cli(main)
    except KeyboardInterrupt as exc:
        # the run it was recording has ended KILLED (tracking._ending); one line, not a traceback
        term = isinstance(exc, interrupts.Terminated)
        print(TERMINATED if term else INTERRUPTED, file=sys.stderr)
        raise SystemExit(TERMINATED_EXIT if term else INTERRUPTED_EXIT) from exc
    finally:
        gc.freeze()


_in_script = False  # set by run_script: this process is an entry script's


def freeze_heap() -> None:
    """In an entry script's process, move what is alive now out of the garbage collector's way
    (``gc.freeze`` after a young-generation collection): objects made so far that are garbage in
    the old generation stay until the exit, so call it once, when what is alive will live on.
    Elsewhere (tests, a launcher's worker processes) nothing happens."""
    if _in_script:
        gc.collect(1)
        gc.freeze()
