"""Task-side runtime: how a running job finds its live Optuna trial.

The sweeper adds ``++hydra.job.env_set.<VAR>=...`` overrides to every job, so while the task
function runs these environment variables are set (Hydra sets and restores them around the
task, in-process and in launcher subprocesses alike):

``ECOSPLIT_OPTUNA_TRIAL_ID``      storage trial id
``ECOSPLIT_OPTUNA_TRIAL_NUMBER``  trial number inside the study
``ECOSPLIT_OPTUNA_STUDY``         study name
``ECOSPLIT_OPTUNA_STORAGE``       RDB storage URL with the password masked as ``***`` (absent
                                  for an in-memory study)

Hydra prints and saves every job's overrides, so the storage URL's password is not in them;
the real URL is taken from the job's own ``hydra.sweeper.storage`` (HydraConfig), which is
the sweeper's configuration.

:func:`current_trial` first looks in an in-process registry of the trials the sweeper is
running (basic launcher: the very ``optuna.Trial`` the sweeper asked for), then, in another
process, rebuilds ``optuna.trial.Trial(study, trial_id)`` from the RDB storage with the
pruner configured in ``hydra.sweeper.pruner``.

This module is private (``_``-prefixed) so that Hydra's plugin scanner never re-executes it:
the registry must survive the scan.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

ENV_TRIAL_ID = "ECOSPLIT_OPTUNA_TRIAL_ID"
ENV_TRIAL_NUMBER = "ECOSPLIT_OPTUNA_TRIAL_NUMBER"
ENV_STUDY = "ECOSPLIT_OPTUNA_STUDY"
ENV_STORAGE = "ECOSPLIT_OPTUNA_STORAGE"

_lock = threading.Lock()
# (study_name, trial_id) -> optuna.Trial, filled by the sweeper around launcher.launch()
_LIVE_TRIALS: Dict[Tuple[str, int], Any] = {}
# per-process caches for subprocess launchers: the study loaded from the RDB storage
# (one engine per worker process, not per trial) and the trial of the current job
_STUDIES: Dict[Tuple[str, str], Any] = {}
_REBUILT: Dict[Tuple[str, str, int], Any] = {}
_LAST_STUDY: Any = None
_warned_unreachable = False


def register_trial(study_name: str, trial: Any) -> None:
    with _lock:
        _LIVE_TRIALS[(study_name, trial._trial_id)] = trial


def unregister_trial(study_name: str, trial: Any) -> None:
    with _lock:
        _LIVE_TRIALS.pop((study_name, trial._trial_id), None)


def set_last_study(study: Any) -> None:
    global _LAST_STUDY
    _LAST_STUDY = study


def last_study() -> "Optional[optuna.Study]":
    """The study of the most recent sweep that finished in this process (or None)."""
    return _LAST_STUDY


def _pruner_and_sampler_from_hydra(n_objectives: int) -> Tuple[Any, Any]:
    """The sweep's pruner and sampler, rebuilt from the job's Hydra config."""
    from hydra.core.hydra_config import HydraConfig

    from ._factory import from_job_config

    sweeper_cfg = HydraConfig.get().sweeper if HydraConfig.initialized() else None
    if sweeper_cfg is None:
        log.warning("current_trial(): no Hydra config in this process: the trial is never "
                    "pruned here")
    return from_job_config(sweeper_cfg, n_objectives)


def _sweeper_setting(name: str, default: Any) -> Any:
    """A setting of the job's ``hydra.sweeper`` (the sweep's own), or ``default`` without one."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return default
    value = HydraConfig.get().sweeper.get(name)
    return default if value is None else value


def _real_storage_url(env_value: str) -> Optional[str]:
    """The storage URL to open for ``$ECOSPLIT_OPTUNA_STORAGE`` (password masked by the
    sweeper): the job's ``hydra.sweeper.storage`` when it masks to the same URL."""
    if "***" not in env_value:
        return env_value  # no password (e.g. sqlite), or set by hand
    from hydra.core.hydra_config import HydraConfig

    from ._settings import absolute_sqlite
    from .masking import redact_url

    if HydraConfig.initialized():
        configured = HydraConfig.get().sweeper.get("storage")
        if configured and redact_url(absolute_sqlite(str(configured))) == env_value:
            return absolute_sqlite(str(configured))
    return None


