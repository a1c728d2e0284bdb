"""Structured configs of the ``ecosplit_optuna`` sweeper, registered in Hydra's ConfigStore.

Groups:
  ``hydra/sweeper``:                   ``ecosplit_optuna``
  ``hydra/sweeper/ecosplit_sampler``:  tpe (default), random, cmaes, nsgaii, nsgaiii, grid, qmc,
                                       gp, bruteforce
  ``hydra/sweeper/ecosplit_pruner``:   none (default), median, percentile, successive_halving,
                                       hyperband

This module must stay light (no optuna import): Hydra's plugin scanner imports it in every
Hydra app of the environment.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SWEEPER_TARGET = (
    "hydra_plugins.ecosplit_optuna_sweeper.ecosplit_optuna_sweeper.EcosplitOptunaSweeper"
)


# --------------------------------------------------------------------------- samplers
@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    """optuna.samplers.TPESampler (Optuna 5 defaults; None = Optuna's default)."""

    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: Optional[bool] = None
    group: bool = False
    warn_independent_sampling: Optional[bool] = None
    constant_liar: bool = True


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: Optional[float] = None
    # e.g. {_target_: optuna.samplers.nsgaii.SBXCrossover}
    crossover: Optional[Any] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class NSGAIIISamplerConfig(NSGAIISamplerConfig):
    _target_: str = "optuna.samplers.NSGAIIISampler"
    dividing_parameter: int = 3


@dataclass
class GridSamplerConfig(SamplerConfig):
    """``search_space: null`` derives the grid from ``params`` (choice / range / int
    intervals); ``n_trials`` is then capped at the grid size."""

    _target_: str = "optuna.samplers.GridSampler"
    search_space: Optional[Dict[str, Any]] = None


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.GPSampler"
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    warn_independent_sampling: bool = True


@dataclass
class BruteForceSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.BruteForceSampler"
    avoid_premature_stop: bool = False


SAMPLERS: Dict[str, Any] = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "nsgaiii": NSGAIIISamplerConfig,
    "grid": GridSamplerConfig,
    "qmc": QMCSamplerConfig,
    "gp": GPSamplerConfig,
    "bruteforce": BruteForceSamplerConfig,
}


# --------------------------------------------------------------------------- pruners
@dataclass
class PrunerConfig:
    _target_: str = MISSING


@dataclass
class NopPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # "auto" or int
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # "auto" or int
    reduction_factor: int = 3
    bootstrap_count: int = 0


PRUNERS: Dict[str, Any] = {
    "none": NopPrunerConfig,
    "median": MedianPrunerConfig,
    "percentile": PercentilePrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
}


# --------------------------------------------------------------------------- sweeper
@dataclass
class ObjectiveConfig:
    # key in the mapping returned by the task (dotted for nested mappings)
    name: str = MISSING
    direction: Optional[str] = None  # minimize | maximize; null: from hydra.sweeper.direction


@dataclass
class EcosplitOptunaSweeperConf:
    _target_: str = SWEEPER_TARGET
    # the sweeper instantiates sampler/pruner itself (grid search space, name lookup)
    _recursive_: bool = False
    defaults: List[Any] = field(default_factory=lambda: [{"ecosplit_sampler": "tpe"}, {"ecosplit_pruner": "none"}])

    sampler: Any = MISSING
    pruner: Any = MISSING

    # "minimize" | "maximize" | a list of them (multi-objective).
    # Ignored when `objectives` is set (objectives carry their own directions).
    direction: Any = "minimize"
    # [{name: val_loss, direction: minimize}, ...]: which entries of a returned mapping are
    # the objectives; the other finite numeric/str entries become trial user attributes.
    objectives: Optional[List[ObjectiveConfig]] = None
    # ["val_accuracy >= 0.97", "latency_ms <= 20"]: Optuna-convention values (<= 0 feasible)
    constraints: Optional[List[str]] = None

    # null = in-memory; or an RDB URL: sqlite:///optuna.db, postgresql://user:pw@host/db
    storage: Optional[str] = None
    engine_kwargs: Optional[Dict[str, Any]] = None
    # SQLite file storages: write-ahead log + synchronous=NORMAL (a commit costs no fsync;
    # durable across crashes of the process, not across power loss). false: SQLite's defaults
    sqlite_wal: bool = True
    study_name: Optional[str] = None

    # study-wide TOTAL of COMPLETE + PRUNED + RUNNING + WAITING trials (FAIL not counted)
    n_trials: int = 20
    # trials asked and launched per batch: with hydra/launcher=joblib (its n_jobs: -1, every core)
    # the trials of a batch run at once
    n_jobs: int = 1
    # abort when this run's failed trials exceed this x this run's budget (0..1; 0: at the first)
    max_failure_rate: float = 0.0
    # exception classes (dotted paths, e.g. [my_pkg.train.Diverged]) a trial raises as an outcome
    # of its parameters, not as a bug: its FAIL line gives the reason and no traceback is logged
    # (the first other exception of a run is logged with its traceback)
    expected_failures: Optional[List[str]] = None

    # search space in Hydra's override grammar; command-line sweeps are merged over it
    params: Optional[Dict[str, Any]] = None
    # dotted path to fn(cfg, trial) -> Optional[dict of fixed params]
    custom_search_space: Optional[str] = None
    # deprecated in the official plugin; kept so old configs get a clear error
    search_space: Optional[Dict[str, Any]] = None

    # heartbeat (RDB storage only; on by default): a RUNNING trial whose process stopped
    # beating for grace_period seconds (null = 3 * heartbeat_interval) is failed and retried
    # with the same params up to max_retry times (null = forever). A trial whose owner process
    # ran on this host and is gone is freed at once. heartbeat_interval=null turns both off.
    heartbeat_interval: Optional[int] = 10
    grace_period: Optional[int] = None
    max_retry: Optional[int] = 3

    # null = live bar on a TTY, one log line per finished trial otherwise
    progress_bar: Optional[bool] = None
    # dotted path to fn(study, cfg) called once after a successful sweep
    on_complete: Optional[str] = None
    # dotted path to fn(study, cfg) called once after the study is loaded, before any trial
    # (create tracking stores and parent runs here, in one process, before workers race)
    on_start: Optional[str] = None
    # dotted path to fn(study, cfg, status, reason) called once when the sweep stops before
    # completing; status is "FAILED" (configuration error, max_failure_rate, a crash) or
    # "KILLED" (interrupted)
    on_abort: Optional[str] = None
    # dotted path to fn(cfg) -> mapping: what defines the experiment besides the search space
    # (e.g. the objective and the data selection). Called before the study is opened; stored
    # on the study with a hash, and a re-run whose definition differs is refused.
    definition: Optional[str] = None


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(
        group="hydra/sweeper",
        name="ecosplit_optuna",
        node=EcosplitOptunaSweeperConf,
        provider="ecosplit_optuna_sweeper",
    )
    for name, node in SAMPLERS.items():
        cs.store(
            group="hydra/sweeper/ecosplit_sampler",
            name=name,
            node=node,
            package="hydra.sweeper.sampler",
            provider="ecosplit_optuna_sweeper",
        )
    for name, node in PRUNERS.items():
        cs.store(
            group="hydra/sweeper/ecosplit_pruner",
            name=name,
            node=node,
            package="hydra.sweeper.pruner",
            provider="ecosplit_optuna_sweeper",
        )


register_configs()
