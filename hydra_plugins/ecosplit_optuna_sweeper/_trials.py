"""One trial's bookkeeping: its params and job overrides, its outcome, what is told to Optuna."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Tuple

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from . import _interrupt, _runtime
from ._outcome import (
    CONSTRAINTS,
    FAIL_REASON,
    FIXED_PARAMS,
    ConfigError,
    Outcome,
    describe_exception,
    interpret_return,
)
from ._search_space import SearchSpace, SearchSpaceError, encode_value, quote
from ._settings import Settings
from ._storage import FAIL_KIND, retrying, set_trial_attrs
from .masking import mask_secrets, redact_url

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

try:  # the system-attr prefix of Optuna 5's native constraints (Trial.set_constraint)
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
except ImportError:  # pragma: no cover - moved in another Optuna version
    _CONSTRAINTS_KEY = "constraints"

# exit status of a task that stops on a usage error (bad setting, missing data): the
# convention of argparse and of this project's entry points
USAGE_EXIT_STATUS = 2


def suggest(trial: Trial, name: str, d: BaseDistribution) -> Any:
    try:
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(name, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    except ValueError as e:  # e.g. a log scale over a range that includes 0
        raise SearchSpaceError(f"hydra.sweeper.params.{name}: {e}") from e
    raise SearchSpaceError(f"unsupported distribution for {name}: {d}")  # pragma: no cover


def env_overrides(settings: Settings, study: optuna.Study, trial: Trial) -> List[str]:
    """How the job finds its trial (see _runtime). Hydra logs and saves the overrides: the
    storage password stays out (masked); the job reads the real URL from its own config."""
    env = {
        _runtime.ENV_TRIAL_ID: str(trial._trial_id),
        _runtime.ENV_TRIAL_NUMBER: str(trial.number),
        _runtime.ENV_STUDY: study.study_name,
    }
    if settings.storage_url and ":memory:" not in settings.storage_url:
        env[_runtime.ENV_STORAGE] = redact_url(settings.storage_url)  # type: ignore[assignment]
    return [f"++hydra.job.env_set.{k}={quote(v)}" for k, v in env.items()]


def fixed_params_attr(space: SearchSpace) -> Dict[str, Any]:
    """The ``fixed_params`` user attr of every trial (passwords masked): computed once per
    sweep and written with the trial when it is created."""
    return {f.name: mask_secrets(f.value_text) for f in space.fixed.values()}


def configure(
    settings: Settings, study: optuna.Study, trial: Trial, space: SearchSpace,
    custom_fn: Optional[Callable[..., Any]], config: Any, fixed_attr: Dict[str, Any],
) -> List[str]:
    """Suggest the params of ``trial`` and return the overrides of its job. ``fixed_attr``
    (:func:`fixed_params_attr`) is already on the trial; fixed params returned by
    ``custom_search_space`` are added to it here."""
    for name, d in space.distributions.items():
        suggest(trial, name, d)
    extra_fixed: Dict[str, Any] = {}
    if custom_fn is not None:
        ret = custom_fn(config, trial)
        if ret:
            if not isinstance(ret, Mapping):
                raise ConfigError(
                    f"hydra.sweeper.custom_search_space {settings.custom_search_space} must "
                    f"return None or a dict of fixed params, got {type(ret).__name__}"
                )
            extra_fixed = dict(ret)
    overlap = set(trial.params) & (set(space.fixed) | set(extra_fixed))
    if overlap:
        raise ConfigError(
            f"hydra.sweeper.params: {sorted(overlap)} are both searched and fixed; remove one"
        )
    if extra_fixed:
        merged = dict(fixed_attr)
        merged.update({k: mask_secrets(encode_value(v)) for k, v in extra_fixed.items()})
        trial.set_user_attr(FIXED_PARAMS, merged)
    overrides = space.overrides_for(trial.params)
    overrides += [f"{k}={encode_value(v)}" for k, v in extra_fixed.items()]
    return overrides + env_overrides(settings, study, trial)


def usage_error(exc: BaseException) -> Optional[str]:
    """The message of a task's ``SystemExit(2)`` (a usage error), else None: the chained
    error's text (``raise SystemExit(2) from err``) when there is one."""
    if not isinstance(exc, SystemExit) or exc.code != USAGE_EXIT_STATUS:
        return None
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause):
        return str(cause)
    return "the task exited with status 2 (a usage error; its message is in the job's log)"


