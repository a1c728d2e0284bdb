"""Implementation of the ``ecosplit_optuna`` Hydra sweeper (Optuna ask-and-tell).

Loop (one iteration = one *batch*):

1. fail stale trials (heartbeat; RDB storage only): their retries are re-queued as WAITING
   trials with the same params;
2. count the study's COMPLETE + PRUNED + RUNNING + WAITING trials (all processes);
   ``k = min(n_jobs, n_trials - counted + waiting)``; stop when ``k <= 0``;
3. ask ``k`` trials (WAITING ones - retries / enqueued - first) and suggest the search space;
   trials another process made surplus in the meantime are told FAIL (``surplus``);
4. ``launcher.launch(batch, initial_job_idx)``: this call blocks until the whole batch
   finished (Hydra's launcher API is synchronous);
5. tell every trial COMPLETE / PRUNED / FAIL, report progress, check ``max_failure_rate``.

With a heartbeat, a process whose share of the budget is used up keeps syncing while other
processes still have trials RUNNING: a stale one (its process died) is failed and its retry
runs here, and ``on_complete`` then sees every trial of the study.

Secrets: the storage URL never goes into job overrides (Hydra logs and saves those); jobs get
it with the password masked and read the real one from their own ``hydra.sweeper.storage``.
While ``sweep()`` runs, log records of this process have ``scheme://user:password@`` masked.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from . import _runtime
from ._progress import Progress
from ._results import (
    CONSTRAINTS,
    FAIL_REASON,
    FIXED_PARAMS,
    ConfigError,
    Constraint,
    Outcome,
    describe_exception,
    interpret_return,
)
from ._search_space import (
    SearchSpace,
    SearchSpaceError,
    encode_value,
    grid_values,
    params_config_to_lines,
    parse_search_space,
    quote,
)
from .config import PRUNERS, SAMPLERS

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

# system attribute set on every trial this sweeper FAILs: why it failed.
#   task        the task raised / returned NaN, inf or a non-numeric objective (counted in
#               max_failure_rate)
#   surplus     asked while another process filled the study up to n_trials (not run)
#   interrupted the sweep was interrupted (KeyboardInterrupt) while the trial ran
#   launcher    the launcher itself raised (e.g. a worker process died)
#   config      the trial could not be configured (search space / custom_search_space)
FAIL_KIND = "ecosplit_optuna:fail_kind"

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
DIRECTIONS = ("minimize", "maximize")


class SweepAbortedError(RuntimeError):
    """Too many failed trials (max_failure_rate) - the sweep stopped."""


def _plain(x: Any) -> Any:
    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _absolute_sqlite(url: str) -> str:
    """sqlite:///rel.db -> sqlite:////abs/rel.db so that jobs which chdir (or run in other
    processes) open the same database file."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:
        return url
    if not u.drivername.startswith("sqlite"):
        return url
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:") or os.path.isabs(db):
        return url
    return u.set(database=os.path.abspath(db)).render_as_string(hide_password=False)


def _redact(url: Optional[str]) -> Optional[str]:
    if url is None:
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return mask_secrets(url)


# also in Hydra's override grammar, which escapes the colons: http\://user\:pw@host
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*\\*://[^:/@\s\\]*\\*:)(?P<pw>[^@\s]+)(?P<tail>@)"
)


