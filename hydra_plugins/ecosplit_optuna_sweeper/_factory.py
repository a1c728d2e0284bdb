"""Samplers and pruners from their configs, for the sweeper and for job processes alike."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, Optional, Tuple

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ._search_space import SearchSpace, grid_values
from ._settings import plain

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")


def is_grid(sampler_cfg: Any) -> bool:
    return str(sampler_cfg.get("_target_", "")).endswith("GridSampler")


def is_nop(pruner_cfg: Any) -> bool:
    return str(pruner_cfg.get("_target_", "")).endswith("NopPruner")


def derived_seed(seed: int, n_existing_trials: int) -> int:
    """A seeded sampler replays its sequence from the start, so a re-run of the same command
    (resume, restart after a crash) would propose the points it already ran: derive the seed
    from the study's progress instead (still reproducible)."""
    return (int(seed) + 1_000_003 * n_existing_trials) % (2**32)


def make_sampler(
    cfg: DictConfig, space: SearchSpace, n_trials: int, seed: Optional[int] = None
) -> Tuple[optuna.samplers.BaseSampler, int]:
    """The sampler and the trial budget (a grid caps it at the grid size)."""
    if seed is not None:
        cfg = OmegaConf.merge(cfg, {"seed": seed})
    kwargs: Dict[str, Any] = {}
    if is_grid(cfg):
        grid = plain(cfg.get("search_space"))
        if not grid:
            grid = {name: grid_values(name, d) for name, d in space.distributions.items()}
            kwargs["search_space"] = grid
        size = 1
        for v in grid.values():
            size *= len(v)
        if size < n_trials:
            log.info("grid sampler: n_trials capped at the grid size %d", size)
            n_trials = size
    sampler = _instantiate("hydra.sweeper.sampler", cfg, **kwargs)
    return sampler, n_trials


def _instantiate(setting: str, cfg: DictConfig, **kwargs: Any) -> Any:
    """The sampler or pruner ``cfg`` describes; one it refuses (a seed out of range, a percentile
    of 150) is a ``ConfigError`` naming ``setting`` and Optuna's reason, not Hydra's traceback."""
    from hydra.errors import InstantiationException

    from ._outcome import ConfigError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return instantiate(cfg, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if not isinstance(cause, (ValueError, TypeError)):
            raise
        target = str(cfg.get("_target_", "")).rsplit(".", 1)[-1]
        raise ConfigError(f"{setting}: {target} refused its settings: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}") from None


def make_pruner(cfg: DictConfig, n_objectives: int) -> optuna.pruners.BasePruner:
    """Optuna cannot prune multi-objective trials (``trial.report`` raises): no pruner then."""
    if n_objectives > 1:
        return optuna.pruners.NopPruner()
    return _instantiate("hydra.sweeper.pruner", cfg)


def from_job_config(sweeper_cfg: Any, n_objectives: int) -> Tuple[Any, Any]:
    """(pruner, sampler) for a job process that rebuilds its trial from the storage.

    The pruner decides ``should_prune()`` there, so failing to rebuild it changes behaviour:
    a WARNING names the cause. The sampler only matters for ``suggest_*`` calls inside the
    task; a grid (which needs the derived grid) or an unbuildable one becomes random.
    """
    pruner: Any = optuna.pruners.NopPruner()
    sampler: Any = optuna.samplers.RandomSampler()
    p_cfg = sweeper_cfg.get("pruner") if sweeper_cfg is not None else None
    if p_cfg is not None and p_cfg.get("_target_") and not is_nop(p_cfg):
        try:
            pruner = make_pruner(p_cfg, n_objectives)
        except Exception as e:
            log.warning(
                "this job cannot rebuild hydra.sweeper.pruner (%s: %s): the trial is never "
                "pruned here", type(e).__name__, e,
            )
    s_cfg = sweeper_cfg.get("sampler") if sweeper_cfg is not None else None
    if s_cfg is not None and s_cfg.get("_target_") and not is_grid(s_cfg):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = instantiate(s_cfg, _convert_="all")
        except Exception as e:
            log.warning(
                "this job cannot rebuild hydra.sweeper.sampler (%s: %s): suggest_* calls "
                "inside the task sample at random", type(e).__name__, e,
            )
    return pruner, sampler
