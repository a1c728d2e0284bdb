"""One Optuna trial = train (cached) -> prune -> evaluate -> eq. (8); and the sweep's MLflow edges.

``run_trial`` is the task ``sweep.py`` hands to the ecosplit_optuna sweeper. In the sweeper
process: ``study_definition`` first, before the study is opened (validates the settings and says
what a re-run must not change), ``on_start`` before any trial (tracking store, experiment, parent
run), ``on_complete`` at the end (Pareto front, best trial, the model picked by ``selection.rule``
registered through ``pipeline.front``, which also serves ``python -m pipeline.front``), or ``on_abort``
when the sweep stops early (parent and orphaned trial runs FAILED or KILLED with the reason).

Several workers (``sweep.py -m`` on several machines, one study, one tracking server) share one
parent run (the oldest tagged with the study). Every worker's ``on_complete`` recomputes the
front over the whole study; a worker that sees fewer COMPLETE trials than the parent run already
records leaves the parent's artifacts alone, and the parent run is only ended once no trial is
RUNNING or WAITING. With heartbeats (``hydra.sweeper.heartbeat_interval``, on by default) the
sweeper waits for the other workers' trials before ``on_complete``, so every worker logs the
whole front.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import optuna
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydra_plugins.ecosplit_optuna_sweeper._settings import absolute_sqlite

from . import objective, tracking
from .cache import DATA_KEYS_IGNORED, ModelCache, cache_experiment_id, training_key
from .cli import freeze_heap, user_errors_exit
from .config import (ConfigError, check_range, check_writable_folder, inactive_sparsity_keys, registration_names,
                     validate_evaluation, validate_registration, validate_training)
from .data import MnistSplits
from .front import ACCURACY_KEY, ENERGY_KEY, pareto_table, prepare_registration, register_once, study_rows
from .model import SplitCNN, save_checkpoint
from .pruning import layer_table
from .reporting import energy_terms
from .stages import (c_r_reference, dataset_input, gradual_pruning, load_data, measure, prune_model, prune_only,
                     train_on_path)
from .training import EpochRecord, evaluate

log = logging.getLogger(__name__)



# -- configuration ---------------------------------------------------------------------------
def validate_sweep(cfg: DictConfig) -> None:
    validate_training(cfg)
    validate_evaluation(cfg)
    check_range(cfg, "objective.lam", 0, 1)
    if cfg.objective.mode not in ("scalar", "multi"):
        raise ConfigError(f"objective.mode must be one of scalar, multi (got {cfg.objective.mode!r})")
    if cfg.selection.rule not in objective.RULES:
        raise ConfigError(f"selection.rule must be one of {', '.join(objective.RULES)} (got {cfg.selection.rule!r})")
    check_range(cfg, "selection.min_val_accuracy", 0, 1)
    validate_registration(cfg)
    check_range(cfg, "sweep.warmup_epochs", 0, integer=True)
    if cfg.sweep.finetuned_loss not in ("dense", "pruned"):
        raise ConfigError(f"sweep.finetuned_loss must be one of dense, pruned (got {cfg.sweep.finetuned_loss!r})")
    if cfg.cache.enabled:  # trials write their trained models there
        check_writable_folder(cfg, "cache.dir")


# What defines a study besides its search space: the sections that change a trial's metrics,
# without the settings that only say where things are or how fast they run.
DEFINING_SECTIONS = ("objective", "data", "model", "train", "prune", "energy", "channel", "trajectory", "selection",
                     "evaluation", "scenario")
NOT_DEFINING = {*(f"data.{k}" for k in DATA_KEYS_IGNORED), "train.num_threads", "train.device",
                # read by evaluate.py's report only, never by a trial
                "channel.bandwidths_hz", "trajectory.locations", "trajectory.location_radius_m",
                "evaluation.realisations", "evaluation.sensitivity",
                # choose and name the model at the end of the sweep; trials never read them
                "selection.rule", "selection.registered_model", "selection.alias"}


def _search_lines(cfg: DictConfig) -> list[str]:
    """The sweep's override lines: hydra.sweeper.params, then the command line."""
    from hydra_plugins.ecosplit_optuna_sweeper._search_space import params_config_to_lines
    params = OmegaConf.to_container(OmegaConf.select(cfg, "hydra.sweeper.params") or OmegaConf.create({}))
    return params_config_to_lines(params) + list(OmegaConf.select(cfg, "hydra.overrides.task") or [])


MAX_SEARCH_COMBINATIONS = 64  # of the other searched settings' candidates, tried for one value


