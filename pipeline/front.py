"""The accuracy/energy front of one or several sweeps, and promotion of a point of it to the
registered model: ``python -m pipeline.front`` (conf/front.yaml) and the sweep's end
(``pipeline.sweep.on_complete``) share this one implementation.

Command line (every key in conf/front.yaml; the trial runs are read from MLflow at ``tracking.uri``)::

    python -m pipeline.front                                   # list every sweep in tracking.experiment
    python -m pipeline.front studies=[ecosplit-scalar,ecosplit-multi] experiments=[ecosplit]
    python -m pipeline.front action=promote rule=knee          # the knee -> models:/<name>@<alias>
    python -m pipeline.front action=promote rule=best_objective lam=0.2   # eq. (8) recomputed at lambda 0.2
    python -m pipeline.front action=promote trial=12           # or studyname:12 when several sweeps have a 12
    python -m pipeline.front action=promote trial=7 force=true # a trial off the front or below the accuracy floor

- ``action``: ``list`` (default: the table only) or ``promote``.
- ``experiments``: MLflow experiments whose trial runs are read (default ``[${tracking.experiment}]``);
  ``studies``: the sweeps (study names, tag ``ecosplit.study``) kept, ``[]`` for all of them.
- ``rule`` (default ``selection.rule``): ``min_energy``, ``knee`` or ``best_objective``
  (``pipeline.objective.select``), among trials with ``val_accuracy >= selection.min_val_accuracy``.
- ``trial``: promote this trial instead of the rule's pick; it must be on the front and feasible
  unless ``force=true``.
- ``lam``: null uses each trial's logged eq. (8) value (its sweep's ``objective.lam``); a value in
  [0, 1] recomputes eq. (8) from the logged ``val_loss`` and energies, so sweeps run with different
  lambdas can be ranked together (``best_objective`` over such sweeps needs it).
- ``show``: ``all`` trials or only the ``front``.
- ``selection.registered_model`` / ``selection.alias``: where ``promote`` points.

Only COMPLETE trials count: trial runs tagged ``optuna.state`` = COMPLETE, or, in stores written
before that tag existed, FINISHED trial runs without it. A mistake (unknown experiment, sweep or
trial, a bad rule, a trial off the front without ``force``) is one ``error:`` line naming the
setting and exit status 2, with nothing changed.

**The registered model.** Promoting logs the trial's pruned ``SplitCNN`` in its trial run with
MLflow's PyTorch flavour in pickle form, so ``mlflow.pytorch.load_model("models:/<name>@<alias>")``
returns the model with ``client()``/``server()`` (the ``pipeline`` package must be importable
where it is loaded: run from the project or put it on ``PYTHONPATH``), plus the dense model it
was pruned from as the extra file ``extra_files/dense.pt`` (the baselines of ``evaluate.py
model_uri=models:/...`` need it). A trial run holds only ``checkpoints/pruned.pt``; its dense
model is the reuse cache's, found by the run's ``ecosplit.cache_key`` tag in ``cache.dir`` or in
any MLflow experiment (``find_dense``). The model is logged once per trial, at its first
promotion; promoting it again only moves the alias.
"""
from __future__ import annotations

import logging
import math
import sys
import os
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable

import hydra
import mlflow
import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from . import objective, tracking
from .cache import ROLE as CACHE_ROLE  # the runs holding the cached dense models
from .cli import run_script, user_errors_exit
from .config import ConfigError, check_range, registration_names, validate_registration, validate_tracking
from .model import SplitCNN, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

ENERGY_KEY = "energy_total_j_ps"
ACCURACY_KEY = "val_accuracy"
STATE_TAG = "optuna.state"          # COMPLETE | PRUNED | FAIL on a trial run
CACHE_KEY_TAG = "ecosplit.cache_key"
FORMAT_TAG = "ecosplit.format"      # on a model version logged here
FORMAT = "pytorch-pickle+dense"
DENSE_FILE = "dense.pt"
MODEL_NAME = "split_model"          # the logged model's name in the trial run


# -- rows of a front ---------------------------------------------------------------------------
def _plain(value):
    return value if value is None or isinstance(value, (bool, int, float)) else tracking.mask_secrets(str(value))


