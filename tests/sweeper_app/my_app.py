"""Toy Hydra app swept by tests/test_sweeper.py (see conf/config.yaml for the knobs)."""

import json
import logging
import math
import os
import signal
import time
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
import optuna
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ecosplit_optuna_sweeper import current_trial


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    x, y = float(cfg.x), float(cfg.y)
    if cfg.record:
        record_job(cfg)
    loss = (x - 1.0) ** 2 + (y + 2.0) ** 2
    if cfg.sleep:
        time.sleep(float(cfg.sleep))
    # $MY_APP_FAIL_ABOVE: a bug in the task, fixed between runs without changing the config
    fail_above = cfg.fail_if_x_above if cfg.fail_if_x_above is not None else os.environ.get("MY_APP_FAIL_ABOVE")
    if fail_above is not None and x > float(fail_above):
        raise ValueError(f"x={x} is too large")
    if cfg.exit_code is not None:  # an app's usage error: "error: ..." and exit status 2
        try:
            raise RuntimeError(f"x={x}: bad input (valid: anything else)")
        except RuntimeError as e:
            raise SystemExit(int(cfg.exit_code)) from e
    if cfg.interrupt_at_trial is not None and trial_number() == cfg.interrupt_at_trial:
        try:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal
            time.sleep(5)
        except KeyboardInterrupt:
            if cfg.on_interrupt == "raise":
                raise
            if cfg.on_interrupt == "mask":  # what OmegaConf did in CI when Ctrl-C landed while it built a ListConfig
                raise ValueError("a library's own error, raised while the Ctrl-C unwound it") from None
            # "handle": the task stops what it did and returns its result
    if cfg.kill_at_trial is not None and trial_number() == cfg.kill_at_trial:
        os.kill(os.getpid(), signal.SIGKILL)

    trial = current_trial()
    for step in range(int(cfg.report_steps)):
        assert trial is not None, "current_trial() returned None inside a sweep"
        trial.report(loss, step=step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    if cfg.nan_if_x_below is not None and x < cfg.nan_if_x_below:
        loss = float("nan")
    size = x**2
    if cfg.return_kind == "float":
        return loss
    if cfg.return_kind == "list":
        return [loss, size]
    if cfg.return_kind == "numpy":
        import numpy as np

        return np.array([loss])
    return {
        "loss": loss,
        "size": size,
        "accuracy": 1.0 / (1.0 + loss) if math.isfinite(loss) else 0.0,
        "note": "ok",
        "not_finite": float("inf"),
        "nested": {"a": 1},
        "tag_seen": str(cfg.tag),
        "trial_seen": trial.number if trial is not None else -1,
        "pid": os.getpid(),
    }


def record_job(cfg: DictConfig) -> None:
    """What the job sees of Hydra (tests/test_launcher.py compares two launchers)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    seen = {"cwd": os.getcwd(), "output_dir": hc.runtime.output_dir, "job_num": hc.job.num, "job_id": hc.job.id,
            "override_dirname": hc.job.override_dirname, "env": os.environ.get("MY_APP_ENV"),
            "config": OmegaConf.to_container(cfg), "has_hydra_node": "hydra" in cfg}
    logging.getLogger(__name__).info("recorded job %s", hc.job.num)
    (Path(hc.runtime.output_dir) / "seen.json").write_text(json.dumps(seen))


class RecordJobEnd(Callback):
    """A Hydra callback (``hydra.callbacks``): the job's JobReturn to job_end.json in its folder."""

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        out = Path(config.hydra.runtime.output_dir) / "job_end.json"
        out.write_text(json.dumps({"working_dir": job_return.working_dir, "status": job_return.status.name,
                                   "task_name": job_return.task_name, "overrides": job_return.overrides,
                                   "job_num": job_return.hydra_cfg.hydra.job.num,
                                   "cfg_has_hydra": "hydra" in job_return.cfg}))


def record_after_jobs(study: optuna.Study, cfg: DictConfig) -> None:
    """on_complete hook: the sweeper process's working directory and MY_APP_ENV once the jobs ran."""
    out = Path(cfg.hydra.sweep.dir) / "after_jobs.json"
    out.write_text(json.dumps({"cwd": os.getcwd(), "env": os.environ.get("MY_APP_ENV")}))


def trial_number() -> int:
    return int(os.environ.get("ECOSPLIT_OPTUNA_TRIAL_NUMBER", "-1"))


def extend_space(cfg: DictConfig, trial: optuna.Trial):
    """custom_search_space hook: one extra searched param and one fixed param."""
    trial.suggest_int("z", 0, 3)
    return {"tag": "custom"}


def on_complete(study: optuna.Study, cfg: DictConfig) -> None:
    """on_complete hook: leave a marker in the sweep dir."""
    out = Path(cfg.hydra.sweep.dir) / "on_complete.json"
    done = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    out.write_text(json.dumps({"study": study.study_name, "complete": done}))


def on_complete_ctrl_c(study: optuna.Study, cfg: DictConfig) -> None:
    """on_complete hook: Ctrl-C while the sweep ends, every trial already ended."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
