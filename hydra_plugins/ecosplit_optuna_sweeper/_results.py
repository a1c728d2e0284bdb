"""``optimization_results.yaml`` in the sweep dir: the study's outcome, readable without Optuna."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from ._search_space import SearchSpace
from ._settings import Settings
from .masking import mask_secrets, redact_url

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")


def write_results(
    study: optuna.Study, settings: Settings, space: SearchSpace, n_trials: int, out_dir: Path
) -> Path:
    counts = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    res: Dict[str, Any] = {
        "name": "ecosplit_optuna",
        "study_name": study.study_name,
        "storage": redact_url(settings.storage_url),
        "directions": list(settings.directions),
        "objectives": settings.objective_names,
        "constraints": [c.text for c in settings.constraints] or None,
        "n_trials": n_trials,
        "trial_states": counts,
    }
    if space.fixed:
        res["fixed_params"] = {f.name: mask_secrets(f.value_text) for f in space.fixed.values()}
    if len(settings.directions) == 1:
        try:
            bt = study.best_trial
            res.update(best_trial=bt.number, best_params=dict(bt.params), best_value=bt.value,
                       best_user_attrs=dict(bt.user_attrs))
        except (ValueError, RuntimeError):
            res.update(best_trial=None, best_params=None, best_value=None)
            log.warning("no (feasible) COMPLETE trial: no best trial to report")
    else:
        res["best_trials"] = [
            {"number": t.number, "params": dict(t.params), "values": list(t.values),
             "user_attrs": dict(t.user_attrs)}
            for t in sorted(study.best_trials, key=lambda t: t.number)
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "optimization_results.yaml"
    OmegaConf.save(OmegaConf.create(_yaml_safe(res)), path)
    if len(settings.directions) == 1:
        log.info("Best: value=%s params=%s", res.get("best_value"), res.get("best_params"))
    else:
        log.info("Pareto front: %d trial(s)", len(res["best_trials"]))
    log.info("results written to %s", path)
    return path


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