def study_rows(study: optuna.Study) -> list[dict]:
    """One row per COMPLETE trial of an Optuna study: number, study, params, objective values and
    user attributes (the trial's metrics and ``mlflow_run_id``)."""
    names = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        row = {"trial": t.number, "study": study.study_name, **{f"param.{k}": v for k, v in t.params.items()},
               **t.user_attrs}
        row.update(dict(zip(names, t.values)))
        row.pop("constraints", None)
        rows.append({k: _plain(v) for k, v in row.items()})
    return rows


def is_complete(run) -> bool:
    """A trial run of a COMPLETE trial: tagged so, or (older stores) FINISHED without the tag."""
    state = run.data.tags.get(STATE_TAG)
    return state == "COMPLETE" if state is not None else run.info.status == "FINISHED"


def _number(text, kind=float):
    try:
        return kind(float(text)) if text not in (None, "", "None") else None
    except ValueError:
        return None


def run_row(run) -> dict:
    """A trial run as a front row: trial number, study, run id, the searched settings and every
    final metric."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    row = {"trial": _number(tags.get("optuna.trial_number"), int), "study": tags.get("ecosplit.study"),
           "mlflow_run_id": run.info.run_id,
           "train_mu": metrics.get("train_mu", _number(params.get("train.mu"))),
           "prune.threshold": _number(params.get("prune.threshold")),
           "prune.finetune_epochs": _number(params.get("prune.finetune_epochs"), int),
           "objective.lam": _number(params.get("objective.lam"))}
    # MLflow stores an infinite value as the largest float (C_r when pruning removed every weight)
    row.update({k: math.copysign(math.inf, v) if abs(v) >= sys.float_info.max else v
                for k, v in metrics.items() if k not in row})
    return row


def trial_runs(experiment_ids: Iterable[str], studies: Iterable[str] | None = None) -> list:
    """The runs of COMPLETE trials in these experiments, of these sweeps (all when None)."""
    runs = MlflowClient().search_runs(list(experiment_ids), filter_string="tags.`ecosplit.role` = 'trial'",
                                      max_results=50000)
    keep = None if studies is None else set(studies)
    return [r for r in runs if is_complete(r) and (keep is None or r.data.tags.get("ecosplit.study") in keep)]


def with_lam(rows: list[dict], lam: float) -> list[dict]:
    """Rows whose ``objective`` is eq. (8) at ``lam``, from their logged val_loss and PS/PSNC
    energies (NaN for a row that lacks one: no rule picks it)."""
    def eq8(r: dict) -> float:
        terms = [r.get(k, math.nan) for k in ("val_loss", ENERGY_KEY, "energy_total_j_psnc")]
        return objective.scalar_objective(*terms, lam) if all(map(math.isfinite, terms)) and terms[2] > 0 else math.nan
    return [{**r, "objective.lam": lam, "objective": eq8(r)} for r in rows]


def pareto_table(rows: list[dict], rule: str, min_accuracy: float | None) -> tuple[list[dict], int]:
    """Mark the accuracy/energy front, feasibility and the rule's pick (index into rows, -1 if none)."""
    if not rows:
        return [], -1
    pts = np.array([[r.get(ENERGY_KEY, np.nan), r.get(ACCURACY_KEY, np.nan)] for r in rows], float)
    mask = objective.pareto_mask(pts, ["minimize", "maximize"])
    chosen = objective.select(rows, rule, ENERGY_KEY, ACCURACY_KEY, min_accuracy)
    out = [{**r, "on_front": bool(m), "feasible": bool(min_accuracy is None or r.get(ACCURACY_KEY, -1) >= min_accuracy),
            "selected": i == chosen} for i, (r, m) in enumerate(zip(rows, mask))]
    return out, chosen