def _candidates(value) -> list | None:
    """The values a sweep override's space is checked at: every choice, a range's first and (of
    integers) last, an interval's ends; None for anything else."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    if isinstance(value, ChoiceSweep):
        return list(value.list)
    if isinstance(value, RangeSweep):
        steps = (value.start, value.stop, value.step or 1)
        values = range(*steps) if all(isinstance(v, int) for v in steps) else [value.start]
        return [values[0], values[-1]] if len(values) else None
    if isinstance(value, IntervalSweep):
        return [value.start, value.end]
    return None


def check_searched_values(cfg: DictConfig) -> None:
    """Every value a searched setting can take passes ``validate_sweep`` with some values of the
    other searched settings (``_candidates`` of each, at most ``MAX_SEARCH_COMBINATIONS`` tried;
    beyond that the value is not checked), the plain values the sweeper gives every job applied.
    A value that fails every trial drawing it (a typo such as ``prune.finetune_epochs=choice(-1,-2)``)
    is refused before the study is made: at its first trial the study would already be defined
    with that space, and the name taken by it."""
    import itertools

    searched, fixed = _search_overrides(cfg)

    def settable(key: str) -> bool:  # a setting, not a config group (objective=..., experiment=...)
        return "/" not in key and not isinstance(OmegaConf.select(cfg, key), DictConfig)

    trial_cfg = copy.deepcopy(cfg)
    absent = object()
    for key, value in fixed.items():  # a setting of the config, null ones too (train.max_steps)
        if settable(key) and OmegaConf.select(cfg, key, default=absent) is not absent:
            OmegaConf.update(trial_cfg, key, value)
    spaces = {k: (o.input_line, c) for k, o in searched.items() if settable(k) and (c := _candidates(o.value()))}
    failures = []  # (line, key, candidate, first error): a value no trial drawing it survives
    for key, (line, candidates) in spaces.items():
        others = [(k, c) for k, (_, c) in spaces.items() if k != key]
        combos = list(itertools.islice(itertools.product(*[c for _, c in others]), MAX_SEARCH_COMBINATIONS + 1))
        if len(combos) > MAX_SEARCH_COMBINATIONS:
            continue
        for candidate in candidates:
            error = None
            for combo in combos:
                for (other, _), value in zip(others, combo):
                    OmegaConf.update(trial_cfg, other, value, force_add=True)
                OmegaConf.update(trial_cfg, key, candidate, force_add=True)
                try:
                    validate_sweep(trial_cfg)
                    break
                except ConfigError as exc:
                    error = error or exc
            else:
                failures.append((line, key, candidate, error))
    if failures:
        # a setting whose every value is wrong fails every value of the others too: blame the
        # value whose error names its own setting, not the first searched one
        line, key, candidate, error = next((f for f in failures if re.match(rf"{re.escape(f[1])}\b", str(f[3]))),
                                           failures[0])
        raise ConfigError(f"{line}: every trial drawing {key}={candidate!r} would fail: {error}")


def _search_overrides(cfg: DictConfig) -> tuple[dict, dict[str, object]]:
    """({key: its sweep override} the sweeper searches, {key: value} of keys a plain value fixes
    for every trial), from hydra.sweeper.params then the command line, a later line for a key
    replacing an earlier one, as the sweeper reads them (a plain value in params fixes its key for
    the jobs only, as experiment=max_compression does)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    searched: dict = {}
    fixed: dict[str, object] = {}
    for override in OverridesParser.create().parse_overrides(_search_lines(cfg)):
        key = override.key_or_group.lstrip("+~")
        if override.is_sweep_override():
            searched[key] = override
            fixed.pop(key, None)
        else:
            searched.pop(key, None)
            fixed[key] = override.value()
    return searched, fixed


def _sweep_keys(cfg: DictConfig) -> tuple[set[str], dict[str, object]]:
    """(keys the sweeper searches, {key: value} of the keys a plain value fixes): ``_search_overrides``."""
    searched, fixed = _search_overrides(cfg)
    return set(searched), fixed


def _searched_keys(cfg: DictConfig) -> set[str]:
    return _sweep_keys(cfg)[0]


def _defining_values(node: DictConfig, prefix: str, searched: set[str]) -> dict:
    """The resolved values under ``node`` except the searched keys, the values interpolated from
    them (train.mu from search.one_minus_mu) and NOT_DEFINING."""
    raw = OmegaConf.to_container(node, resolve=False)
    out = {}
    for key in node:
        name = f"{prefix}.{key}"
        depends = isinstance(raw[key], str) and "${" in raw[key] and any(k in raw[key] for k in searched)
        if name in searched or name in NOT_DEFINING or depends:
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            out[key] = _defining_values(value, name, searched)
        else:
            out[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
    return out


@user_errors_exit
def study_definition(cfg: DictConfig) -> dict:
    """``hydra.sweeper.definition``: validate the sweep, then return what defines its experiment
    besides the search space: objective mode and lambda (eq. 8), data selection, seed, model,
    training (eq. 10), pruning, energy (eqs. 1-2, 6), channel (eqs. 3-5) and trajectory settings.

    Runs in the sweeper process before the study is opened; a bad setting is one line and exit
    status 2 with nothing recorded. The sweeper refuses a re-run whose definition differs.
    """
    validate_sweep(cfg)
    tracking.check_configured_server(cfg)  # before the study is opened
    searched = _searched_keys(cfg)
    if searched & {"objective", "objective.mode"}:  # one study is one mode: its directions and what it ranks
        raise ConfigError("objective: the objective mode (scalar: eq. (8), or multi: the front) sets the study's "
                          "directions and cannot be searched; run one sweep per mode (objective=scalar, objective=multi)")
    check_searched_values(cfg)
    skipped = searched | inactive_sparsity_keys(cfg)  # a study from before these settings still matches
    definition = {"seed": cfg.seed}
    for section in DEFINING_SECTIONS:
        if section not in searched:  # a whole group searched (objective=scalar,multi) is search space
            node = cfg[section]
            definition[section] = _defining_values(node, section, skipped) if isinstance(node, DictConfig) else node
    return definition


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def per_layer_notice(per_layer: dict, group_per_layer: dict, threshold: str, group_file: str) -> str:
    """The sweep's one line on per-layer pruning: the layers pruned at ``threshold``, those with a
    value of their own, and the prune group's per-layer values (what train.py and evaluate.py use)
    that the sweep's config replaced. ``None`` = the global threshold, as in ``prune.per_layer``."""
    own = {k: v for k, v in per_layer.items() if v is not None}
    at_global = [k for k, v in per_layer.items() if v is None]
    where = "every layer" if not own else ", ".join(at_global) if at_global else "no layer"
    text = f"pruning: {where} at {threshold}"
    if own:
        text += "; " + ", ".join(f"{k} at {v:g}" for k, v in own.items())
    replaced = {k: v for k, v in group_per_layer.items() if v is not None and own.get(k) != v}
    if replaced:
        values = ", ".join(f"{k}={v:g}" for k, v in replaced.items())
        text += (f"; not {group_file}'s {values}, which train.py and evaluate.py use "
                 "(prune.per_layer.<layer>=<value> sets one for every trial)")
    return text


def pruning_notice(cfg: DictConfig) -> str:
    """per_layer_notice for a composed sweep config: against what train.py uses with the same prune
    group and preset (the group's file read from conf/, the preset's prune.per_layer over it)."""
    group = OmegaConf.select(cfg, "hydra.runtime.choices.prune", default="default")
    group_file = CONF_DIR / "prune" / f"{group}.yaml"
    group_per_layer = OmegaConf.to_container(OmegaConf.load(group_file).get("per_layer") or {}) \
        if group_file.is_file() else {}
    source = f"conf/prune/{group}.yaml"
    experiment = OmegaConf.select(cfg, "hydra.runtime.choices.experiment")
    experiment_file = CONF_DIR / "experiment" / f"{experiment}.yaml"
    if experiment and experiment_file.is_file():
        preset = OmegaConf.select(OmegaConf.load(experiment_file), "prune.per_layer")
        if preset:
            group_per_layer.update(OmegaConf.to_container(preset))
            source += f" with experiment={experiment}"
    searched, fixed = _sweep_keys(cfg)
    if "prune.threshold" in searched:
        threshold = "the searched prune.threshold"
    else:
        threshold = f"prune.threshold={float(fixed.get('prune.threshold', cfg.prune.threshold)):g}"
    return per_layer_notice(OmegaConf.to_container(cfg.prune.per_layer or {}), group_per_layer,
                            f"{threshold} (prune.mode={cfg.prune.mode})", source)


def _hydra_sweeper():
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get().sweeper


# -- parent run ------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


_PARENT_IDS: dict[tuple[str, str, str], str] = {}  # (tracking uri, experiment id, study) -> parent run id


def _parent_run_id(experiment_id: str, study_name: str) -> str | None:
    """find_parent_run's id, looked up once per process (it never changes once found)."""
    key = (mlflow.get_tracking_uri(), experiment_id, study_name)
    if key not in _PARENT_IDS:
        parent = find_parent_run(experiment_id, study_name)
        if parent is None:
            return None
        _PARENT_IDS[key] = parent.info.run_id
    return _PARENT_IDS[key]


STUDY_UUID_TAG = "ecosplit.study_uuid"  # the parent run's study: its STUDY_UUID
TRACKING_ATTR = "ecosplit:tracking_uri"  # a study's user attr: the tracking.uri its sweep run was made in


def find_parent_run(experiment_id: str, study_name: str):
    """The sweep's parent run: the oldest run tagged with this study (oldest wins a creation race;
    the run id breaks a tie in start time, so every worker picks the same one)."""
    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`ecosplit.role` = 'sweep' and tags.`ecosplit.study` = '{study_name}'",
        order_by=["attributes.start_time ASC"], max_results=20)
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)) if runs else None


