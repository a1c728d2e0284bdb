"""The job run of ``hydra/launcher=ecosplit`` (``launcher.py``; the reasons are there). A module
of its own, which Hydra's plugin scan does not re-execute (its name starts with "_"), so what
``benchmarks/bench_trial_tracking.py --breakdown`` wraps here stays wrapped."""

import copy
import os
from pathlib import Path
from textwrap import dedent
from typing import Optional

import yaml
from hydra import version
from hydra._internal.deprecation_warning import deprecation_warning
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (JobReturn, JobRuntime, JobStatus, _check_hydra_context, _flush_loggers, configure_log,
                              env_override)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf._utils import OmegaConfDumper

CHDIR_URL = "https://hydra.cc/docs/1.2/upgrades/1.1_to_1.2/changes_to_job_working_dir/"


class _FastDumper(getattr(yaml, "CDumper", yaml.Dumper)):  # type: ignore[misc]
    """OmegaConf's dumper (``OmegaConf.to_yaml``: strings that would load as a bool or number
    are quoted) on libyaml's emitter."""


_FastDumper.add_representer(str, OmegaConfDumper.str_representer)


def config_yaml(cfg: DictConfig) -> str:
    """``OmegaConf.to_yaml(cfg)``, emitted by libyaml (the same values when loaded back)."""
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    try:
        return yaml.dump(container, Dumper=_FastDumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
    except UnicodeEncodeError:  # a lone surrogate (a non-UTF-8 path or variable): libyaml refuses, PyYAML escapes it
        return OmegaConf.to_yaml(cfg)


def save_config(cfg: DictConfig, filename: str, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / filename).write_text(config_yaml(cfg), encoding="utf-8")


def run_job(hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig, job_dir_key: str,
            job_subdir_key: Optional[str]) -> JobReturn:
    """hydra.core.utils.run_job (hydra-core 1.3.8) with ``HydraConfig`` set once and no copy of
    it for the return value (module docstring). What differs for a caller: the ``JobReturn``'s
    ``hydra_cfg`` is the one the job saw, so a change the task made to ``HydraConfig.get()``
    (under ``read_write``) shows in it; run_job's is a copy taken before the task."""
    _check_hydra_context(hydra_context)
    callbacks = hydra_context.callbacks
    old_cwd = os.getcwd()
    hydra_config = HydraConfig.instance()
    orig_hydra_cfg = hydra_config.cfg
    # set before the output dir is read: its interpolations may use ${hydra:...}
    hydra_config.set_config(config)
    output_dir = str(OmegaConf.select(config, job_dir_key))
    if job_subdir_key is not None:
        output_dir = os.path.join(output_dir, str(OmegaConf.select(config, job_subdir_key)))
    for runtime in (config.hydra.runtime, hydra_config.cfg.hydra.runtime):  # absolute here only, as run_job
        with read_write(runtime), open_dict(runtime):
            runtime.output_dir = os.path.abspath(output_dir)
    chdir = False
    try:
        ret = JobReturn()
        # the task's config is the job's without its hydra node, which the copy skips (the memo
        # hands deepcopy a placeholder for it) instead of copying it and deleting it
        task_cfg = copy.deepcopy(config, {id(config._get_node("hydra")): DictConfig({})})
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret.cfg = task_cfg
        hydra_cfg = hydra_config.cfg  # HydraConfig's own copy; restored to the previous one below
        ret.hydra_cfg = hydra_cfg
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        assert isinstance(overrides, list)
        ret.overrides = overrides
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        chdir = hydra_cfg.hydra.job.chdir
        if chdir is None:  # as run_job: no chdir from version_base 1.2 on, else warn and chdir
            chdir = not version.base_at_least("1.2")
            if chdir:
                deprecation_warning(message=dedent(f"""\
                    Future Hydra versions will no longer change working directory at job runtime by default.
                    See {CHDIR_URL} for more information."""), stacklevel=2)
        if chdir:
            os.chdir(output_dir)
            ret.working_dir = output_dir
        else:
            ret.working_dir = os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            hydra_output = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
            save_config(task_cfg, "config.yaml", hydra_output)
            save_config(hydra_cfg, "hydra.yaml", hydra_output)
            save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
        with env_override(hydra_cfg.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as e:
                ret.return_value = e
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        callbacks.on_job_end(config=config, job_return=ret)
        # during the job its hydra node resolved interpolations through the job's config (as
        # HydraConfig does); from now on it stands alone, as run_job's copy does
        hydra_cfg.hydra._set_parent(hydra_cfg)
        return ret
    finally:
        hydra_config.cfg = orig_hydra_cfg
        if chdir:
            os.chdir(old_cwd)