def front_from_mlflow(tracking_uri: str, experiment: str | list[str], study_names: list[str] | None = None,
                      rule: str = "min_energy", min_accuracy: float | None = None) -> tuple[list[dict], int]:
    """The front over the COMPLETE trial runs of one or several sweeps in one or several experiments."""
    tracking.use(tracking_uri)
    client = MlflowClient()
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    ids = [e.experiment_id for e in map(client.get_experiment_by_name, names) if e is not None]
    if not ids:
        return [], -1
    return pareto_table([run_row(r) for r in trial_runs(ids, study_names)], rule, min_accuracy)


# -- the models of a trial run and of a registered version -----------------------------------------
def find_dense(cache_key: str, cache_dir: str | Path | None) -> SplitCNN | None:
    """The reuse cache's dense model for ``cache_key``: the local copy in ``cache_dir``, else the
    ``dense.pt`` of a FINISHED cache run tagged with the key in any experiment of the tracking store."""
    local = Path(cache_dir).expanduser() / f"{cache_key}.pt" if cache_dir else None
    if local is not None and local.is_file():
        return load_checkpoint(local)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1, filter_string=(
        f"tags.`{CACHE_KEY_TAG}` = '{cache_key}' and tags.`ecosplit.role` = '{CACHE_ROLE}' "
        "and attributes.status = 'FINISHED'"))
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return load_checkpoint(tracking.download(runs[0].info.run_id, DENSE_FILE, tmp))


def run_models(run_id: str, cache_dir: str | Path | None, setting: str = "train_run_id",
               need_dense: bool = True) -> tuple[SplitCNN | None, SplitCNN]:
    """(dense, pruned) of a train.py run (both checkpoints) or a sweep's trial run (``pruned.pt``;
    the dense model from the cache, by its ``ecosplit.cache_key`` tag). ``setting`` names the
    setting in the error raised for a run without them; with ``need_dense=False`` a dense model
    that cannot be found is None."""
    where = f"{setting}={run_id}"
    try:
        run = tracking.get_run(run_id)
    except Exception as exc:  # MLflow raises several types for a bad id
        raise ConfigError(f"{where}: no such run in {tracking.mask_secrets(mlflow.get_tracking_uri())} "
                          f"({type(exc).__name__})") from None
    role = run.data.tags.get("ecosplit.role", "none")
    try:
        folder = tracking.download(run_id, "checkpoints")
    except Exception as exc:  # nothing under checkpoints/, or the artifact store failed
        try:
            present = bool(MlflowClient().list_artifacts(run_id, "checkpoints"))
        except Exception:
            present = True
        if present:
            raise ConfigError(f"{where}: its checkpoints could not be read ({type(exc).__name__}: "
                              f"{tracking.mask_secrets(str(exc).splitlines()[0] if str(exc) else '')})") from None
        folder = None
    if folder is None or not (folder / "pruned.pt").is_file():
        raise ConfigError(f"{where}: the run has no checkpoints/pruned.pt (not a train.py or sweep trial run; "
                          f"its ecosplit.role: {role})")
    state = run.data.tags.get(STATE_TAG)
    if state not in (None, "COMPLETE"):
        log.warning("%s is the run of a trial that ended %s, not COMPLETE: its model is what the trial had logged",
                    where, state)
    pruned = load_checkpoint(folder / "pruned.pt")
    if (folder / DENSE_FILE).is_file():
        return load_checkpoint(folder / DENSE_FILE), pruned
    key = run.data.tags.get(CACHE_KEY_TAG)
    dense = find_dense(key, cache_dir) if key else None
    if dense is None and need_dense:
        raise ConfigError(f"{where}: its dense model (the baselines need it) is not in the run, nor in "
                          f"cache.dir={cache_dir} or any MLflow run tagged {CACHE_KEY_TAG}={key}")
    return dense, pruned


MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_model_uri(model_uri: str, setting: str = "model_uri") -> re.Match:
    match = MODEL_URI.match(str(model_uri))
    if match is None:
        raise ConfigError(f"{setting} must be models:/<name>@<alias> or models:/<name>/<version> (got {model_uri!r})")
    return match