def _study_uuid(study: optuna.Study) -> str | None:
    from hydra_plugins.ecosplit_optuna_sweeper._study import STUDY_UUID
    return study.user_attrs.get(STUDY_UUID)


def owns(parent, study: optuna.Study) -> bool:
    """Whether ``parent`` (a sweep run of the study's name) is this study's, not an earlier
    study's of the same name (deleted with ``optuna delete-study`` and made again, another
    ``sweep.storage``, an in-memory one): its tag names the study. A run from before the tag is
    the study's unless the study is new and the run has trials."""
    tagged = parent.data.tags.get(STUDY_UUID_TAG)
    if tagged is not None:
        return tagged == _study_uuid(study)
    if study.get_trials(deepcopy=False):
        return True
    children = MlflowClient().search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                          max_results=1)
    return not children


def own_parent_run(experiment_id: str, study: optuna.Study):
    """``find_parent_run`` when it is this study's (``owns``), else None."""
    parent = find_parent_run(experiment_id, study.study_name)
    return parent if parent is not None and owns(parent, study) else None


def _experiment_ids(cfg: DictConfig, create: bool = True) -> list[str]:
    """The ids of the sweep's experiment and of the cache's (``cache.experiment``), where trial
    runs and cache claims live; created when missing unless ``create`` is False (then those that
    exist; none without the sweep's)."""
    settings = {"tracking.experiment": cfg.tracking.experiment}
    if cfg.cache.enabled and cfg.cache.mlflow:
        settings["cache.experiment"] = cfg.cache.experiment
    if create:
        return [tracking.configure(cfg.tracking.uri, n, cfg.tracking.artifact_location, cfg.tracking.sqlite_wal, key)
                for key, n in settings.items()]
    ids = [tracking.existing_experiment(cfg.tracking.uri, n, cfg.tracking.sqlite_wal) for n in settings.values()]
    return [i for i in ids if i is not None] if ids[0] is not None else []


def _check_same_store(study: optuna.Study, cfg: DictConfig) -> None:
    """A study whose trials ran is resumed in the tracking store (and experiment) that holds its
    sweep run, not split in two: another store would get a second sweep run with the new trials
    only, and a second registered model (found by a reviewer). Nothing is created to check."""
    trials = study.get_trials(deepcopy=False)
    ran = sum(t.state != optuna.trial.TrialState.WAITING for t in trials)
    if not ran:
        return
    ids = _experiment_ids(cfg, create=False)
    missing = "sweep run"
    if ids and find_parent_run(ids[0], study.study_name) is not None:
        # a trial that ran to its end made a trial run where its sweep run was: that store (a
        # sweep run alone may be one made before any trial, in a store the study then left)
        if not any(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials):
            return
        if MlflowClient().search_runs(ids[:1], f"tags.`ecosplit.study` = '{study.study_name}' and "
                                      "tags.`ecosplit.role` = 'trial'", max_results=1):
            return  # whose it is: owns(), in on_start
        missing = "trial run"
    where = study.user_attrs.get(TRACKING_ATTR)
    raise ConfigError(
        f"tracking.uri={tracking.mask_secrets(cfg.tracking.uri)}: study '{study.study_name}' has {ran} trial(s), but "
        f"experiment '{cfg.tracking.experiment}' of this tracking store holds no {missing} of it: they were recorded "
        f"elsewhere{f' (its sweep run was last made in tracking.uri={where})' if where else ''}. Set tracking.uri and "
        "tracking.experiment to those of the earlier runs (or restore the deleted runs), or start a new study "
        "with another sweep.name")


