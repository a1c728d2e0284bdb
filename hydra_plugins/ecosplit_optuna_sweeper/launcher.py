"""``hydra/launcher=ecosplit``: Hydra's basic launcher (jobs one after the other, in this
process) with less work per job.

Hydra's ``BasicLauncher`` runs each job through ``hydra.core.utils.run_job``, which for a job
of a few hundred milliseconds costs a noticeable share (``benchmarks/bench_trial_tracking.py
--breakdown``): it sets ``HydraConfig`` twice (each a deep copy of the ``hydra`` node), copies
that node a third time for the job's return value, and writes ``.hydra/config.yaml``,
``hydra.yaml`` and ``overrides.yaml`` through PyYAML's pure-Python emitter. This launcher does
what ``run_job`` does, in the same order and with the same results for the task (its config,
``HydraConfig.get()``, working directory, logging, ``env_set``, callbacks, the ``JobReturn``),
except:

- ``HydraConfig`` is set once: ``hydra.runtime.output_dir`` is written into both the job's
  config and the copy ``HydraConfig`` holds, instead of copying the node again;
- the ``JobReturn``'s ``hydra_cfg`` is that copy, which nothing else holds once the job ends,
  not a further deep copy; the task's config is copied without the ``hydra`` node, not copied
  whole and the node deleted;
- Hydra's logging is not set again as a batch starts when the previous batch's last job left it
  set (the basic launcher sets it before every batch and after every job);
- the ``.hydra`` files go through libyaml's C emitter with OmegaConf's own representers (the same
  YAML values; a long string may be folded at other places), or PyYAML's when libyaml is absent.

Hydra is pinned (hydra-core 1.3.8); ``run_job`` of that version is the reference, and
``tests/test_launcher.py`` runs the same sweep through both launchers and compares what the task
and the job folders get.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from . import _launcher

log = logging.getLogger(__name__)

LAUNCHER_TARGET = "hydra_plugins.ecosplit_optuna_sweeper.launcher.EcosplitLauncher"


@dataclass
class EcosplitLauncherConf:
    _target_: str = LAUNCHER_TARGET


ConfigStore.instance().store(group="hydra/launcher", name="ecosplit", node=EcosplitLauncherConf,
                             provider="ecosplit_optuna_sweeper")


class EcosplitLauncher(Launcher):
    """Hydra's ``BasicLauncher`` with ``_launcher.run_job`` (module docstring)."""

    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self._hydra_logging = False  # Hydra's logging is set (after a job): the next batch need not

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        # as the previous batch's last job left it (bench_trial_tracking --breakdown: logging set-up
        # 4.4 ms a trial in three calls, 3.0 in two)
        if not self._hydra_logging:
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: List[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            self._hydra_logging = False
            runs.append(_launcher.run_job(self.hydra_context, self.task_function, sweep_config,
                                          "hydra.sweep.dir", "hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            self._hydra_logging = True
        return runs