def mask_secrets(text: Any) -> Any:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` inside a string."""
    if isinstance(text, str):
        return _URL_PASSWORD.sub(lambda m: m["head"] + "***" + m["tail"], text)
    return text


class _MaskingRecordFactory:
    """A log-record factory that masks URL passwords in every record of the process (Hydra's
    launch lines list the overrides, e.g. ``tracking.uri=http://user:pw@host``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to the handler to report
            return record
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return record


def _install_log_masking() -> Any:
    """Install the masking factory (unless one is active); returns the factory to restore."""
    previous = logging.getLogRecordFactory()
    if not isinstance(previous, _MaskingRecordFactory):
        logging.setLogRecordFactory(_MaskingRecordFactory(previous))
    return previous


def _rdb_storage(url: str, attempts: int = 5, **kwargs: Any) -> Any:
    """RDBStorage(url); processes started together on an empty database race to create Optuna's
    schema (CREATE TYPE / TABLE: unique violations): the losers retry and find it made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError) as e:
            if attempt == attempts:
                raise
            log.info("Optuna's tables are being created by another process (%s); retrying",
                     type(getattr(e, "orig", e)).__name__)
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


class _Heartbeat:
    """Record Optuna heartbeats for the trials of the running batch (the sweeper process
    is alive exactly as long as the batch is being run on its behalf)."""

    def __init__(self, storage: Any, interval: int) -> None:
        self._storage = storage
        self._interval = interval
        self._ids: set = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, ids: Sequence[int]) -> None:
        for i in ids:
            try:
                self._storage.record_heartbeat(i)
            except Exception as e:  # a finished trial, a DB hiccup: not fatal
                log.debug("heartbeat for trial id %s failed: %s", i, e)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._ids)
            self._beat(ids)

    def add(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._ids.update(ids)
        self._beat(ids)

    def remove(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._ids.difference_update(ids)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class EcosplitOptunaSweeperImpl(Sweeper):
    def __init__(
        self,
        sampler: Any = "tpe",
        pruner: Any = "none",
        direction: Any = "minimize",
        objectives: Any = None,
        constraints: Any = None,
        storage: Optional[str] = None,
        engine_kwargs: Any = None,
        study_name: Optional[str] = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        params: Any = None,
        custom_search_space: Optional[str] = None,
        search_space: Any = None,
        heartbeat_interval: Optional[int] = None,
        grace_period: Optional[int] = None,
        max_retry: Optional[int] = 3,
        progress_bar: Optional[bool] = None,
        on_complete: Optional[str] = None,
        on_start: Optional[str] = None,
        on_abort: Optional[str] = None,
        definition: Optional[str] = None,
    ) -> None:
        self.on_abort = on_abort
        self.definition = definition
        self.sampler_cfg = self._resolve_group("sampler", sampler, SAMPLERS)
        self.pruner_cfg = self._resolve_group("pruner", pruner, PRUNERS)
        self.objective_names, self.directions = self._resolve_objectives(direction, objectives)
        self.constraints = self._resolve_constraints(constraints)

        if storage is not None and not isinstance(storage, str):
            raise ConfigError(
                f"hydra.sweeper.storage must be null (in-memory) or an RDB URL string such as "
                f"sqlite:///optuna.db or postgresql://user:pw@host/db, got {storage!r}"
            )
        self.storage_url = _absolute_sqlite(storage) if storage else None
        self.engine_kwargs = _plain(engine_kwargs)
        self.study_name = study_name

        if not _is_int(n_trials) or n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials must be an integer >= 1, got {n_trials!r}")
        if not _is_int(n_jobs) or n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs must be an integer >= 1, got {n_jobs!r}")
        if (
            isinstance(max_failure_rate, bool)
            or not isinstance(max_failure_rate, (int, float))
            or not 0.0 <= float(max_failure_rate) <= 1.0
        ):
            raise ConfigError(
                "hydra.sweeper.max_failure_rate must be a number in [0, 1] (fraction of "
                f"finished trials allowed to fail), got {max_failure_rate!r}"
            )
        for name, v in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if v is not None and (not _is_int(v) or v < 1):
                raise ConfigError(
                    f"hydra.sweeper.{name} must be null (off) or an integer >= 1 (seconds), "
                    f"got {v!r}"
                )
        if max_retry is not None and (not _is_int(max_retry) or max_retry < 0):
            raise ConfigError(
                f"hydra.sweeper.max_retry must be null (unlimited) or an integer >= 0, "
                f"got {max_retry!r}"
            )
        if search_space:
            raise ConfigError(
                "hydra.sweeper.search_space is not supported: describe the search space in "
                "hydra.sweeper.params with Hydra's override grammar, e.g. "
                "{lr: 'tag(log, interval(1e-5, 1e-2))', layers: 'range(1, 5)'}"
            )
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = float(max_failure_rate)
        self.params = _plain(params) or {}
        if not isinstance(self.params, Mapping):
            raise ConfigError(
                "hydra.sweeper.params must be a mapping of config key -> override grammar "
                f"string (e.g. {{x: 'interval(0, 1)'}}), got {params!r}"
            )
        self.custom_search_space = custom_search_space
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.progress_bar = progress_bar
        self.on_complete = on_complete
        self.on_start = on_start

        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher: Any = None
        self.job_idx = 0
        self.study: Optional[optuna.Study] = None
        self._logged_traceback = False
        self._custom_fn: Any = None
        self.sweep_dir: Optional[str] = None

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _resolve_group(group: str, value: Any, known: Dict[str, Any]) -> DictConfig:
        names = ", ".join(sorted(known))
        if isinstance(value, str):
            if value not in known:
                raise ConfigError(
                    f"hydra.sweeper.{group}: unknown {group} {value!r}; valid: {names}"
                )
            return OmegaConf.structured(known[value]())
        if isinstance(value, (DictConfig, Mapping)):
            cfg = value if isinstance(value, DictConfig) else OmegaConf.create(dict(value))
            if not cfg.get("_target_"):
                raise ConfigError(
                    f"hydra.sweeper.{group} has no _target_; choose one with "
                    f"'hydra/sweeper/{group}=<name>' ({names})"
                )
            return cfg
        raise ConfigError(
            f"hydra.sweeper.{group} must be one of {names} (config group "
            f"hydra/sweeper/{group}), got {value!r}"
        )

    @staticmethod
    def _check_direction(setting: str, d: Any) -> str:
        if isinstance(d, str) and d.lower() in DIRECTIONS:
            return d.lower()
        name = getattr(d, "name", None)  # an Enum (official plugin's Direction)
        if isinstance(name, str) and name.lower() in DIRECTIONS:
            return name.lower()
        raise ConfigError(
            f"{setting} must be 'minimize' or 'maximize' (or a non-empty list of them for "
            f"multi-objective), got {d!r}"
        )

    def _resolve_objectives(self, direction: Any, objectives: Any) -> Tuple[Optional[List[str]], List[str]]:
        direction = _plain(direction)
        if isinstance(direction, (list, tuple)):
            if not direction:
                raise ConfigError(
                    "hydra.sweeper.direction must be 'minimize' or 'maximize' (or a non-empty "
                    "list of them for multi-objective), got []"
                )
            dirs = [self._check_direction("hydra.sweeper.direction", d) for d in direction]
        else:
            dirs = [self._check_direction("hydra.sweeper.direction", direction)]

        objectives = _plain(objectives)
        if not objectives:
            return None, dirs
        if not isinstance(objectives, (list, tuple)):
            raise ConfigError(
                "hydra.sweeper.objectives must be a list of {name: <metric>, direction: "
                f"minimize|maximize}}, got {objectives!r}"
            )
        names: List[str] = []
        obj_dirs: List[str] = []
        for i, o in enumerate(objectives):
            if isinstance(o, str):
                o = {"name": o}
            if not isinstance(o, Mapping) or not o.get("name"):
                raise ConfigError(
                    f"hydra.sweeper.objectives[{i}] must be {{name: <metric>, direction: "
                    f"minimize|maximize}}, got {o!r}"
                )
            names.append(str(o["name"]))
            obj_dirs.append(
                self._check_direction(
                    f"hydra.sweeper.objectives[{i}].direction", o.get("direction", "minimize")
                )
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"hydra.sweeper.objectives has duplicate names: {names}")
        if isinstance(direction, (list, tuple)) and dirs != obj_dirs:
            raise ConfigError(
                f"hydra.sweeper.direction {dirs} contradicts hydra.sweeper.objectives "
                f"{list(zip(names, obj_dirs))}; set only objectives"
            )
        return names, obj_dirs

    @staticmethod
    def _resolve_constraints(constraints: Any) -> List[Constraint]:
        constraints = _plain(constraints)
        if not constraints:
            return []
        if isinstance(constraints, str):
            constraints = [constraints]
        if not isinstance(constraints, (list, tuple)):
            raise ConfigError(
                "hydra.sweeper.constraints must be a list of strings such as "
                f"'val_accuracy >= 0.97', got {constraints!r}"
            )
        return [Constraint.parse(c) for c in constraints]

    # ------------------------------------------------------------------ hydra API
    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.job_idx = 0
        self.config = config
        self.hydra_context = hydra_context
        self.sweep_dir = str(config.hydra.sweep.dir)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: List[str]) -> optuna.Study:
        assert self.config is not None and self.launcher is not None
        previous_factory = _install_log_masking()
        try:
            return self._sweep(arguments)
        finally:
            logging.setLogRecordFactory(previous_factory)

    def _sweep(self, arguments: List[str]) -> optuna.Study:
        # resolve the hooks first: a typo must not cost a whole sweep
        self._custom_fn = self._load_hook("custom_search_space", self.custom_search_space)
        on_complete = self._load_hook("on_complete", self.on_complete)
        on_start = self._load_hook("on_start", self.on_start)
        if self.storage_url and self.study_name is None:
            log.warning(
                "hydra.sweeper.study_name is null: Optuna creates a new study on every run; "
                "set a study_name to resume the study and share n_trials across runs"
            )
        lines = params_config_to_lines(self.params) + list(arguments)
        space = parse_search_space(lines)
        if not space.params and not self.custom_search_space:
            log.warning(
                "the search space is empty: set hydra.sweeper.params or pass sweeps such as "
                "'x=interval(0,1)' on the command line"
            )
        storage = self._make_storage()
        sampler, n_trials = self._make_sampler(space)
        pruner = instantiate(self.pruner_cfg, _convert_="all")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                study_name=self.study_name,
                directions=self.directions,
                load_if_exists=True,
            )
            have = [d.name.lower() for d in study.directions]
            if have != self.directions:
                raise ConfigError(
                    f"study '{study.study_name}' already exists in {_redact(self.storage_url)} "
                    f"with directions {have}, but the sweeper is configured for "
                    f"{self.directions}; use another hydra.sweeper.study_name"
                )
            if self.objective_names and hasattr(study, "set_metric_names"):
                study.set_metric_names(self.objective_names)
        seed = self.sampler_cfg.get("seed")
        existing = len(study.get_trials(deepcopy=False))
        if seed is not None and existing:
            # A seeded sampler replays its sequence from the start: a re-run of the same command
            # (resume, restart after a crash) would propose the points it already ran. Derive
            # the seed from the study's progress instead (still reproducible).
            derived = (int(seed) + 1_000_003 * existing) % (2**32)
            sampler, _ = self._make_sampler(space, seed=derived)
            study.sampler = sampler
            log.info(
                "the study has %d trials: sampler seed %s -> %s (no replay of earlier proposals)",
                existing, seed, derived,
            )
        self.study = study
        log.info(
            "Optuna study '%s' | storage: %s | sampler: %s | pruner: %s | directions: %s%s | "
            "n_trials=%d (study total) n_jobs=%d",
            study.study_name,
            _redact(self.storage_url) or "in-memory",
            type(sampler).__name__,
            type(pruner).__name__,
            self.directions,
            f" (objectives: {self.objective_names})" if self.objective_names else "",
            n_trials,
            self.n_jobs,
        )
        for name, p in space.params.items():
            log.info("  search space: %s ~ %s", name, p.distribution)
        for f in space.fixed.values():
            log.info("  fixed: %s", mask_secrets(f.override))

        if on_start is not None:
            on_start(study, self.config)
        heartbeat = None
        if storage is not None and self.heartbeat_interval:
            heartbeat = _Heartbeat(study._storage, self.heartbeat_interval)
        try:
            self._run(study, space, n_trials, heartbeat)
        finally:
            if heartbeat is not None:
                heartbeat.close()

        self._write_results(study, space, n_trials)
        _runtime.set_last_study(study)
        if on_complete is not None:
            on_complete(study, self.config)
        return study

    @staticmethod
    def _load_hook(setting: str, path: Optional[str]) -> Any:
        if not path:
            return None
        try:
            return get_method(path)
        except Exception as e:
            raise ConfigError(
                f"hydra.sweeper.{setting}: cannot import {path!r} (a dotted path to a "
                f"function, e.g. my_pkg.hpo.{setting}): {e}"
            ) from e

    def get_study(self) -> Optional[optuna.Study]:
        """The study of the last sweep (also ``hydra_plugins.ecosplit_optuna_sweeper.last_study()``)."""
        return self.study

    # ------------------------------------------------------------------ building blocks
    def _make_storage(self) -> Any:
        if self.storage_url is None:
            if self.heartbeat_interval:
                log.warning("hydra.sweeper.heartbeat_interval needs an RDB storage; ignored")
            return None
        kwargs: Dict[str, Any] = {}
        if self.engine_kwargs:
            kwargs["engine_kwargs"] = dict(self.engine_kwargs)
        if self.heartbeat_interval:
            retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                if retry_cls is not None:
                    kwargs["heartbeat_stale_trial_callback"] = retry_cls(max_retry=self.max_retry)
                else:  # Optuna < 4.9
                    kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(
                        max_retry=self.max_retry
                    )
                kwargs["heartbeat_interval"] = self.heartbeat_interval
                kwargs["grace_period"] = self.grace_period
                return _rdb_storage(self.storage_url, **kwargs)
        return _rdb_storage(self.storage_url, **kwargs)

    def _make_sampler(
        self, space: SearchSpace, seed: Optional[int] = None
    ) -> Tuple[optuna.samplers.BaseSampler, int]:
        cfg = self.sampler_cfg
        if seed is not None:
            cfg = OmegaConf.merge(cfg, {"seed": seed})
        n_trials = self.n_trials
        kwargs: Dict[str, Any] = {}
        if str(cfg.get("_target_", "")).endswith("GridSampler"):
            grid = _plain(cfg.get("search_space"))
            if not grid:
                grid = {name: grid_values(name, d) for name, d in space.distributions.items()}
                kwargs["search_space"] = grid
            size = 1
            for v in grid.values():
                size *= len(v)
            if size < n_trials:
                log.info("grid sampler: n_trials capped at the grid size %d", size)
                n_trials = size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = instantiate(cfg, _convert_="all", **kwargs)
        return sampler, n_trials

    @staticmethod
    def _suggest(trial: Trial, name: str, d: BaseDistribution) -> Any:
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(name, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        raise SearchSpaceError(f"unsupported distribution for {name}: {d}")  # pragma: no cover

    def _env_overrides(self, study: optuna.Study, trial: Trial) -> List[str]:
        env = {
            _runtime.ENV_TRIAL_ID: str(trial._trial_id),
            _runtime.ENV_TRIAL_NUMBER: str(trial.number),
            _runtime.ENV_STUDY: study.study_name,
        }
        if self.storage_url and ":memory:" not in self.storage_url:
            # Hydra logs and saves the overrides: the password stays out (masked); the job
            # resolves the real URL from its own hydra.sweeper.storage (see current_trial)
            env[_runtime.ENV_STORAGE] = _redact(self.storage_url)
        return [f"++hydra.job.env_set.{k}={quote(v)}" for k, v in env.items()]

    def _configure(self, study: optuna.Study, trial: Trial, space: SearchSpace) -> List[str]:
        """Suggest the params of ``trial`` and return the overrides of its job."""
        for name, d in space.distributions.items():
            self._suggest(trial, name, d)
        extra_fixed: Dict[str, Any] = {}
        if self._custom_fn is not None:
            ret = self._custom_fn(self.config, trial)
            if ret:
                if not isinstance(ret, Mapping):
                    raise ConfigError(
                        f"hydra.sweeper.custom_search_space {self.custom_search_space} must "
                        f"return None or a dict of fixed params, got {type(ret).__name__}"
                    )
                extra_fixed = dict(ret)
        overlap = set(trial.params) & (set(space.fixed) | set(extra_fixed))
        if overlap:
            raise ConfigError(
                f"parameters {sorted(overlap)} are both searched and fixed; remove one of them"
            )
        fixed_attr = {f.name: mask_secrets(f.value_text) for f in space.fixed.values()}
        fixed_attr.update({k: mask_secrets(encode_value(v)) for k, v in extra_fixed.items()})
        if fixed_attr:
            trial.set_user_attr(FIXED_PARAMS, fixed_attr)
        overrides = space.overrides_for(trial.params)
        overrides += [f"{k}={encode_value(v)}" for k, v in extra_fixed.items()]
        return overrides + self._env_overrides(study, trial)

    @staticmethod
    def _fail(study: optuna.Study, trial: Trial, reason: str, kind: str) -> bool:
        try:
            trial.set_user_attr(FAIL_REASON, reason)
            trial.storage.set_trial_system_attr(trial._trial_id, FAIL_KIND, kind)
            study.tell(trial, state=TrialState.FAIL)
            return True
        except Exception as e:  # already finished elsewhere (e.g. failed as stale)
            log.warning("could not mark trial %d as FAIL (%s): %s", trial.number, reason, e)
            return False

    # ------------------------------------------------------------------ main loop
    def _run(
        self, study: optuna.Study, space: SearchSpace, n_trials: int, heartbeat: Optional[_Heartbeat]
    ) -> None:
        trials = self._sync(study, heartbeat)
        stats = self._stats(study, trials)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if stats["done"] or stats["failed"] or running:
            log.info(
                "resuming study '%s': %d COMPLETE/PRUNED, %d failed, %d RUNNING, %d WAITING "
                "(n_trials=%d counts all but FAIL)",
                study.study_name,
                stats["done"],
                stats["failed"],
                len(running),
                sum(t.state == TrialState.WAITING for t in trials),
                n_trials,
            )
        if running:
            log.warning(
                "trials %s are RUNNING elsewhere (or were left by a crashed run) and count "
                "towards n_trials; %s",
                running,
                "stale ones are failed and retried after grace_period"
                if heartbeat
                else "enable hydra.sweeper.heartbeat_interval to fail and retry stale ones",
            )
        progress = Progress(n_trials, stats["done"], stats["failed"], self.progress_bar)
        progress.best = stats["best"]
        fail_streak = 0
        waited_for: List[int] = []
        try:
            while True:
                trials = self._sync(study, heartbeat)
                counted = sum(t.state in COUNTED_STATES for t in trials)
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                # WAITING trials are already counted and are popped first by ask()
                k = min(self.n_jobs, n_trials - counted + waiting)
                if k <= 0:
                    running = [t.number for t in trials if t.state == TrialState.RUNNING]
                    if heartbeat is None or not running:
                        break
                    # Other processes still run trials. Stay: if one of them died, its trial
                    # goes stale, is failed and re-queued, and the retry runs here; and the
                    # on_complete hook below then sees the whole study.
                    if running != waited_for:
                        waited_for = running
                        log.info(
                            "budget used up; waiting for trials %s RUNNING elsewhere (stale "
                            "ones are retried here)", running,
                        )
                    time.sleep(min(self.heartbeat_interval, 1.0))
                    continue
                batch = self._ask_batch(study, space, k, n_trials)
                if not batch:
                    continue
                progress.before_batch()
                returns = self._launch(study, batch, heartbeat)
                outcomes = [self._outcome(t, r) for (t, _), r in zip(batch, returns)]
                told: List[Tuple[FrozenTrial, Outcome]] = []
                for (trial, _), outcome in zip(batch, outcomes):
                    frozen = self._tell(study, trial, outcome)
                    if frozen is not None:
                        told.append((frozen, outcome))
                trials = study.get_trials(deepcopy=False)
                stats = self._stats(study, trials)
                for frozen, outcome in told:
                    progress.trial_finished(
                        number=frozen.number,
                        state=frozen.state.name,
                        values=frozen.values,
                        duration=frozen.duration.total_seconds() if frozen.duration else None,
                        done=stats["done"],
                        failed=stats["failed"],
                        best=stats["best"],
                        reason=outcome.fail_reason,
                    )
                    fail_streak = fail_streak + 1 if outcome.state == "FAIL" else 0
                config_errors = [o.config_error for o in outcomes if o.config_error]
                if config_errors:
                    raise ConfigError(config_errors[0])
                self._check_failures(stats, told, fail_streak, n_trials)
        finally:
            progress.close()
        left = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if left:
            log.info("done here; trials %s are still RUNNING in other processes", left)

    def _sync(self, study: optuna.Study, heartbeat: Optional[_Heartbeat]) -> List[FrozenTrial]:
        if heartbeat is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        return study.get_trials(deepcopy=False)

    def _ask_batch(
        self, study: optuna.Study, space: SearchSpace, k: int, n_trials: int
    ) -> List[Tuple[Trial, List[str]]]:
        batch: List[Tuple[Trial, List[str]]] = []
        for _ in range(k):
            with warnings.catch_warnings():
                # heartbeats are recorded by this sweeper, not by Study.optimize
                warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = study.ask()
            try:
                overrides = self._configure(study, trial, space)
            except KeyboardInterrupt:
                for t in [trial] + [t for t, _ in batch]:
                    if self._fail(study, t, "interrupted", "interrupted"):
                        self._requeue(study, t, self.max_retry)
                raise
            except Exception as e:
                self._fail(study, trial, f"could not configure the trial: {describe_exception(e)}", "config")
                for t, _ in batch:
                    self._fail(study, t, "sweep aborted while configuring the batch", "config")
                if isinstance(e, (ConfigError, SearchSpaceError)):
                    raise
                raise ConfigError(
                    f"could not configure trial {trial.number}: {describe_exception(e)}"
                ) from e
            batch.append((trial, overrides))

        # Several processes may ask concurrently: keep only the trials that rank within the
        # first n_trials counted trials (by number); the others are surplus.
        counted = sorted(
            t.number for t in study.get_trials(deepcopy=False, states=COUNTED_STATES)
        )
        allowed = set(counted[:n_trials])
        kept = []
        for trial, overrides in batch:
            if trial.number in allowed:
                kept.append((trial, overrides))
            else:
                log.info("trial %d is surplus (the study reached n_trials=%d)", trial.number, n_trials)
                self._fail(
                    study, trial, f"surplus: the study already had n_trials={n_trials}", "surplus"
                )
        return kept

    def _launch(
        self, study: optuna.Study, batch: List[Tuple[Trial, List[str]]], heartbeat: Optional[_Heartbeat]
    ) -> Sequence[JobReturn]:
        ids = [t._trial_id for t, _ in batch]
        for t, _ in batch:
            _runtime.register_trial(study.study_name, t)
        if heartbeat is not None:
            heartbeat.add(ids)
        try:
            returns = self.launcher.launch([o for _, o in batch], initial_job_idx=self.job_idx)
        except KeyboardInterrupt:
            # FAIL (not counted) and re-queued with the same params, so that re-running the
            # same command continues with exactly this configuration
            for t, _ in batch:
                if self._fail(study, t, "interrupted", "interrupted"):
                    self._requeue(study, t, self.max_retry)
            raise
        except Exception as e:
            reason = f"launcher failed: {describe_exception(e)}"
            for t, _ in batch:
                if self._fail(study, t, reason, "launcher"):
                    self._retry_if_configured(study, t)
            raise
        finally:
            if heartbeat is not None:
                heartbeat.remove(ids)
            for t, _ in batch:
                _runtime.unregister_trial(study.study_name, t)
        self.job_idx += len(batch)
        if len(returns) != len(batch):  # pragma: no cover - launcher contract
            raise RuntimeError(f"launcher returned {len(returns)} results for {len(batch)} jobs")
        return returns

    @staticmethod
    def _retry_if_configured(study: optuna.Study, trial: Trial) -> None:
        """A launcher crash means the job's process died: re-queue like a stale trial."""
        storage = study._storage
        get_cb = getattr(storage, "get_heartbeat_stale_trial_callback", None) or getattr(
            storage, "get_failed_trial_callback", None
        )
        cb = get_cb() if get_cb is not None else None
        if cb is None:
            return
        EcosplitOptunaSweeperImpl._requeue(study, trial, callback=cb)

    @staticmethod
    def _requeue(
        study: optuna.Study, trial: Trial, max_retry: Optional[int] = None, callback: Any = None
    ) -> None:
        """Add a WAITING copy of the FAILed ``trial`` (same params; ``failed_trial`` and
        ``retry_history`` system attrs as Optuna's retry callback), at most ``max_retry`` times.
        The copy does not inherit the FAIL's ``fail_reason`` / fail kind."""
        if callback is None:
            retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                callback = retry_cls(max_retry=max_retry)
        try:
            frozen = copy.deepcopy(study._storage.get_trial(trial._trial_id))
            frozen.user_attrs.pop(FAIL_REASON, None)
            frozen.system_attrs.pop(FAIL_KIND, None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback(study, frozen)
        except Exception as e:  # pragma: no cover
            log.warning("could not re-queue trial %d: %s", trial.number, e)

    def _outcome(self, trial: Trial, ret: JobReturn) -> Outcome:
        if ret.status == JobStatus.COMPLETED:
            return interpret_return(
                ret.return_value,
                objective_names=self.objective_names,
                n_objectives=len(self.directions),
                constraints=self.constraints,
                params=trial.params,
            )
        exc = ret._return_value
        if isinstance(exc, optuna.TrialPruned):
            return Outcome("PRUNED")
        if isinstance(exc, BaseException):
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            if not self._logged_traceback:
                self._logged_traceback = True
                log.warning("trial %d raised (first failure of this run):\n%s", trial.number, tb)
            else:
                log.debug("trial %d raised:\n%s", trial.number, tb)
            return Outcome("FAIL", fail_reason=f"the task raised {describe_exception(exc)}")
        return Outcome("FAIL", fail_reason=f"the job did not complete (status {ret.status})")

    def _tell(self, study: optuna.Study, trial: Trial, outcome: Outcome) -> Optional[FrozenTrial]:
        try:
            for k, v in outcome.user_attrs.items():
                trial.set_user_attr(k, v)
            if outcome.state == "COMPLETE":
                for name, value in outcome.constraints:
                    trial.set_constraint(name, value)
                if outcome.constraints:
                    trial.set_user_attr(CONSTRAINTS, [v for _, v in outcome.constraints])
                return self._safe_tell(study, trial, values=outcome.values)
            if outcome.state == "PRUNED":
                return self._safe_tell(study, trial, state=TrialState.PRUNED)
            trial.set_user_attr(FAIL_REASON, outcome.fail_reason or "unknown")
            trial.storage.set_trial_system_attr(trial._trial_id, FAIL_KIND, "task")
            return self._safe_tell(study, trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError as e:
            log.warning(
                "trial %d was finished by someone else (failed as stale by another worker?); "
                "its result is discarded: %s",
                trial.number,
                e,
            )
            return None

    @staticmethod
    def _safe_tell(study: optuna.Study, trial: Trial, **kwargs: Any) -> FrozenTrial:
        try:
            return study.tell(trial, **kwargs)
        except RuntimeError as e:
            # GridSampler calls study.stop() once the grid is exhausted, which is only
            # allowed inside optimize(); the trial itself has been stored by then.
            if "Study.stop" not in str(e):
                raise
            return study._storage.get_trial(trial._trial_id)

    def _stats(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> Dict[str, Any]:
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        failed = sum(
            t.state == TrialState.FAIL and t.system_attrs.get(FAIL_KIND) == "task" for t in trials
        )
        best = "-"
        if any(t.state == TrialState.COMPLETE for t in trials):
            try:
                if len(self.directions) == 1:
                    best = f"{study.best_value:.6g} (trial {study.best_trial.number})"
                else:
                    best = f"{len(study.best_trials)} trial(s) on the Pareto front"
            except (ValueError, RuntimeError):
                best = "- (no feasible trial)"
        return {"done": done, "failed": failed, "best": best}

    def _check_failures(
        self,
        stats: Dict[str, Any],
        told: List[Tuple[FrozenTrial, Outcome]],
        fail_streak: int,
        n_trials: int,
    ) -> None:
        failed, done = stats["failed"], stats["done"]
        finished = failed + done
        last = next((o.fail_reason for _, o in reversed(told) if o.state == "FAIL"), None)
        if failed and failed / finished > self.max_failure_rate:
            raise SweepAbortedError(
                f"sweep aborted: {failed} of {finished} finished trials of the study failed "
                f"({failed / finished:.0%}), more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate} (valid range [0, 1]). Last failure: {last}"
            )
        # FAIL trials do not count towards n_trials, so with max_failure_rate=1 a task that
        # always fails would loop forever: stop after n_trials failures in a row.
        if self.max_failure_rate >= 1.0 and fail_streak >= n_trials:
            raise SweepAbortedError(
                f"sweep aborted: the last {fail_streak} trials all failed (n_trials={n_trials} "
                f"failures in a row, with hydra.sweeper.max_failure_rate=1); last failure: {last}"
            )

    # ------------------------------------------------------------------ results
    def _write_results(self, study: optuna.Study, space: SearchSpace, n_trials: int) -> None:
        assert self.config is not None
        trials = study.get_trials(deepcopy=False)
        counts = {s.name: 0 for s in TrialState}
        for t in trials:
            counts[t.state.name] += 1
        res: Dict[str, Any] = {
            "name": "ecosplit_optuna",
            "study_name": study.study_name,
            "storage": _redact(self.storage_url),
            "directions": list(self.directions),
            "objectives": self.objective_names,
            "constraints": [c.text for c in self.constraints] or None,
            "n_trials": n_trials,
            "trial_states": counts,
        }
        if space.fixed:
            res["fixed_params"] = {f.name: mask_secrets(f.value_text) for f in space.fixed.values()}
        if len(self.directions) == 1:
            try:
                bt = study.best_trial
                res.update(
                    best_trial=bt.number,
                    best_params=dict(bt.params),
                    best_value=bt.value,
                    best_user_attrs=dict(bt.user_attrs),
                )
            except (ValueError, RuntimeError):
                res.update(best_trial=None, best_params=None, best_value=None)
                log.warning("no (feasible) COMPLETE trial: no best trial to report")
        else:
            res["best_trials"] = [
                {
                    "number": t.number,
                    "params": dict(t.params),
                    "values": list(t.values),
                    "user_attrs": dict(t.user_attrs),
                }
                for t in sorted(study.best_trials, key=lambda t: t.number)
            ]
        out_dir = Path(self.sweep_dir or str(self.config.hydra.sweep.dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "optimization_results.yaml"
        OmegaConf.save(OmegaConf.create(_yaml_safe(res)), path)
        if len(self.directions) == 1:
            log.info("Best: value=%s params=%s", res.get("best_value"), res.get("best_params"))
        else:
            log.info("Pareto front: %d trial(s)", len(res["best_trials"]))
        log.info("results written to %s", path)


def _yaml_safe(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _yaml_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_yaml_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)