@user_errors_exit
def on_start(study: optuna.Study, cfg: DictConfig) -> None:
    """Create the tracking store, the experiments (the sweep's and the cache's) and the parent run
    in the sweeper process, before trials.

    If an earlier, aborted run of the sweep ended the parent run FAILED or KILLED, it is RUNNING
    again: the study resumes."""
    validate_sweep(cfg)  # study_definition checked it before the study was opened; cheap
    log.info(pruning_notice(cfg))  # conf/sweep.yaml drops the prune group's per-layer values: say so once
    if cfg.selection.registered_model:
        prepare_registration()  # while the trials run, not at the end
    _check_same_store(study, cfg)
    experiment_ids = _experiment_ids(cfg)
    experiment_id = experiment_ids[0]
    sweeper = cfg.hydra.sweeper
    parent = find_parent_run(experiment_id, study.study_name)
    client = MlflowClient()
    if parent is not None and not owns(parent, study):
        raise ConfigError(
            f"sweep.name={cfg.sweep.name}: study '{study.study_name}' in "
            f"{tracking.mask_secrets(str(sweeper.storage)) if sweeper.storage else 'memory (sweep.storage=null)'} is "
            f"not the one experiment '{cfg.tracking.experiment}' recorded under that name (sweep run "
            f"{parent.info.run_id}, storage {parent.data.tags.get('optuna.storage', '?')}): the study was made again "
            "(deleted, another sweep.storage, or in memory) and its trials would mix with the earlier ones'. Choose "
            "another sweep.name, or delete the earlier sweep's runs in MLflow (tags.ecosplit.study = "
            f"'{study.study_name}')")
    if parent is not None and parent.data.tags.get(STUDY_UUID_TAG) is None and _study_uuid(study):
        client.set_tag(parent.info.run_id, STUDY_UUID_TAG, _study_uuid(study))  # a run from before the tag
    if parent is not None and parent.info.status != "RUNNING":
        log.info("parent run %s was %s: RUNNING again, the study resumes", parent.info.run_id, parent.info.status)
        client.update_run(parent.info.run_id, status="RUNNING")
        if "failure_reason" in parent.data.tags:
            client.delete_tag(parent.info.run_id, "failure_reason")
    if parent is None:
        study.set_user_attr(TRACKING_ATTR, tracking.mask_secrets(absolute_sqlite(cfg.tracking.uri)))
        run = client.create_run(experiment_id, run_name=f"sweep-{study.study_name}", tags={
            "ecosplit.role": "sweep", "ecosplit.study": study.study_name,
            **({STUDY_UUID_TAG: _study_uuid(study)} if _study_uuid(study) else {}),
            "optuna.storage": tracking.mask_secrets(str(sweeper.storage)),
            "optuna.sampler": type(study.sampler).__name__, "git_commit": _git_commit(),
        })
        run_id = run.info.run_id
        batch = tracking.RunLog(run_id, experiment_id)
        batch.params({"study_name": study.study_name, "objective.mode": cfg.objective.mode,
                      "objective.lam": cfg.objective.lam, "n_trials": sweeper.n_trials,
                      "selection.rule": cfg.selection.rule, "selection.min_val_accuracy": cfg.selection.min_val_accuracy,
                      **{f"search.{k}": v for k, v in (sweeper.params or {}).items()}})
        batch.send()
        client.log_text(run_id, tracking.mask_secrets(OmegaConf.to_yaml(cfg, resolve=False)), "sweep_config.yaml")
        winner = find_parent_run(experiment_id, study.study_name).info.run_id
        if winner != run_id:  # lost a race to another worker
            client.delete_run(run_id)
            run_id = winner
    else:
        run_id = parent.info.run_id
    # one link to the sweep's run, under which every trial is nested, instead of MLflow's two
    # lines per run ended (trial and cache claim) on a tracking server
    url = tracking.run_url(run_id, experiment_id)
    if url is not None:
        tracking.quiet_run_urls()
        log.info("MLflow: the sweep's run, every trial nested under it: %s", url)
    reconcile_runs(study, experiment_ids)


WORKER_DIED = "worker died (heartbeat stale)"