def model_version(model_uri: str, setting: str = "model_uri"):
    """The registered model version behind ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
    match = parse_model_uri(model_uri, setting)
    client = MlflowClient()
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(match["name"], match["alias"])
        return client.get_model_version(match["name"], match["version"])
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"{setting}={model_uri}: no such registered model version in "
                          f"{tracking.mask_secrets(mlflow.get_tracking_uri())}") from None


def registered_models(model_uri: str, cache_dir: str | Path | None) -> tuple[SplitCNN, SplitCNN, str]:
    """(dense, pruned, trial run id) of a registered version: the pickled model and its
    ``extra_files/dense.pt``; a version registered before that format (a pt2 export) falls back to
    its source run's checkpoints, one registered without its dense model (``force=true``) to the
    trial's dense model in ``cache_dir`` or the cache's runs."""
    import mlflow.pytorch
    version = model_version(model_uri)
    if version.tags.get(FORMAT_TAG) != FORMAT:
        dense, pruned = run_models(version.run_id, cache_dir, setting=f"model_uri={model_uri}: its run")
        return dense, pruned, version.run_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        dense_file = folder / "extra_files" / DENSE_FILE
        pruned = mlflow.pytorch.load_model(str(folder))
        if dense_file.is_file():
            return load_checkpoint(dense_file), pruned, version.run_id
    # promoted with force=true while its trial's dense model was in no cache: looked for again
    # (cache.dir, the cache's runs), as for its trial run
    dense, _ = run_models(version.run_id, cache_dir, setting=f"model_uri={model_uri} (registered without its dense "
                          "model): its run")
    return dense, pruned, version.run_id


# -- registration ---------------------------------------------------------------------------------
def _version_of_run(client: MlflowClient, name: str, trial_run_id: str) -> str | None:
    """The newest version of ``name`` logged here from ``trial_run_id``, if any."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{trial_run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    ours = [int(v.version) for v in versions if v.tags.get(FORMAT_TAG) == FORMAT]
    return str(max(ours)) if ours else None


def register(trial_run_id: str, name: str, alias: str, row: dict, cache_dir: str | Path | None,
             need_dense: bool = False) -> str:
    """Point ``models:/<name>@<alias>`` at the pruned model of ``trial_run_id``; its first promotion
    logs the model (pickle + ``extra_files/dense.pt``) in that run and registers a version. With
    ``need_dense`` a trial whose dense model is in no cache is refused (``ConfigError``) instead of
    registered without it."""
    import mlflow.pytorch
    client = MlflowClient()
    version = _version_of_run(client, name, trial_run_id)
    if version is None:
        dense, pruned = run_models(trial_run_id, cache_dir, setting="trial run", need_dense=False)
        if dense is None and need_dense:
            raise ConfigError(
                f"trial {row.get('study')}:{row.get('trial')}: its dense model (the PSNC baseline; evaluate.py needs it) "
                f"is neither in its run, nor in cache.dir={cache_dir}, nor in a cache run of the tracking store: set "
                "cache.dir to the sweep's (cache-smoke for experiment=smoke), or force=true registers it without")
        tags = {"trial": str(row.get("trial")), "study": str(row.get("study")), "ecosplit.trial_run_id": trial_run_id,
                FORMAT_TAG: FORMAT}
        with tempfile.TemporaryDirectory() as tmp:
            extra = []
            if dense is None:
                log.warning("the dense model of trial %s is in no cache: registered without it (evaluate.py "
                            "model_uri=... looks for it again in cache.dir and the cache's runs)", row.get("trial"))
                tags["ecosplit.dense"] = "missing"
            else:
                save_checkpoint(dense, Path(tmp) / DENSE_FILE)
                extra.append(str(Path(tmp) / DENSE_FILE))
            example = np.zeros((2, 1, 28, 28), dtype=np.float32)
            ended = client.get_run(trial_run_id).info
            before = _run_models(client, ended.experiment_id, trial_run_id)
            info = None
            try:
                with mlflow.start_run(run_id=trial_run_id), _quiet_pickle_warning():
                    # pickle keeps the class (client()/server()); explicit requirements skip MLflow's
                    # inference, which would load the model in a subprocess
                    info = mlflow.pytorch.log_model(pruned.eval(), name=MODEL_NAME, serialization_format="pickle",
                                                    input_example=example, extra_files=extra,
                                                    pip_requirements=mlflow.pytorch.get_default_pip_requirements())
                version = mlflow.register_model(info.model_uri, name, tags=tags).version
            finally:
                _put_back(client, ended, before, info, registered=version is not None, name=name)
    client.set_registered_model_alias(name, alias, version)
    return str(version)


