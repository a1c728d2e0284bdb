"""The sweep: open the study, then launch batches of trials until the budget is used up.

One iteration = one *batch*:

1. free the RUNNING trials of dead processes (same host: at once; any host: heartbeat
   older than grace_period); each is told FAIL and re-queued WAITING with the same params;
2. count the study's COMPLETE + PRUNED + RUNNING + WAITING trials (all processes);
   ``k = min(n_jobs, n_trials - counted + waiting)``; stop when ``k <= 0``;
3. ask ``k`` trials (WAITING ones first), record this process as their owner and suggest the
   search space; trials another process made surplus in the meantime are told FAIL;
4. ``launcher.launch(batch)`` (blocks until the whole batch finished); the task is wrapped so
   that ``sys.exit()`` inside it is an ordinary failure of that one job;
5. tell every trial COMPLETE / PRUNED / FAIL and apply the failure policy.

Failure policy. A *task failure* (exception, non-finite or non-numeric objective, exit
status other than 2) is FAIL with its reason; the sweep goes on until this run's task
failures exceed ``max_failure_rate`` x this run's budget. A *usage error* (the task exits with
status 2, an objective or constraint name the task does not return, a search space Optuna
refuses) is FAIL with its reason too, is never counted, and stops the sweep at once:
every trial would fail alike. Whatever stops the sweep early (usage error, failure rate,
interrupt, crash) first finishes or re-queues every trial this process owns, then calls the
``on_abort`` hook with "FAILED" or "KILLED".
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from . import _interrupt, _runtime
from ._factory import derived_seed, is_nop, make_pruner, make_sampler
from ._job_config import JobConfigLoader
from ._outcome import FIXED_PARAMS, ConfigError, Outcome, describe_exception
from ._progress import Progress
from ._results import write_results
from ._search_space import SearchSpace, SearchSpaceError, params_config_to_lines, parse_search_space
from ._settings import HOOKS, Settings, load_exceptions, load_hook
from ._storage import (
    FAIL_KIND,
    OWNER,
    Heartbeat,
    ask,
    fail_trial,
    free_dead_trials,
    host_name,
    owner_record,
    rdb_storage,
    requeue,
    retrying,
    unwatched,
)
from ._study import definition, open_study
from ._runtime import feasible
from ._trials import GuardedTask, OutcomeReader, configure, fixed_params_attr, tell
from .masking import install_log_masking, mask_secrets, redact_url

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

HYDRA_USAGE_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
WAIT_POLL_S = 0.2  # re-reading the study while waiting for trials RUNNING in other processes


class FailKind:
    """Values of the FAIL_KIND system attribute: why this sweeper failed a trial."""

    TASK = "task"  # the task failed (counted in max_failure_rate)
    CONFIG = "config"  # a usage error: the sweep stopped (not counted)
    NOT_RUN = "not_run"  # its batch stopped before it ran (re-queued)
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGINT while it ran (re-queued)
    LAUNCHER = "launcher"  # the launcher itself raised (re-queued)
    SURPLUS = "surplus"  # asked while another process filled the study up to n_trials
    DEAD = "dead"  # its process died (heartbeat stale / owner gone; re-queued)


class SweepAbortedError(RuntimeError):
    """Too many of this run's trials failed (max_failure_rate): the sweep stopped."""


class LauncherError(RuntimeError):
    """The launcher itself failed (e.g. a worker process was killed): the batch was re-queued."""


class UsageError(ConfigError):
    """A trial showed a configuration or input error: the sweep stopped at it."""