def reconcile_runs(study: optuna.Study, experiment_ids: list[str], status: str = "KILLED") -> int:
    """Make the runs of trials Optuna has failed say so:

    - a trial that ended without ending its MLflow runs (the trial's run and a cache claim it
      held; e.g. its worker was killed) leaves them RUNNING: they end with ``status``;
    - a trial run that finished (tag ``optuna.state`` COMPLETE) whose trial was then failed (its
      result refused, or its worker declared dead before telling it) ends FAILED;

    both with the trial's reason (the sweeper's ``fail_reason`` attribute, else a dead worker)."""
    failed = {t._trial_id: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
    if not failed:  # the usual case: nothing to look for
        return 0
    client = MlflowClient()
    of_study = f"tags.`ecosplit.study` = '{study.study_name}'"
    fixed = 0
    for flt, end_as in ((f"{of_study} and attributes.status = 'RUNNING'", status),
                        (f"{of_study} and tags.`{STATE_TAG}` = 'COMPLETE'", "FAILED")):
        for run in client.search_runs(experiment_ids, filter_string=flt, max_results=5000):
            trial = failed.get(int(run.data.tags.get("optuna.trial_id", -1)))
            if trial is None:
                continue
            reason = tracking.mask_secrets(str(trial.user_attrs.get("fail_reason") or WORKER_DIED))
            tags = {"failure_reason": reason[:tracking.MAX_TAG_CHARS]}
            if run.data.tags.get("ecosplit.role") == "trial":
                tags[STATE_TAG] = "FAIL"
            batch = tracking.RunLog(run.info.run_id)
            batch.tags(tags)
            batch.send()
            client.set_terminated(run.info.run_id, end_as)
            fixed += 1
    return fixed


def _unfinished_trials(study: optuna.Study) -> list[int]:
    """Trials some worker still owns: while there are any, the parent run stays RUNNING."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))]


def on_abort(study: optuna.Study, cfg: DictConfig, status: str, reason: str) -> None:
    """``hydra.sweeper.on_abort``: the sweep stopped before completing (status FAILED: a setting,
    too many failures, a crash; KILLED: interrupted). End the trial runs of failed trials still
    RUNNING and, unless another worker still runs trials, the parent run, with the reason."""
    status = status if status in ("FAILED", "KILLED") else "FAILED"
    reason = tracking.mask_secrets(" ".join(str(reason).split()))[:tracking.MAX_TAG_CHARS]
    experiment_ids = _experiment_ids(cfg, create=False)
    if not experiment_ids:  # stopped before on_start: nothing recorded, nothing to end
        return
    parent = own_parent_run(experiment_ids[0], study)  # an earlier study's of the name is left alone
    if parent is None and find_parent_run(experiment_ids[0], study.study_name) is not None:
        return  # refused as it started (on_start): its trials never ran
    try:
        reconcile_runs(study, experiment_ids, status)
        # WAITING trials (re-queued by this very abort) have no worker: only RUNNING ones keep it open
        running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    except Exception as exc:  # the Optuna storage is gone too: still end the parent run
        log.warning("could not read study %s while aborting (%s): its parent run ends %s", study.study_name,
                    type(exc).__name__, status)
        running = []
    if parent is None:
        return
    if running:
        log.info("sweep %s (%s); trials %s still RUNNING in other workers: the parent run stays RUNNING",
                 status, reason, running)
        return
    client = MlflowClient()
    client.set_tag(parent.info.run_id, "failure_reason", reason)
    client.set_terminated(parent.info.run_id, status)
    log.info("parent run %s ended %s: %s", parent.info.run_id, status, reason)


# -- one trial --------------------------------------------------------------------------------
STATE_TAG = "optuna.state"  # on every trial run: COMPLETE, PRUNED or FAIL
# the per-epoch values wait in the trial's batch for at least this long: a smoke trial sends them
# with its final metrics, a full-size one (an epoch takes seconds) every epoch
EPOCH_FLUSH_S = 5.0


def run_trial(cfg: DictConfig) -> dict:
    """Train (or reuse) the dense model, prune, evaluate energy; return every metric.

    The returned mapping carries the objectives named in hydra.sweeper.objectives plus all other
    metrics, which the sweeper stores as trial user attributes. The trial's MLflow run, nested
    under the sweep's parent run, holds its settings (params), its data (a dataset input), the
    per-epoch and final metrics, ``checkpoints/pruned.pt`` and ``layers.csv``, and the pruned
    model as an MLflow logged model (``ecosplit.model_id``) linked to the final metrics. It ends
    FINISHED when the trial is COMPLETE or PRUNED, else FAILED or KILLED with failure_reason;
    tag ``optuna.state`` says which. Params, tags and metrics go in as few batches as possible.
    """
    from hydra_plugins.ecosplit_optuna_sweeper import current_trial

    global _trials_started
    start = time.perf_counter()
    _trials_started += 1
    if _trials_started == 2:  # the first trial did not end well (below)
        _freeze_heap_once()
    validate_sweep(cfg)
    t = time.perf_counter()
    data = load_data(cfg)  # missing data fails before any run is opened
    time_data_s = time.perf_counter() - t
    gradual_pruning(cfg, len(data.train))  # so does a pruning schedule past train.max_steps
    trial = current_trial()
    study_name = str(_hydra_sweeper().study_name)
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                                        cfg.tracking.sqlite_wal)
    parent_id = _parent_run_id(experiment_id, study_name)
    key = training_key(cfg, data)
    tags = {"ecosplit.role": "trial", "ecosplit.study": study_name, "ecosplit.cache_key": key}
    batch = tracking.RunLog()
    if trial is not None:
        tags.update({"optuna.trial_number": trial.number, "optuna.trial_id": trial._trial_id})
        batch.params({f"trial.{k}": v for k, v in trial.params.items()})
    # sections' settings before the entries of tables (energy.operations_pj.fp32.add, ...): a
    # running trial shows the first in the UI, the tables a call later
    settings = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    batch.params(dict(sorted(settings.items(), key=lambda kv: kv[0].count(".") > 1)))
    name = f"trial-{trial.number}" if trial is not None else "trial"
    pruned = None
    # the run is created in the batch's thread while the trial computes
    with tracking.background_run(experiment_id, name, tags, parent_id, batch=batch, failed_tags={STATE_TAG: "FAIL"}):
        # sent while the trial trains: the settings one call takes (a running trial shows them in
        # the UI; the rest go once the cache's claim is made, see _trial_metrics) and the data
        batch.flush()
        dataset = dataset_input(cfg, data)
        batch.in_background(lambda: tracking.log_dataset(batch.run_id, **dataset))
        try:
            metrics, model_id = _trial_metrics(cfg, trial, batch, data, key)
        except optuna.TrialPruned as exc:  # a decision, not a failure: the run ends FINISHED
            pruned = exc
            batch.tags({STATE_TAG: "PRUNED", "optuna.pruned": str(exc)})
        else:
            metrics["time_data_s"] = time_data_s
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            batch.metrics({k: v for k, v in numbers.items() if not k.startswith("time_")}, model_id=model_id,
                          dataset=(dataset["name"], dataset["digest"]))
            batch.metrics({k: v for k, v in numbers.items() if k.startswith("time_")})  # the run's, not the model's
            bad = [k for k in ("objective", "val_loss", ENERGY_KEY) if not math.isfinite(metrics[k])]
            if bad:
                batch.tags({"failure_reason": f"non-finite {', '.join(bad)}"})
                raise FloatingPointError(f"non-finite {', '.join(bad)}: " + ", ".join(f"{k}={metrics[k]}" for k in bad))
            batch.tags({STATE_TAG: "COMPLETE", "ecosplit.model_id": model_id})
    if pruned is not None:
        raise pruned
    metrics["mlflow_run_id"] = batch.run_id
    # the whole task, MLflow calls included (an Optuna user attribute; the run has ended)
    metrics["time_task_s"] = time.perf_counter() - start
    if _trials_started == 1:
        _freeze_heap_once()
    return metrics


# training key -> dense test result: trials reusing a model need not re-run the 10k test set on it
_DENSE_TEST: dict = {}
_trials_started = 0  # in this process
_heap_frozen = False


def _freeze_heap_once() -> None:
    """The first trial has imported torch's compiler (the first optimizer does: ~130k objects) and
    made the sweep's long-lived objects: kept out of every later full collection of the garbage
    collector (one every ~10 smoke trials, 0.2-0.3 s each). Done as the first trial ends, before
    the sweeper's work for the second (its job config is composed by Hydra once more, to check the
    copy: a full collection then walked the whole heap), else as the second starts."""
    global _heap_frozen
    if not _heap_frozen:
        freeze_heap()
        _heap_frozen = True


def eq8_terms(cfg: DictConfig, dense: SplitCNN, pruned: SplitCNN, val_loss: float,
              data: MnistSplits | None = None) -> dict[str, float]:
    """Eq. (8) for ``pruned`` with validation loss ``val_loss``: its trajectory-average PS energy,
    the PSNC energy of ``dense`` (the normaliser) and the scalar value. The one computation behind
    both the trial's objective and the values reported at every epoch (``data``: the validation
    images the models are deployed on beyond the paper's representation; then also
    ``route_accuracy_ps``, see ``reporting.energy_terms``)."""
    terms = energy_terms(cfg, dense, pruned, data)
    energy_j, reference_j = terms.pop("energy_total_j_ps"), terms.pop("energy_total_j_psnc")
    return {ENERGY_KEY: energy_j, "energy_total_j_psnc": reference_j, "energy_normalised": energy_j / reference_j,
            "objective": objective.scalar_objective(val_loss, energy_j, reference_j, cfg.objective.lam), **terms}


def intermediate_metrics(cfg: DictConfig, model: SplitCNN, data: MnistSplits, dense_val_loss: float) -> dict[str, float]:
    """Eq. (8) that the trial's final objective is heading for, from ``model`` as it stands after an
    epoch (validation loss ``dense_val_loss``): the model pruned at the trial's thresholds without
    fine-tuning (``stages.prune_only``; cheap), its PS energy, and as the loss term

    - without fine-tuning: the pruned model's validation loss, exactly what the final objective
      computes once training ends;
    - with fine-tuning (``prune.finetune_epochs`` > 0) and ``sweep.finetuned_loss: dense``: the dense
      model's, which fine-tuning recovers (measured on 30-epoch models, 1 - mu 3.8e-6..4.7e-5 x absolute
      thresholds 0.01..0.08: within 0.04 of the final value after 2 fine-tuning epochs in 27 of 28
      cases, rank correlation 0.95; the pruned model's rates them in reverse, -0.69, because pruning
      hard costs accuracy that fine-tuning gives back; in the default sweep, Spearman 0.62-0.76 at
      every epoch against -0.5 to -0.7); ``pruned`` uses the pruned model's anyway. Neither foresees
      a pruning so hard that fine-tuning cannot recover (std q >= 1.8 in the default sweep: reported
      0.25-0.33, final 0.76-1.34): such trials are never pruned, they finish and report their
      real value.

    ``model`` is not changed (pruning works on a copy) and the global RNG is restored (building the
    copy draws from it), so training goes on exactly as without this call."""
    with torch.random.fork_rng(devices=[]):
        pruned = prune_only(cfg, model)
        val = evaluate(pruned, data.val)
    finetuned = bool(cfg.prune.finetune_epochs) and cfg.sweep.finetuned_loss == "dense"
    loss = dense_val_loss if finetuned else val.loss
    return {"val_loss": val.loss, "val_accuracy": val.accuracy, "loss_term": loss,
            **eq8_terms(cfg, model, pruned, loss, data)}


def _trial_metrics(cfg: DictConfig, trial, batch: tracking.RunLog, data: MnistSplits, key: str) -> tuple[dict, str]:
    """The trial's work, its metrics, and the id of its pruned model logged to MLflow. time_*_s:
    seconds of dense training (0 on a cache hit; without the per-epoch values), of the per-epoch
    intermediate values, of pruning + fine-tuning and of evaluation; what time_task_s adds to these
    and time_data_s is tracking/storage overhead.

    After every training epoch the intermediate eq. (8) value (``intermediate_metrics``) is queued
    in the trial's ``batch`` (``intermediate_*``, step = epoch; sent at least every EPOCH_FLUSH_S)
    and reported to Optuna; the pruner judges it after ``sweep.warmup_epochs`` epochs and before
    the last one (a trial that trained to the end is worth finishing: the rest is cheap, and its
    model is kept in the cache). A trial stopped mid-training stores no model: the cache keeps only
    what ``train`` returns."""
    times = {"time_train_s": 0.0, "time_intermediate_s": 0.0, "time_prune_s": 0.0, "time_eval_s": 0.0}
    overhead_s = [0.0]  # intermediate values and MLflow/Optuna calls inside training: not training
    # Optuna refuses trial.report in multi-objective studies: no pruning there
    can_prune = trial is not None and len(trial.study.directions) == 1
    warmup_epochs, last_epoch = int(cfg.sweep.warmup_epochs), int(cfg.train.epochs)

    def report(rec: EpochRecord, model: SplitCNN) -> None:
        t = time.perf_counter()
        try:
            values = intermediate_metrics(cfg, model, data, rec.val_loss)
            times["time_intermediate_s"] += time.perf_counter() - t
            batch.metrics({"dense_val_loss": rec.val_loss, "dense_val_accuracy": rec.val_accuracy,
                           **{f"intermediate_{k}": v for k, v in values.items()}}, step=rec.epoch)
            batch.flush(older_than_s=EPOCH_FLUSH_S)
            if can_prune:
                trial.report(values["objective"], rec.epoch)
                if warmup_epochs < rec.epoch < last_epoch and trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {rec.epoch}: intermediate objective={values['objective']:.4f}")
        finally:
            overhead_s[0] += time.perf_counter() - t

    claim_tags = {"ecosplit.study": str(_hydra_sweeper().study_name)}
    if trial is not None:
        claim_tags["optuna.trial_id"] = trial._trial_id
    cache = None
    if cfg.cache.enabled:
        cache = ModelCache(Path(cfg.cache.dir).expanduser(), cache_experiment_id(cfg) if cfg.cache.mlflow else None,
                           claim_tags)

    def start_model(start: DictConfig) -> SplitCNN:
        """A model on train.path below this trial's, shared through the cache like the trial's own."""
        if cache is None:
            return train_on_path(start, data)
        model, _ = cache.get_or_train(training_key(start, data), lambda: train_on_path(start, data, None, start_model),
                                      start, background=batch.in_background)
        return model

    def train():
        # the rest of the settings (the tables' entries, a second call) while it trains: not in
        # the final batch on the trial's path, nor beside the cache's claim and search
        batch.flush(everything=True)
        t = time.perf_counter()
        dense = train_on_path(cfg, data, report, start_model)
        times["time_train_s"] = time.perf_counter() - t - overhead_s[0]
        return dense

    if cache is not None:
        dense, source = cache.get_or_train(key, train, cfg, background=batch.in_background)
    else:
        dense, source = train(), "trained"
    batch.tags({"ecosplit.dense_source": source})
    batch.flush(everything=True)  # a model found, not trained: while it is pruned and evaluated
    t = time.perf_counter()
    pruned = prune_model(cfg, dense, data)
    times["time_prune_s"] = time.perf_counter() - t
    # the model goes to MLflow while it is evaluated (both only read it)
    model_tags = {"ecosplit.study": claim_tags["ecosplit.study"]}
    if trial is not None:
        model_tags["optuna.trial_number"] = trial.number
    model = {"tags": model_tags, "name": f"pruned-trial-{trial.number}" if trial is not None else "pruned",
             "params": {k: OmegaConf.select(cfg, k) for k in ("train.mu", "prune.mode", "prune.threshold",
                                                                "prune.finetune_epochs")}}
    model_id = batch.in_background(lambda: _log_pruned_model(batch, dense, pruned, **model))
    t = time.perf_counter()
    if key not in _DENSE_TEST:  # the dense model's test score depends on the training key only
        _DENSE_TEST[key] = evaluate(dense, data.test)
    metrics = measure(dense, pruned, data, dense_test=_DENSE_TEST[key], reference=c_r_reference(cfg))
    energy = eq8_terms(cfg, dense, pruned, metrics["val_loss"], data)
    if "route_accuracy_ps" in energy:
        # beyond the paper's representation the front and selection.min_val_accuracy judge what is
        # deployed: PS's accuracy on the validation route (within selection.max_accuracy_drop of
        # the fp32 pruned model's on validation, which stays the loss term and val_accuracy_fp32)
        metrics["val_accuracy_fp32"] = metrics["val_accuracy"]
        metrics["val_accuracy"] = energy.pop("route_accuracy_ps")
    metrics.update({**energy, "train_mu": float(cfg.train.mu)})
    times["time_eval_s"] = time.perf_counter() - t
    metrics.update(times)
    return metrics, model_id.result()


def _log_pruned_model(run: tracking.RunLog, dense: SplitCNN, pruned: SplitCNN, **model: Any) -> str:
    """``checkpoints/pruned.pt`` and ``layers.csv`` as the run's artifacts (one upload call), and
    the pruned model as an MLflow logged model of the run holding the same checkpoint (load it
    with ``pipeline.model.load_checkpoint``), ``model`` its name, params and tags; its id."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoints" / "pruned.pt"
        checkpoint.parent.mkdir()
        save_checkpoint(pruned, checkpoint)
        (Path(tmp) / "layers.csv").write_text(tracking.rows_to_csv(dataclasses.asdict(r) for r in layer_table(dense, pruned)))
        tracking.log_artifacts(run.run_id, tmp, run.artifact_uri)
        return tracking.log_model(run.run_id, run.experiment_id, files=[checkpoint], model_type=MODEL_TYPE, **model)