def current_trial() -> "Optional[optuna.Trial]":
    """Return the live :class:`optuna.Trial` of the running sweep job, or ``None``.

    Use it inside the task function to report intermediate values and prune::

        from hydra_plugins.ecosplit_optuna_sweeper import current_trial

        trial = current_trial()
        for epoch in range(n_epochs):
            ...
            if trial is not None:
                trial.report(val_loss, step=epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

    Returns ``None`` outside a sweep, and (with a warning) when the trial is not
    reachable: an in-memory study run by a launcher that uses other processes.
    """
    global _warned_unreachable
    tid_s = os.environ.get(ENV_TRIAL_ID)
    if not tid_s:
        return None
    study_name = os.environ.get(ENV_STUDY, "")
    storage = os.environ.get(ENV_STORAGE, "")
    trial_id = int(tid_s)

    with _lock:
        live = _LIVE_TRIALS.get((study_name, trial_id))
    if live is not None:
        return live

    if storage:
        real = _real_storage_url(storage)
        if real is None:
            if not _warned_unreachable:
                _warned_unreachable = True
                log.warning(
                    "current_trial(): cannot open the storage %s of trial %s: its password is "
                    "not passed to jobs and this process has no Hydra config with "
                    "hydra.sweeper.storage. Returning None.",
                    storage,
                    tid_s,
                )
            return None
        storage = real
    else:
        if not _warned_unreachable:
            _warned_unreachable = True
            log.warning(
                "current_trial(): trial %s of the in-memory study '%s' lives in another "
                "process; set hydra.sweeper.storage to an RDB URL (e.g. sqlite:///optuna.db) "
                "to reach the trial from launcher subprocesses. Returning None.",
                tid_s,
                study_name,
            )
        return None

    key = (storage, study_name, trial_id)
    with _lock:
        cached = _REBUILT.get(key)
    if cached is not None:
        return cached

    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with _lock:
            study = _STUDIES.get((storage, study_name))
        if study is None:
            from ._storage import rdb_storage

            rdb = rdb_storage(storage, sqlite_wal=_sweeper_setting("sqlite_wal", True))
            directions = rdb.get_study_directions(rdb.get_study_id_from_name(study_name))
            pruner, sampler = _pruner_and_sampler_from_hydra(len(directions))
            study = optuna.load_study(
                study_name=study_name, storage=rdb, sampler=sampler, pruner=pruner
            )
            with _lock:
                _STUDIES[(storage, study_name)] = study
        frozen = study._storage.get_trial(trial_id)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            log.warning(
                "current_trial(): trial %s of study '%s' is %s, not RUNNING; returning None",
                frozen.number,
                study_name,
                frozen.state.name,
            )
            return None
        trial = optuna.trial.Trial(study, trial_id)
    with _lock:
        _REBUILT.clear()  # keep only the trial of the job currently running here
        _REBUILT[key] = trial
    return trial


def feasible(trial: Any) -> bool:
    """True iff ``trial`` (a FrozenTrial/Trial) is COMPLETE and satisfies all constraints.

    Constraint values follow Optuna's convention: a value <= 0 means satisfied. They are
    read from Optuna's native per-trial constraints (``trial.constraints``) and, as a
    fallback, from the ``constraints`` user attribute the sweeper also writes.
    A COMPLETE trial without constraints is feasible.
    """
    import optuna

    state = getattr(trial, "state", optuna.trial.TrialState.COMPLETE)
    if state != optuna.trial.TrialState.COMPLETE:
        return False
    values = list(getattr(trial, "constraints", {}).values())
    if not values:
        values = list(getattr(trial, "user_attrs", {}).get("constraints") or [])
    return all(float(v) <= 0.0 for v in values)