def _put_back(client: MlflowClient, ended, before: set[str], info, registered: bool, name: str) -> None:
    """After logging a model in a trial's run, however that ended (Ctrl-C and errors included):
    the run's status and end time as the trial left them (reopening the run ended it anew: the UI
    would show the selected trial lasting until the promotion, or FAILED), and, if no version was
    made, the model logged here removed (a next promotion logs its own). Best effort: a failure
    here is a warning, and a Ctrl-C stops it (a hung server would make each call retry for
    minutes); it is raised only if it came here, i.e. after the version was made."""
    run_id = ended.run_id
    try:
        client.set_terminated(run_id, status=ended.status, end_time=ended.end_time)
        if not registered and _version_of_run(client, name, run_id) is None:
            # the one this call logged; if log_model was interrupted, whatever appeared since
            logged = {info.model_id} if info is not None else _run_models(client, ended.experiment_id, run_id) - before
            for model_id in logged:
                client.delete_logged_model(model_id)
    except KeyboardInterrupt:
        log.warning("trial run %s left as the interrupted promotion left it", run_id)
        if registered:
            raise
    except Exception as e:
        log.warning("could not put trial run %s back as it was: %s", run_id, e)


def _run_models(client: MlflowClient, experiment_id: str, run_id: str) -> set[str]:
    """The ids of the registrable models (``MODEL_NAME``) logged in the run."""
    found = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'", max_results=1000)
    return {m.model_id for m in found}