MODEL_TYPE = "ecosplit.SplitCNN checkpoint"


# -- end of sweep -----------------------------------------------------------------------------
SUMMARY_PARAMS = ("train.mu", "prune.threshold", "prune.finetune_epochs")
SUMMARY_METRICS = (ACCURACY_KEY, "test_accuracy", ENERGY_KEY, "compression_ratio", "objective")


def trial_summary(trials: list, runs: dict[int, tuple[str, dict]], front: list[dict]) -> list[dict]:
    """The sweep at a glance, one row per ended trial (COMPLETE, PRUNED, FAIL): its number and
    state, SUMMARY_PARAMS and any other searched setting but 1 - mu (from its MLflow run's params,
    ``runs``: trial id -> (run id, params); else from the trial's own), the final SUMMARY_METRICS, ``on_front``/``selected`` of the
    accuracy/energy front (``front``: pareto_table's rows), the epoch a PRUNED trial stopped at."""
    marks = {r["trial"]: r for r in front}
    # searched settings beyond these (experiment=beyond: activation bits, coding, precision)
    searched = sorted({k for t in trials for k in t.params} - {*SUMMARY_PARAMS, "search.one_minus_mu"})
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                           optuna.trial.TrialState.FAIL):
            continue
        run_id, params = runs.get(t._trial_id, ("", {}))
        mark = marks.get(t.number, {})
        stopped = max(t.intermediate_values) if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values else None
        rows.append({"trial": t.number, "state": t.state.name,
                     **{k: params.get(k, t.params.get(k)) for k in (*SUMMARY_PARAMS, *searched)},
                     **{k: mark.get(k) for k in SUMMARY_METRICS},
                     "on_front": bool(mark.get("on_front", False)), "selected": bool(mark.get("selected", False)),
                     "pruned_at_epoch": stopped, "mlflow_run_id": run_id})
    return rows