class EcosplitOptunaSweeperImpl(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**settings)
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.job_idx = 0
        self.study: Optional[optuna.Study] = None
        self.sweep_dir: Optional[str] = None
        self._read_outcome = OutcomeReader(self.settings)
        self._custom_fn: Any = None
        self._owned: Dict[int, Trial] = {}  # trial id -> trial this process has RUNNING
        self.released: List[int] = []  # numbers of the trials re-queued as the last sweep stopped
        self._heartbeat: Optional[Heartbeat] = None
        self._owner: Dict[str, Any] = {}  # this process's owner record (one per sweep)
        self._fixed_attr: Dict[str, Any] = {}  # the fixed_params user attr (one per sweep)

    # ------------------------------------------------------------------ hydra API
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.job_idx = 0
        self.config = config
        self.sweep_dir = str(config.hydra.sweep.dir)
        # jobs that differ from the previous one in values only are not composed from scratch
        self.job_configs = JobConfigLoader(hydra_context.config_loader)
        context = HydraContext(config_loader=self.job_configs, callbacks=hydra_context.callbacks)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=context, task_function=GuardedTask(task_function)
        )

    def sweep(self, arguments: List[str]) -> optuna.Study:
        assert self.config is not None and self.launcher is not None
        previous_factory = install_log_masking()
        try:
            with _interrupt.counting(), _interrupt.terminating():  # SIGTERM as Ctrl-C
                return self._sweep(arguments)
        finally:
            logging.setLogRecordFactory(previous_factory)

    def get_study(self) -> Optional[optuna.Study]:
        """The study of the last sweep (also ``hydra_plugins.ecosplit_optuna_sweeper.last_study()``)."""
        return self.study

    # ------------------------------------------------------------------ the sweep
    def _sweep(self, arguments: List[str]) -> optuna.Study:
        s = self.settings
        # everything that can be checked is checked before a storage is opened
        hooks = {h: load_hook(h, getattr(s, h)) for h in HOOKS}
        self._read_outcome.expected = load_exceptions("expected_failures", s.expected_failures)
        self._custom_fn = hooks["custom_search_space"]
        if s.storage_url and s.study_name is None:
            log.warning(
                "hydra.sweeper.study_name is null: Optuna creates a new study on every run; "
                "set a study_name to resume the study and share n_trials across runs"
            )
        space = parse_search_space(params_config_to_lines(s.params) + list(arguments))
        check_keys(space, self.config)
        if not space.params and not s.custom_search_space:
            log.warning(
                "the search space is empty: set hydra.sweeper.params or pass sweeps such as "
                "'x=interval(0,1)' on the command line"
            )
        app_definition = hooks["definition"](self.config) if hooks["definition"] else None
        if app_definition is not None and not isinstance(app_definition, Mapping):
            raise ConfigError(
                f"hydra.sweeper.definition {s.definition} must return a mapping, got "
                f"{type(app_definition).__name__}"
            )
        defn = definition(s, space, app_definition)
        sampler, n_trials = make_sampler(s.sampler_cfg, space, s.n_trials)
        if s.multi_objective and not is_nop(s.pruner_cfg):
            log.warning(
                "hydra.sweeper.pruner (%s) is not used: Optuna cannot prune multi-objective "
                "trials, so every trial runs to its end", s.pruner_cfg.get("_target_"),
            )
        pruner = make_pruner(s.pruner_cfg, len(s.directions))
        if s.storage_url is None and s.heartbeat_interval:
            log.info("in-memory study: no heartbeats (nothing outlives this process)")
        storage = (
            rdb_storage(s.storage_url, s.engine_kwargs, s.heartbeat_interval, s.grace_period,
                        sqlite_wal=s.sqlite_wal)
            if s.storage_url else None
        )
        study = open_study(s, storage, sampler, pruner, defn)
        seed = s.sampler_cfg.get("seed")
        existing = len(study.get_trials(deepcopy=False))
        if seed is not None and existing:
            derived = derived_seed(seed, existing)
            study.sampler, _ = make_sampler(s.sampler_cfg, space, s.n_trials, seed=derived)
            log.info("the study has %d trials: sampler seed %s -> %s (no replay of earlier "
                     "proposals)", existing, seed, derived)
        self.study = study
        log.info(
            "Optuna study '%s' | storage: %s | sampler: %s | pruner: %s | directions: %s%s | "
            "n_trials=%d (study total) n_jobs=%d | heartbeat: %s | sweeper pid %d on %s",
            study.study_name, redact_url(s.storage_url) or "in-memory", type(study.sampler).__name__,
            type(pruner).__name__, s.directions,
            f" (objectives: {s.objective_names})" if s.objective_names else "", n_trials, s.n_jobs,
            f"every {s.heartbeat_interval} s, grace {s.grace_period} s" if s.heartbeat_on else "off",
            os.getpid(), host_name(),
        )
        for name, p in space.params.items():
            log.info("  search space: %s ~ %s", name, p.distribution)
        for f in space.fixed.values():
            log.info("  fixed: %s", mask_secrets(f.override))

        # see Heartbeat: an SQLite file is shared on one machine only, so one clock
        heartbeat = (Heartbeat(study._storage, s.heartbeat_interval,
                               at_once=not s.storage_url.startswith("sqlite"))
                     if s.heartbeat_on else None)
        self._heartbeat = heartbeat
        try:
            if hooks["on_start"] is not None:
                hooks["on_start"](study, self.config)
            self._run(study, space, n_trials, heartbeat)
            write_results(study, s, space, n_trials, Path(self.sweep_dir or "."))
            _runtime.set_last_study(study)
            if hooks["on_complete"] is not None:
                hooks["on_complete"](study, self.config)
        except BaseException as e:
            self._release_owned(study, e)
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            reason = _interrupt.reason(e) if status == "KILLED" else describe_exception(e)
            self._call_on_abort(hooks["on_abort"], study, status, reason)
            raise
        finally:
            if heartbeat is not None:
                heartbeat.close()
        return study

    def _call_on_abort(self, hook: Any, study: optuna.Study, status: str, reason: str) -> None:
        if hook is None:
            return
        try:
            hook(study, self.config, status, mask_secrets(reason))
        except BaseException as e:  # the sweep is ending anyway: report, don't mask the cause
            log.warning("hydra.sweeper.on_abort failed: %s", describe_exception(e))

    def _release_owned(self, study: optuna.Study, e: BaseException) -> None:
        """The sweep stops: no trial of this process may stay RUNNING. Each is failed and
        re-queued with the same params, so that re-running the same command continues."""
        if not self._owned:
            return
        kind = FailKind.INTERRUPTED if isinstance(e, KeyboardInterrupt) else FailKind.NOT_RUN
        reason = "interrupted" if kind == FailKind.INTERRUPTED else f"the sweep stopped: {describe_exception(e)}"
        for trial_id, trial in list(self._owned.items()):
            if fail_trial(study, trial_id, trial.number, reason, kind):
                requeue(study, trial_id, trial.number, self.settings.max_retry)
                self.released.append(trial.number)
            self._disown(trial_id)

    # ------------------------------------------------------------------ main loop
    def _run(self, study: optuna.Study, space: SearchSpace, n_trials: int, heartbeat: Optional[Heartbeat]) -> None:
        s = self.settings
        self._next_job_dir = _next_free_job_number(Path(self.sweep_dir or "."))
        # work done once per sweep, not per trial
        self._owner = owner_record(s.heartbeat_interval if s.heartbeat_on else None)
        self._fixed_attr = fixed_params_attr(space)
        trials = self._sync(study)
        stats = self._stats(study, trials)
        counted = sum(t.state in COUNTED_STATES for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if trials:
            log.info(
                "resuming study '%s': %d COMPLETE/PRUNED, %d failed, %d RUNNING, %d WAITING "
                "(n_trials=%d counts all but FAIL)", study.study_name, stats["done"],
                stats["failed"], len(running), waiting, n_trials,
            )
        if running:
            log.warning(
                "trials %s are RUNNING in other processes and count towards n_trials; %s",
                running, "they are freed if their process dies" if heartbeat
                else "with heartbeats off (hydra.sweeper.heartbeat_interval=null) only those of "
                "dead processes on this host are freed",
            )
        # the failure policy applies to this run's trials only
        budget = max(1, n_trials - counted + waiting)
        allowed_failures = math.floor(s.max_failure_rate * budget + 1e-9)
        failed_here = 0
        fail_streak = 0
        progress = Progress(n_trials, stats["done"], stats["failed"], s.progress_bar)
        progress.best = stats["best"]
        waited_for: List[int] = []
        try:
            while True:
                # `trials`: the study as read by the last _sync (one read per batch, after
                # freeing the trials of dead processes)
                counted = sum(t.state in COUNTED_STATES for t in trials)
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                # WAITING trials are already counted and are popped first by ask()
                k = min(s.n_jobs, n_trials - counted + waiting)
                if k <= 0:
                    watch = self._watchable_running(study, trials)
                    if heartbeat is None or not watch:
                        break
                    # Other processes still run trials. Stay: if one of them dies, its trial
                    # is freed and re-queued and its retry runs here; on_complete then sees
                    # the whole study.
                    if watch != waited_for:
                        waited_for = watch
                        log.info("budget used up; waiting for trials %s RUNNING elsewhere "
                                 "(freed and retried here if their process dies)", watch)
                    # a few cheap reads a second: the last trial elsewhere ending is seen at once
                    # (on_complete then runs here without delaying the sweep's end)
                    time.sleep(WAIT_POLL_S)
                    trials = self._sync(study)
                    continue
                batch = self._ask_batch(study, space, k, n_trials, waiting > 0)
                if not batch:
                    trials = self._sync(study)
                    continue
                progress.before_batch()
                returns = self._launch(study, batch)
                outcomes = [self._read_outcome(t, r) for (t, _), r in zip(batch, returns)]
                told = self._tell_batch(study, batch, outcomes)
                trials = self._sync(study)
                stats = self._stats(study, trials)
                for frozen, outcome in told:
                    progress.trial_finished(
                        number=frozen.number, state=frozen.state.name, values=frozen.values,
                        duration=frozen.duration.total_seconds() if frozen.duration else None,
                        done=stats["done"], failed=stats["failed"], best=stats["best"],
                        reason=outcome.fail_reason,
                    )
                    is_task_failure = outcome.state == "FAIL" and not outcome.config_error
                    failed_here += is_task_failure
                    fail_streak = fail_streak + 1 if is_task_failure else 0
                usage = next((o.config_error for o in outcomes if o.config_error), None)
                if usage:
                    number = next(t.number for (t, _), o in zip(batch, outcomes) if o.config_error)
                    raise UsageError(f"trial {number}: {usage}")
                self._check_failures(told, failed_here, budget, allowed_failures, fail_streak, n_trials)
        finally:
            progress.close()
        left = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if left:
            log.info("done here; trials %s are still RUNNING in other processes", left)

    def _sync(self, study: optuna.Study) -> List[FrozenTrial]:
        """Free the trials of dead processes, then return the study's trials: one read of the
        study, a second only when something was freed."""
        trials = retrying(lambda: study.get_trials(deepcopy=False), "reading the study")
        if self.settings.storage_url:
            freed = retrying(
                lambda: free_dead_trials(study, self.settings.grace_period if self.settings.heartbeat_on
                                         else None, self.settings.max_retry, self._owned, trials),
                "freeing trials of dead processes",
            )
            if freed:
                trials = retrying(lambda: study.get_trials(deepcopy=False), "reading the study")
        return trials

    def _watchable_running(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> List[int]:
        """RUNNING trials worth waiting for: those that are freed if their process dies."""
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if not running:
            return []
        blind = set(unwatched(study, trials))
        if blind and not getattr(self, "_told_blind", False):
            self._told_blind = True
            log.warning("not waiting for trials %s: nothing here can free them (no heartbeat, and no "
                        "owner record or an owner with heartbeats off on another machine)", sorted(blind))
        return [n for n in running if n not in blind]

    def _own(self, study: optuna.Study, waiting: bool = True) -> Trial:
        """Ask a trial and make it this process's at once: owner recorded (with the fixed
        params, in the transaction that creates it), registered (so an interrupt frees it),
        heartbeat started. Ctrl-C is held back until that is done: a RUNNING trial without an
        owner could never be freed. ``ask`` is not retried: a lost acknowledgement would leave
        a trial nobody owns. ``waiting``: the last read of the study saw WAITING trials,
        which are taken first."""
        system_attrs = {OWNER: self._owner} if self.settings.storage_url else {}
        user_attrs = {FIXED_PARAMS: self._fixed_attr} if self._fixed_attr else {}
        with _interrupt.deferred(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = ask(study, waiting, user_attrs, system_attrs)
            self._owned[trial._trial_id] = trial
            if self._heartbeat is not None:
                self._heartbeat.add([trial._trial_id])
        return trial

    def _disown(self, trial_id: int) -> None:
        self._owned.pop(trial_id, None)
        if self._heartbeat is not None:
            self._heartbeat.remove([trial_id])

    def _ask_batch(self, study: optuna.Study, space: SearchSpace, k: int, n_trials: int,
                   waiting: bool = True) -> List[Tuple[Trial, List[str]]]:
        s = self.settings
        batch: List[Tuple[Trial, List[str]]] = []
        for _ in range(k):
            trial = self._own(study, waiting)
            try:
                overrides = configure(s, study, trial, space, self._custom_fn, self.config, self._fixed_attr)
            except (ConfigError, SearchSpaceError) as e:
                self._finish(study, trial, str(e), FailKind.CONFIG)
                raise UsageError(f"trial {trial.number}: {e}") from e
            except Exception as e:
                self._finish(study, trial, f"could not configure the trial: {describe_exception(e)}", FailKind.CONFIG)
                raise UsageError(f"hydra.sweeper.custom_search_space: trial {trial.number}: {describe_exception(e)}") from e
            batch.append((trial, overrides))

        # Several processes may ask concurrently: keep only the trials that rank within the
        # first n_trials counted trials (by number); the others are surplus. A trial numbered
        # below n_trials ranks below n_trials whatever the others are: no read needed.
        if all(t.number < n_trials for t, _ in batch):
            return batch
        counted = sorted(t.number for t in study.get_trials(deepcopy=False, states=COUNTED_STATES))
        allowed = set(counted[:n_trials])
        kept = []
        for trial, overrides in batch:
            if trial.number in allowed:
                kept.append((trial, overrides))
            else:
                log.info("trial %d is surplus (the study reached n_trials=%d)", trial.number, n_trials)
                self._finish(study, trial, f"surplus: the study already had n_trials={n_trials}", FailKind.SURPLUS)
        return kept

    def _finish(self, study: optuna.Study, trial: Trial, reason: str, kind: str) -> bool:
        """FAIL a trial of this process with its reason (it is no longer owned here)."""
        done = fail_trial(study, trial._trial_id, trial.number, reason, kind)
        self._disown(trial._trial_id)
        return done

    def _launch(self, study: optuna.Study, batch: List[Tuple[Trial, List[str]]]) -> Sequence[JobReturn]:
        for t, _ in batch:
            _runtime.register_trial(study.study_name, t)
        # job folders continue from the study's trials and from what the sweep dir holds,
        # so a resumed sweep never overwrites an earlier job's folder
        first = max(self.job_idx, self._next_job_dir, min(t.number for t, _ in batch))
        mark = _interrupt.count()
        try:
            returns = self.launcher.launch([o for _, o in batch], initial_job_idx=first)
            # a job's error raised after a Ctrl-C hides it (see _interrupt); a task that handled
            # the KeyboardInterrupt itself and returned keeps its result (and a pruned job is no error)
            if _interrupt.interrupted_since(mark) and any(
                    r.status == JobStatus.FAILED and not isinstance(r._return_value, optuna.TrialPruned)
                    for r in returns):
                raise _interrupt.raised()
        except KeyboardInterrupt:
            raise  # _release_owned re-queues the batch
        except BaseException as e:
            if _interrupt.interrupted_since(mark):  # e.g. OmegaConf's error while it composed a job
                raise _interrupt.raised() from e
            self._launch_failed(study, batch, e)
        finally:
            for t, _ in batch:
                _runtime.unregister_trial(study.study_name, t)
        self.job_idx = first + len(batch)
        if len(returns) != len(batch):  # pragma: no cover - launcher contract
            raise RuntimeError(f"launcher returned {len(returns)} results for {len(batch)} jobs")
        return returns

    def _launch_failed(self, study: optuna.Study, batch: List[Tuple[Trial, List[str]]], e: BaseException) -> NoReturn:
        """The launcher raised: FAIL the batch and raise the sweep's error for it."""
        if isinstance(e, HYDRA_USAGE_ERRORS):
            # a job's config does not compose (e.g. a key of hydra.sweeper.params that the
            # config lacks): every trial would fail alike
            reason = f"the job's config does not compose: {' '.join(str(e).split())}"
            for t, _ in batch:
                self._finish(study, t, reason, FailKind.CONFIG)
            raise UsageError(f"trial {batch[0][0].number}: {reason}") from e
        # the launcher itself failed (e.g. a worker process died): free the batch
        reason = f"launcher failed: {describe_exception(e)}"
        for t, _ in batch:
            if self._finish(study, t, reason, FailKind.LAUNCHER):
                requeue(study, t._trial_id, t.number, self.settings.max_retry)
        numbers = [t.number for t, _ in batch]
        raise LauncherError(f"{reason.splitlines()[0]}; trials {numbers} were re-queued with the "
                            "same params: re-run the same command to continue") from e

    def _tell_batch(self, study: optuna.Study, batch: List[Tuple[Trial, List[str]]], outcomes: List[Outcome]) -> List[Tuple[FrozenTrial, Outcome]]:
        """Tell every trial of the batch, even when one tell fails (the others must not stay
        RUNNING); the first error is raised after the rest were told."""
        told: List[Tuple[FrozenTrial, Outcome]] = []
        first_error: Optional[BaseException] = None
        for (trial, _), outcome in zip(batch, outcomes):
            kind = FailKind.CONFIG if outcome.config_error else FailKind.TASK
            try:
                frozen = tell(study, trial, outcome, kind)
            except Exception as e:
                log.warning("could not tell trial %d (%s): %s", trial.number, outcome.state, describe_exception(e))
                first_error = first_error or e
                continue
            self._disown(trial._trial_id)  # beats until told: a slow tell must not look dead
            if frozen is not None:
                told.append((frozen, outcome))
        if first_error is not None:
            raise first_error
        return told

    def _stats(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> Dict[str, Any]:
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        failed = sum(t.state == TrialState.FAIL and t.system_attrs.get(FAIL_KIND) == FailKind.TASK for t in trials)
        best = "-"
        if any(t.state == TrialState.COMPLETE for t in trials):
            if len(self.settings.directions) == 1:
                # study.best_trial's choice (the best feasible COMPLETE trial), from the trials
                # in hand instead of two more queries
                sign = -1.0 if self.settings.directions[0] == "maximize" else 1.0
                ok = [t for t in trials if feasible(t)]
                top = min(ok, key=lambda t: (sign * t.values[0], t.number)) if ok else None
                best = f"{top.values[0]:.6g} (trial {top.number})" if top else "- (no feasible trial)"
            else:
                try:
                    best = f"{len(study.best_trials)} trial(s) on the Pareto front"
                except (ValueError, RuntimeError):
                    best = "- (no feasible trial)"
        return {"done": done, "failed": failed, "best": best}

    def _check_failures(self, told: List[Tuple[FrozenTrial, Outcome]], failed: int, budget: int,
                        allowed: int, fail_streak: int, n_trials: int) -> None:
        last = next((o.fail_reason for _, o in reversed(told) if o.state == "FAIL"), None)
        rate = self.settings.max_failure_rate
        if failed > allowed:
            raise SweepAbortedError(
                f"sweep aborted: {failed} of this run's {budget} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={rate} allows ({rate} x {budget}, rounded down: {allowed}"
                f"{'; raise it, up to 1, to let more fail' if rate < 1 else ''}). "
                f"Last failure: {last}"
            )
        # FAIL trials do not count towards n_trials, so with max_failure_rate=1 a task that
        # always fails would loop forever: stop after n_trials failures in a row.
        if rate >= 1.0 and fail_streak >= n_trials:
            raise SweepAbortedError(
                f"sweep aborted: the last {fail_streak} trials all failed (n_trials={n_trials} "
                f"failures in a row, with hydra.sweeper.max_failure_rate=1); last failure: {last}"
            )


def check_keys(space: SearchSpace, config: Any) -> None:
    """Every searched or fixed key without a +/++/~ prefix must exist in the config (Hydra
    would refuse every job); checked before the study is opened or defined."""
    if config is None:
        return
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default=None) or {})
    lines = [(p.name, p.prefix) for p in space.params.values()]
    lines += [(f.name, f.override[: len(f.override) - len(f.override.lstrip("+~"))]) for f in space.fixed.values()]
    for name, prefix in lines:
        if prefix or "@" in name or "/" in name or name in groups:  # config groups choose files
            continue
        if OmegaConf.select(config, name, default=_ABSENT) is _ABSENT:
            raise ConfigError(
                f"hydra.sweeper.params: '{name}' is not a key of the config; fix the name, or "
                f"add a new key with '+{name}=...'"
            )


_ABSENT = object()


def _next_free_job_number(sweep_dir: Path) -> int:
    """1 + the highest numeric job folder already in the sweep dir (0 when none)."""
    try:
        numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)]
    except OSError:
        return 0
    return max(numbers) + 1 if numbers else 0