class _quiet_pickle_warning(logging.Filter):
    """MLflow warns on every pickle save; the format is chosen on purpose (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()

    def __enter__(self):
        logging.getLogger("mlflow.pytorch").addFilter(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("mlflow.pytorch").removeFilter(self)


REGISTERING_TAG = "ecosplit.registering"  # on the parent run: "<trial run id>:<name>@<alias>:<worker token>"
REGISTERED_TAG = "ecosplit.registered"  # on the parent run, once the alias is set: "<trial run id>:<name>@<alias>:<version>"


def prepare_registration() -> threading.Thread:
    """Start, in a daemon thread, the slowest step of ``register`` that does not depend on the
    model: MLflow's map of the installed packages (it reads every distribution's file list to
    check the model's requirements; ~0.4 s of CPU, 1-4 s on a busy disk, then kept for the
    process). A sweep calls it at its start, so its end registers that much sooner."""
    def warm() -> None:
        try:
            from mlflow.utils import requirements_utils
            requirements_utils._init_modules_to_packages_map()
        except Exception as e:  # another MLflow: the registration builds it as before
            log.debug("MLflow's package map not prepared: %s", e)
    thread = threading.Thread(target=warm, name="ecosplit-mlflow-packages", daemon=True)
    thread.start()
    return thread


def _registered_version(name: str, alias: str, trial_run_id: str) -> str | None:
    """The version behind models:/name@alias if it comes from trial_run_id, else None."""
    try:
        current = MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None  # no such model or alias yet
    return current.version if current.run_id == trial_run_id else None


def _volunteer(client: MlflowClient, parent_run_id: str, me: str, pause_s: float) -> None:
    """Write the registering tag. Two workers writing it first at the same moment can both try to
    insert it, and the store refuses the second (seen on PostgreSQL behind a tracking server:
    UniqueViolation on tag_pk); once it exists the write is an update, so it is tried once more."""
    try:
        client.set_tag(parent_run_id, REGISTERING_TAG, me)
    except mlflow.exceptions.MlflowException as e:
        log.debug("registering tag: %s; writing it once more", str(e).splitlines()[0] if str(e) else e)
        time.sleep(pause_s)
        client.set_tag(parent_run_id, REGISTERING_TAG, me)


def register_once(client: MlflowClient, parent_run_id: str, sel: dict, name: str, alias: str,
                  cache_dir: str | Path | None, settle_s: float = 1.0, wait_s: float = 120.0,
                  poll_s: float = 0.2) -> tuple[str, bool]:
    """Register the selected trial's model once although every worker ends the sweep (best effort):
    a worker volunteers on the parent run's tag, the last volunteer to write it registers, the
    others look for the alias every ``poll_s`` (and take over after wait_s if it never comes).
    (version, whether the alias points at it). Once the alias is set, the parent run says so
    (``REGISTERED_TAG``): a later end of the same sweep (a re-run once it finished, to the same
    name and alias) finds its pick there and leaves the alias where a promotion since has put it."""
    trial_run_id = sel["mlflow_run_id"]
    target = f"{trial_run_id}:{name}@{alias}"  # neither a name nor an alias holds ':'
    me = f"{target}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        version = _registered_version(name, alias, trial_run_id)
        if version is not None:
            return version, True
        tags = client.get_run(parent_run_id).data.tags
        done = tags.get(REGISTERED_TAG, "")
        if done.startswith(target + ":"):  # this sweep pointed the alias at its pick; moved since
            return done.rsplit(":", 1)[1], False
        claim = tags.get(REGISTERING_TAG, "")
        if not claim.startswith(target + ":"):  # nobody is on it: volunteer
            _volunteer(client, parent_run_id, me, poll_s)
            time.sleep(settle_s)  # let simultaneous volunteers write too; the last one wins
            claim = client.get_run(parent_run_id).data.tags.get(REGISTERING_TAG)
        if claim == me:
            return _register_and_say_so(client, parent_run_id, target, trial_run_id, name, alias, sel, cache_dir), True
        time.sleep(poll_s)
    log.warning("the model of trial %s was not registered by another worker within %.0f s: registering it here",
                sel["trial"], wait_s)
    return _register_and_say_so(client, parent_run_id, target, trial_run_id, name, alias, sel, cache_dir), True


def _register_and_say_so(client: MlflowClient, parent_run_id: str, target: str, trial_run_id: str, name: str,
                         alias: str, sel: dict, cache_dir: str | Path | None) -> str:
    version = register(trial_run_id, name, alias, sel, cache_dir)
    client.set_tag(parent_run_id, REGISTERED_TAG, f"{target}:{version}")
    return version


# -- the command line -------------------------------------------------------------------------------
ACTIONS = ("list", "promote")
SHOW = ("all", "front")


def validate_front(cfg: DictConfig) -> None:
    if cfg.action not in ACTIONS:
        raise ConfigError(f"action must be one of {', '.join(ACTIONS)} (got {cfg.action!r})")
    if cfg.rule not in objective.RULES:
        raise ConfigError(f"rule must be one of {', '.join(objective.RULES)} (got {cfg.rule!r})")
    if cfg.show not in SHOW:
        raise ConfigError(f"show must be one of {', '.join(SHOW)} (got {cfg.show!r})")
    if cfg.force not in (True, False):
        raise ConfigError(f"force must be true or false (got {cfg.force!r})")
    check_range(cfg, "selection.min_val_accuracy", 0, 1)
    validate_tracking(cfg)
    validate_registration(cfg, required=cfg.action == "promote")
    if cfg.lam is not None:
        check_range(cfg, "lam", 0, 1)
    if not names(cfg.experiments):
        raise ConfigError("experiments must name at least one MLflow experiment (got [])")
    if cfg.trial is not None and cfg.action != "promote":
        raise ConfigError(f"trial={cfg.trial} needs action=promote (got action={cfg.action})")


def names(value) -> list[str]:
    """A list setting of names (experiments, studies) given as a list, one name, or null."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    return [str(v) for v in value]


def _experiment_ids(cfg: DictConfig) -> list[str]:
    uri = tracking.mask_secrets(cfg.tracking.uri)
    if not tracking.store_exists(cfg.tracking.uri):  # reading it would create an empty store
        raise ConfigError(f"tracking.uri={uri} does not exist (set tracking.uri to the store the sweeps recorded in)")
    tracking.use(cfg.tracking.uri, cfg.tracking.sqlite_wal)
    client = MlflowClient()
    ids = []
    for name in names(cfg.experiments):
        found = client.get_experiment_by_name(name)
        if found is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise ConfigError(f"experiments: no MLflow experiment {name!r} in {uri} (available: {known})")
        ids.append(found.experiment_id)
    return ids