def _trial_runs(experiment_id: str, study_name: str) -> list:
    return MlflowClient().search_runs([experiment_id], filter_string=(
        f"tags.`ecosplit.role` = 'trial' and tags.`ecosplit.study` = '{study_name}'"), max_results=50000)


def _log_sweep_data(client: MlflowClient, parent, trial_runs: list) -> None:
    """The datasets the trials used, as inputs of the parent run too (its Dataset column)."""
    have = {(d.dataset.name, d.dataset.digest) for d in parent.inputs.dataset_inputs}
    new = {}
    for run in trial_runs:
        for d in run.inputs.dataset_inputs:
            new.setdefault((d.dataset.name, d.dataset.digest), d)
    missing = [d for k, d in new.items() if k not in have]
    if not missing:
        return
    try:
        client.log_inputs(parent.info.run_id, missing)
    except mlflow.exceptions.MlflowException:
        # workers finishing together both log them; the store refuses the second as a duplicate
        logged = {(d.dataset.name, d.dataset.digest) for d in client.get_run(parent.info.run_id).inputs.dataset_inputs}
        if not {(d.dataset.name, d.dataset.digest) for d in missing} <= logged:
            raise


def on_complete(study: optuna.Study, cfg: DictConfig) -> None:
    """On the parent run: pareto.csv (the front's rows), trials.csv (every trial at a glance,
    ``trial_summary``), the Pareto plot, the best scalar trial, the trial counts; and the selected
    model registered (in a thread of its own while the rest is logged: its volunteering pause
    and MLflow's model packaging overlap the plot and the uploads)."""
    experiment_ids = _experiment_ids(cfg)
    experiment_id = experiment_ids[0]
    reconcile_runs(study, experiment_ids)
    parent = find_parent_run(experiment_id, study.study_name)
    rows, chosen = pareto_table(study_rows(study), cfg.selection.rule, cfg.selection.min_val_accuracy)
    out = Path(cfg.hydra.sweep.dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pareto.csv").write_text(tracking.rows_to_csv(rows))
    client = MlflowClient()
    run_id = parent.info.run_id
    unfinished = _unfinished_trials(study)
    recorded = client.get_run(run_id).data.metrics.get("trials_complete", 0)
    if recorded > len(rows):
        # another worker finished later and already logged a front over more trials
        _log_front(study, client, parent, rows, chosen, out, log_it=False)
        log.info("Pareto front: %d trials here, the parent run already has %d: left as is; pareto.csv in %s",
                 len(rows), int(recorded), out)
        return
    version, aliased = None, False
    name, alias = registration_names(cfg)  # name None: nothing registered
    with ThreadPoolExecutor(1, thread_name_prefix="ecosplit-register") as pool:  # waits for it in any case
        registration = pool.submit(register_once, MlflowClient(), run_id, rows[chosen], name, alias,
                                   cfg.cache.dir) if chosen >= 0 and name else None
        _log_front(study, client, parent, rows, chosen, out)
        if registration is not None:
            version, aliased = registration.result()
    if chosen >= 0:
        sel = rows[chosen]
        picked = (f"selected trial {sel['trial']} ({ENERGY_KEY}={sel[ENERGY_KEY]:.4g} J, "
                  f"{ACCURACY_KEY}={sel[ACCURACY_KEY]:.4f})")
        if not name:
            log.info("%s; selection.registered_model is not set: not registered", picked)
        elif aliased:
            log.info("%s registered as models:/%s@%s (version %s)", picked, name, alias, version)
        else:
            log.info("%s is models:/%s/%s, registered by this sweep before; @%s was moved since "
                     "(python -m pipeline.front): left where it points", picked, name, version, alias)
    else:
        log.warning("no trial meets selection.min_val_accuracy=%s: nothing registered", cfg.selection.min_val_accuracy)
    if unfinished:
        log.info("trials %s still RUNNING/WAITING in other workers: the parent run stays RUNNING "
                 "until the last worker completes", unfinished)
    else:
        client.set_terminated(run_id, "FINISHED")
    log.info("Pareto front: %d of %d trials; pareto.csv and trials.csv in %s", sum(r["on_front"] for r in rows),
             len(rows), out)


def _log_front(study: optuna.Study, client: MlflowClient, parent, rows: list[dict], chosen: int, out: Path,
               log_it: bool = True) -> None:
    """trials.csv in ``out``; with ``log_it``, on the parent run: both CSVs, the trials' datasets,
    the counts, the plot, the best and the selected trial."""
    trials = study.get_trials(deepcopy=False)
    trial_runs = _trial_runs(parent.info.experiment_id, study.study_name)
    summary = trial_summary(trials, {int(r.data.tags["optuna.trial_id"]): (r.info.run_id, r.data.params)
                                     for r in trial_runs if "optuna.trial_id" in r.data.tags}, rows)
    (out / "trials.csv").write_text(tracking.rows_to_csv(summary))
    if not log_it:
        return
    run_id = parent.info.run_id
    client.log_artifact(run_id, str(out / "pareto.csv"))
    client.log_artifact(run_id, str(out / "trials.csv"))
    _log_sweep_data(client, parent, trial_runs)
    # step = trials seen: MLflow's latest value (highest step) is the most complete view
    n = len(rows)
    batch = tracking.RunLog(run_id)
    states = [t.state for t in trials]
    batch.metrics({"trials_complete": n, "trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
                   "trials_failed": states.count(optuna.trial.TrialState.FAIL)}, step=n)
    if rows:
        from .plots import pareto_plot
        png = pareto_plot([r[ENERGY_KEY] for r in rows], [r[ACCURACY_KEY] for r in rows], [r["on_front"] for r in rows],
                          [r["trial"] for r in rows], "average PS energy (J)", "validation accuracy", out / "pareto.png",
                          chosen if chosen >= 0 else None)
        client.log_artifact(run_id, str(png))
        _pareto_html(rows, out / "pareto.html", client, run_id)
        best = min(rows, key=lambda r: r.get("objective", math.inf))
        batch.metrics({"best_objective": best["objective"], "pareto_size": sum(r["on_front"] for r in rows)}, step=n)
        batch.tags({"best_trial": best["trial"]})
    if chosen >= 0:
        sel = rows[chosen]
        batch.tags({"selected_trial": sel["trial"]})
        batch.metrics({f"selected_{k}": sel[k] for k in (ENERGY_KEY, ACCURACY_KEY, "test_accuracy", "compression_ratio")
                       if k in sel}, step=n)
    batch.send()


def _pareto_html(rows, path: Path, client, run_id: str) -> None:
    try:
        import plotly.express as px
    except ImportError:
        return
    fig = px.scatter(rows, x=ENERGY_KEY, y=ACCURACY_KEY, color="on_front", hover_data=list(rows[0]))
    fig.write_html(str(path))
    client.log_artifact(run_id, str(path))
