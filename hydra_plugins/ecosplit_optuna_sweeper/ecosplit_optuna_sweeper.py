"""The Hydra ``Sweeper`` plugin class (thin: the implementation is imported lazily so that
Hydra's plugin scan, which imports this module in every Hydra app, does not import Optuna)."""

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from . import config as _config  # noqa: F401  (registers the structured configs)


class EcosplitOptunaSweeper(Sweeper):
    """Optuna (>= 5, ask-and-tell) sweeper; see the package README for the settings."""

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
        from ._impl import EcosplitOptunaSweeperImpl

        self.sweeper = EcosplitOptunaSweeperImpl(
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            objectives=objectives,
            constraints=constraints,
            storage=storage,
            engine_kwargs=engine_kwargs,
            study_name=study_name,
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_failure_rate=max_failure_rate,
            params=params,
            custom_search_space=custom_search_space,
            search_space=search_space,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
            progress_bar=progress_bar,
            on_complete=on_complete,
            on_start=on_start,
            on_abort=on_abort,
            definition=definition,
        )

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        """Run the sweep; returns the ``optuna.Study``."""
        return self.sweeper.sweep(arguments)

    def get_study(self) -> Any:
        """The ``optuna.Study`` of the last sweep (None before)."""
        return self.sweeper.get_study()