def front_rows(cfg: DictConfig) -> list[dict]:
    """The COMPLETE trial rows of the configured experiments and sweeps, eq. (8) at ``lam`` if set."""
    runs = trial_runs(_experiment_ids(cfg))
    known = sorted({str(r.data.tags.get("ecosplit.study")) for r in runs})
    studies = names(cfg.studies)
    for name in studies:
        if name not in known:
            raise ConfigError(f"studies: no sweep {name!r} with COMPLETE trials in experiments="
                              f"{list(cfg.experiments)} (sweeps there: {', '.join(known) or 'none'})")
    rows = [run_row(r) for r in runs if not studies or r.data.tags.get("ecosplit.study") in studies]
    rows.sort(key=lambda r: (str(r["study"]), -1 if r["trial"] is None else r["trial"]))
    if cfg.lam is not None:
        rows = with_lam(rows, float(cfg.lam))
    elif cfg.rule == "best_objective":
        lams = {r["objective.lam"] for r in rows if r["objective.lam"] is not None}
        if len(lams) > 1:
            raise ConfigError(f"rule=best_objective over sweeps with different objective.lam "
                              f"({', '.join(map(str, sorted(lams)))}): set lam=<value in [0, 1]> to rank them at one lambda")
    return rows


def _ranges(numbers: list) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    numbers = sorted(n for n in numbers if n is not None)
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _find_trial(rows: list[dict], trial) -> dict:
    """The row named by ``trial``: N, or <study>:N."""
    text = str(trial)
    study, _, number = text.rpartition(":")
    if not re.fullmatch(r"\d+", number):
        raise ConfigError(f"trial must be a trial number N or <study>:N (got {text!r})")
    matches = [r for r in rows if r["trial"] == int(number) and (not study or r["study"] == study)]
    if not matches:
        by_study: dict[str, list[int]] = {}
        for r in rows:
            by_study.setdefault(str(r["study"]), []).append(r["trial"])
        numbers = "; ".join(f"{k}: {_ranges(v)}" for k, v in by_study.items()) or "none"
        raise ConfigError(f"trial={text}: no COMPLETE trial {text} among the listed sweeps (trials: {numbers})")
    if len(matches) > 1 and study:
        runs = ", ".join(str(r.get("mlflow_run_id")) for r in matches)
        raise ConfigError(f"trial={text} matches {len(matches)} trial runs ({runs}): one sweep name in several listed "
                          "experiments (list only the one to promote from, experiments=[<name>]) or one sweep "
                          "recorded twice in one")
    if len(matches) > 1:
        raise ConfigError(f"trial={text} is in several sweeps ({', '.join(r['study'] for r in matches)}): "
                          f"give trial=<study>:{number}")
    return matches[0]


def pick(cfg: DictConfig, rows: list[dict], chosen: int) -> dict:
    """The row to promote: the named trial (on the front and feasible unless ``force``) or the rule's pick."""
    if cfg.trial is None:
        if chosen < 0:
            raise ConfigError(f"rule={cfg.rule}: no trial with val_accuracy >= selection.min_val_accuracy="
                              f"{cfg.selection.min_val_accuracy} among {len(rows)} COMPLETE trials")
        return rows[chosen]
    row = _find_trial(rows, cfg.trial)
    if not cfg.force:
        if not row["on_front"]:
            raise ConfigError(f"trial={cfg.trial} is not on the accuracy/energy front (another trial has no more "
                              "energy and no less val_accuracy): force=true promotes it anyway")
        if not row["feasible"]:
            raise ConfigError(f"trial={cfg.trial} has val_accuracy {row[ACCURACY_KEY]:.4f} < selection.min_val_accuracy="
                              f"{cfg.selection.min_val_accuracy}: force=true promotes it anyway")
    return row


