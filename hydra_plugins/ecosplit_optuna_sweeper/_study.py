"""Open (create or resume) the study, and keep it one experiment definition.

What defines a study: its objectives (names, directions), constraints, the search space, the
fixed overrides, and whatever the app's ``definition`` hook adds (e.g. the objective's
weight and the data selection). A readable copy and its sha256 are stored as study user
attributes when the study is created; a re-run whose definition differs is refused with
the difference, before any trial. Budget, parallelism, sampler and recovery settings are
not part of it: they may change between runs (e.g. a larger ``n_trials`` extends a study).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from typing import Any, Dict, List, Mapping, Optional

import optuna

from ._outcome import ConfigError
from ._search_space import SearchSpace
from ._settings import Settings
from .masking import mask_secrets, redact_url

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

DEFINITION = "ecosplit_optuna:definition"
DEFINITION_HASH = "ecosplit_optuna:definition_sha256"
# what tells this study from an earlier one of the same name (deleted and made again, or in
# another storage): made with the study, so records kept elsewhere (MLflow runs) can name it
STUDY_UUID = "ecosplit_optuna:study_uuid"


def definition(settings: Settings, space: SearchSpace, app: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The study's definition as plain JSON data (passwords masked)."""
    out: Dict[str, Any] = {
        "directions": list(settings.directions),
        "objectives": settings.objective_names,
        "constraints": [c.text for c in settings.constraints],
        "search_space": {n: repr(d) for n, d in sorted(space.distributions.items())},
        "custom_search_space": settings.custom_search_space,
    }
    if app is None:
        out["fixed"] = sorted(mask_secrets(f.override) for f in space.fixed.values())
    else:
        out["app"] = json.loads(json.dumps(app, sort_keys=True, default=str))
        # fixed values of hydra.sweeper.params reach the jobs only, never the config the app
        # sees here (command-line ones do, and the app judges which of them matter)
        from_params = sorted(mask_secrets(f.override) for f in space.fixed.values() if f.name in settings.params)
        if from_params:
            out["fixed_params"] = from_params
    return _integral_floats_as_ints(json.loads(mask_secrets(json.dumps(out, sort_keys=True))))


def _integral_floats_as_ints(x: Any) -> Any:
    """1.0 -> 1: ``objective.lam=1`` on the command line and ``lam: 1.0`` in a file are one value."""
    if isinstance(x, dict):
        return {k: _integral_floats_as_ints(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_integral_floats_as_ints(v) for v in x]
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def digest(defn: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(defn, sort_keys=True).encode()).hexdigest()


def differences(old: Any, new: Any, prefix: str = "") -> List[str]:
    """``key: old -> new`` for every leaf that differs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: List[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += differences(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{prefix}{k}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
    return []


def _set_uuid(study: optuna.Study, created: bool) -> None:
    """Only the process that made the study gives it its uuid: workers started together never
    write two. A study loaded without one is given one derived from what every worker reads the
    same (its id and name): one made before the attribute, once a moment has shown that no
    creator is about to write it."""
    import time
    import uuid

    if created:
        study.set_user_attr(STUDY_UUID, uuid.uuid4().hex)
        return
    deadline = time.monotonic() + (0 if study.get_trials(deepcopy=False) else 5.0)
    while STUDY_UUID not in study.user_attrs:
        if time.monotonic() >= deadline:
            key = f"{study._study_id}:{study.study_name}".encode()
            study.set_user_attr(STUDY_UUID, hashlib.sha256(key).hexdigest()[:32])
            return
        time.sleep(0.1)


def open_study(
    settings: Settings, storage: Any, sampler: Any, pruner: Any, defn: Dict[str, Any]
) -> optuna.Study:
    """Create the study, or load it and check that it is the same experiment."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kwargs = dict(storage=storage, sampler=sampler, pruner=pruner, study_name=settings.study_name,
                      directions=settings.directions)
        try:
            study = optuna.create_study(**kwargs)
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # made before, or by a worker started together
            study = optuna.create_study(**kwargs, load_if_exists=True)
            created = False
    where = redact_url(settings.storage_url)
    have = [d.name.lower() for d in study.directions]
    if have != settings.directions:
        raise ConfigError(
            f"hydra.sweeper.study_name: study '{study.study_name}' in {where} has directions "
            f"{have}, not {settings.directions}; choose another hydra.sweeper.study_name"
        )
    attrs = study.user_attrs
    new_hash = digest(defn)
    if DEFINITION_HASH not in attrs:
        # a new study, or one made by another tool: this run defines it
        study.set_user_attr(DEFINITION, defn)
        study.set_user_attr(DEFINITION_HASH, new_hash)
    elif attrs[DEFINITION_HASH] != new_hash:
        diff = differences(attrs.get(DEFINITION, {}), defn)
        shown = "; ".join(diff[:6]) + (f"; ... ({len(diff)} in all)" if len(diff) > 6 else "")
        raise ConfigError(
            f"hydra.sweeper.study_name: study '{study.study_name}' in {where} was defined "
            f"differently ({shown or 'definition hash differs'}); to run this definition, "
            f"start a new study with hydra.sweeper.study_name={study.study_name}-2 (or "
            f"another new name)"
        )
    _set_uuid(study, created)
    if settings.objective_names and list(study.metric_names or []) != settings.objective_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.objective_names)
    return study