class TaskExit(Exception):
    """A task called ``sys.exit(code)``: carried as an ordinary job failure, so the launcher
    returns the other jobs of the batch and the sweeper process goes on to tell them."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"exit status {self.code}: {self.message}"


class GuardedTask:
    """The task function as launched: ``SystemExit`` -> :class:`TaskExit`; SIGINTs counted
    (``_interrupt``) also in a launcher's worker process that keeps Python's default handler.
    Picklable by reference (launchers that use other processes ship it there)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, cfg: Any) -> Any:
        try:
            with _interrupt.counting():  # in the sweeper's process: counting already
                return self.fn(cfg)
        except SystemExit as e:
            cause = e.__cause__ or e.__context__
            message = usage_error(e) or (str(cause) if cause is not None else "sys.exit() in the task")
            raise TaskExit(e.code, message) from e


class OutcomeReader:
    """JobReturn -> Outcome; logs the first traceback of the run in full, except for an
    exception of ``expected`` (``hydra.sweeper.expected_failures``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.expected: Tuple[type, ...] = ()
        self._logged_traceback = False

    def __call__(self, trial: Trial, ret: JobReturn) -> Outcome:
        if ret.status == JobStatus.COMPLETED:
            return interpret_return(
                ret.return_value,
                objective_names=self.settings.objective_names,
                n_objectives=len(self.settings.directions),
                constraints=self.settings.constraints,
                params=trial.params,
            )
        exc = ret._return_value
        if isinstance(exc, optuna.TrialPruned):
            return Outcome("PRUNED")
        if isinstance(exc, TaskExit):
            if exc.code == USAGE_EXIT_STATUS:
                return Outcome("FAIL", fail_reason=exc.message, config_error=exc.message)
            return Outcome("FAIL", fail_reason=f"the task exited with status {exc.code}: {exc.message}")
        if isinstance(exc, BaseException):
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            if not self._logged_traceback and not isinstance(exc, self.expected):
                self._logged_traceback = True
                log.warning("trial %d raised (first failure of this run):\n%s", trial.number, tb)
            else:
                log.debug("trial %d raised:\n%s", trial.number, tb)
            return Outcome("FAIL", fail_reason=f"the task raised {describe_exception(exc)}")
        return Outcome("FAIL", fail_reason=f"the job did not complete (status {ret.status})")


def tell(study: optuna.Study, trial: Trial, outcome: Outcome, kind: str) -> Optional[FrozenTrial]:
    """Tell the outcome (retrying while the database is unreachable); None when another
    process finished the trial first (e.g. failed it as stale).

    Every attribute of the outcome (the task's metrics, the constraint values both as Optuna's
    native constraints and as the ``constraints`` user attr, or the FAIL's reason and kind) is
    written in one transaction (:func:`set_trial_attrs`), then the state in a second: two
    commits per trial instead of one per metric."""
    user_attrs = dict(outcome.user_attrs)
    system_attrs: Dict[str, Any] = {}
    if outcome.state == "COMPLETE" and outcome.constraints:
        # the keys Trial.set_constraint writes, read back by FrozenTrial.constraints
        system_attrs = {f"{_CONSTRAINTS_KEY}:{name}": float(value) for name, value in outcome.constraints}
        user_attrs[CONSTRAINTS] = [v for _, v in outcome.constraints]
    elif outcome.state == "FAIL":
        user_attrs[FAIL_REASON] = outcome.fail_reason or "unknown"
        system_attrs = {FAIL_KIND: kind}

    def do() -> FrozenTrial:
        set_trial_attrs(trial.storage, trial._trial_id, user_attrs, system_attrs)
        if outcome.state == "COMPLETE":
            return _safe_tell(study, trial, values=outcome.values)
        if outcome.state == "PRUNED":
            return _safe_tell(study, trial, state=TrialState.PRUNED)
        return _safe_tell(study, trial, state=TrialState.FAIL)

    try:
        return retrying(do, f"telling trial {trial.number}")
    except optuna.exceptions.UpdateFinishedTrialError as e:
        log.warning(
            "trial %d was finished by another process (failed as stale?); its result is "
            "discarded: %s", trial.number, e,
        )
        return None


def _safe_tell(study: optuna.Study, trial: Trial, **kwargs: Any) -> FrozenTrial:
    try:
        return study.tell(trial, **kwargs)
    except RuntimeError as e:
        # GridSampler calls study.stop() once the grid is exhausted, which is only allowed
        # inside optimize(); the trial itself has been stored by then.
        if "Study.stop" not in str(e):
            raise
        return study._storage.get_trial(trial._trial_id)
    except optuna.exceptions.UpdateFinishedTrialError:
        raise
    except ValueError as e:
        # Optuna 5 raises ValueError for a finished trial in tell(); normalise it
        if str(e).startswith("Cannot tell a"):
            raise optuna.exceptions.UpdateFinishedTrialError(str(e)) from e
        raise