COLUMNS = (  # header, row keys tried in order, format
    ("trial", ("trial",), "{}"), ("study", ("study",), "{}"), ("mu", ("train_mu",), "{:.7g}"),
    ("threshold", ("prune.threshold", "param.prune.threshold"), "{:.4g}"),
    ("finetune epochs", ("prune.finetune_epochs", "param.prune.finetune_epochs"), "{}"),
    ("val acc", ("val_accuracy",), "{:.4f}"), ("test acc", ("test_accuracy",), "{:.4f}"),
    ("PS energy (uJ)", (ENERGY_KEY,), "{:.4g}"), ("C_r", ("compression_ratio",), "{:.2f}"),
    ("objective", ("objective",), "{:.4f}"), ("feasible", ("feasible",), "{}"), ("on_front", ("on_front",), "{}"),
)


def _cell(row: dict, keys, fmt: str) -> str:
    value = next((row[k] for k in keys if row.get(k) is not None), None)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if keys[0] == ENERGY_KEY:
        value = 1e6 * value
    return "yes" if value is True else "no" if value is False else fmt.format(value)


def format_table(rows: list[dict], notes: dict[int, str]) -> str:
    """Markdown table of the rows; ``notes`` (row index -> text) fill a last column."""
    head = [c[0] for c in COLUMNS] + ["pick"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join([_cell(row, keys, fmt) for _, keys, fmt in COLUMNS] + [notes.get(i, "")]) + " |")
    return "\n".join(lines)


def run_front(cfg: DictConfig) -> dict:
    """``python -m pipeline.front``: print the front table; with ``action=promote`` move the alias.
    Returns {"rows", "chosen" (the rule's pick, -1 if none), "promoted" (row or None), "version"}."""
    validate_front(cfg)
    tracking.check_configured_server(cfg)
    rows, chosen = pareto_table(front_rows(cfg), cfg.rule, cfg.selection.min_val_accuracy)
    name, alias = registration_names(cfg)
    promoted = pick(cfg, rows, chosen) if cfg.action == "promote" else None  # every check before any change
    version = None
    if promoted is not None:
        version = register(promoted["mlflow_run_id"], name, alias, promoted, cfg.cache.dir, need_dense=not cfg.force)
    notes = {i: f"<- {cfg.rule}" for i in [chosen] if i >= 0}
    try:
        current = MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        current = None
    holder = next((i for i, r in enumerate(rows) if current is not None and r["mlflow_run_id"] == current.run_id), None)
    if holder is not None:
        notes[holder] = " ".join(filter(None, [notes.get(holder), f"@{alias}"]))
    shown = [i for i, r in enumerate(rows) if cfg.show == "all" or r["on_front"]]
    print(format_table([rows[i] for i in shown], {k: notes[i] for k, i in enumerate(shown) if i in notes}))
    studies = sorted({str(r["study"]) for r in rows})
    floor = cfg.selection.min_val_accuracy
    feasible = "every trial (no selection.min_val_accuracy)" if floor is None else f"val_accuracy >= {floor}"
    print(f"{len(rows)} COMPLETE trials of {', '.join(studies) or 'no sweep'}; {sum(r['on_front'] for r in rows)} on the "
          f"front; feasible: {feasible}; PS energy at the sweep's bandwidth")
    if promoted is not None:
        print(f"promoted trial {promoted['trial']} of {promoted['study']} (run {promoted['mlflow_run_id']}) "
              f"-> models:/{name}@{alias} (version {version})")
    elif current is not None:
        where = (f"trial {rows[holder]['trial']} of {rows[holder]['study']}" if holder is not None
                 else f"run {current.run_id}, not among these trials")
        print(f"models:/{name}@{alias} is version {current.version}: {where}")
    elif chosen < 0 and rows:
        print(f"rule={cfg.rule}: no trial meets selection.min_val_accuracy={cfg.selection.min_val_accuracy}")
    return {"rows": rows, "chosen": chosen, "promoted": promoted, "version": version}


@hydra.main(version_base="1.3", config_path="../conf", config_name="front")
@user_errors_exit
def main(cfg: DictConfig):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the table stays readable
    return run_front(cfg)


if __name__ == "__main__":
    run_script(main)
