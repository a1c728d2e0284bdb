"""`python sweep.py -m experiment=smoke` end to end: the CI smoke run, resume, cache and records."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.cache import ModelCache, training_key
from pipeline.model import SplitCNN
from pipeline.stages import load_data
from tests.conftest import REPO, compose_cfg


def smoke(workdir: Path, data_root: Path, *extra: str, timeout=600) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "sweep.py"), "-m", "experiment=smoke", f"data.root={data_root}",
            "data.download=false", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def data_root(fake_mnist) -> Path:
    """The real offline MNIST when CI provides it, else the synthetic one."""
    root = os.environ.get("MNIST_ROOT")
    return Path(root) if root and (Path(root) / "MNIST" / "raw").is_dir() else fake_mnist


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fake_mnist):
    work = tmp_path_factory.mktemp("smoke")
    proc = smoke(work, data_root(fake_mnist))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, proc


def test_smoke_sweep_leaves_parent_children_pareto_and_registered_model(smoke_run):
    work, proc = smoke_run
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exp = client.get_experiment_by_name("ecosplit")
    parents = client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["ecosplit.study"] == "smoke" and parent.data.tags["git_commit"]
    assert parent.data.params["objective.lam"] == "0.5"
    children = client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'trial'")
    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["optuna.trial_number"] for c in children} == {"0", "1", "2"}
    for c in children:
        assert c.info.status == "FINISHED"
        assert {"objective", "val_loss", "energy_total_j_ps", "energy_total_j_psnc", "compression_ratio"} <= set(c.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.png", "sweep_config.yaml"} <= artifacts
    sweep_dir = next(work.glob("multirun/*/*"))
    rows = list(csv.DictReader(open(sweep_dir / "pareto.csv")))
    assert len(rows) == 3 and sum(r["selected"] == "True" for r in rows) == 1
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    model = mlflow.pytorch.load_model("models:/ecosplit-selected@champion")
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_rerun_resumes_instead_of_adding_trials_and_reuses_training(smoke_run, fake_mnist):
    work, _ = smoke_run
    again = smoke(work, data_root(fake_mnist))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Launching" not in again.stdout + again.stderr  # n_trials already reached
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{work}/optuna-smoke.db")
    assert len(study.trials) == 3
    more = smoke(work, data_root(fake_mnist), "hydra.sweeper.n_trials=4")
    assert more.returncode == 0, more.stderr[-3000:]
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{work}/optuna-smoke.db")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4


def test_bad_sweep_setting_is_refused_with_one_line(tmp_path, fake_mnist):
    proc = smoke(tmp_path, fake_mnist, "objective.lam=2")
    assert proc.returncode != 0
    assert "objective.lam must be in [0, 1] (got 2)" in proc.stderr + proc.stdout


def test_cache_hits_locally_and_through_mlflow(tmp_path, small_train_cfg):
    cfg = small_train_cfg
    data = load_data(cfg)
    key = training_key(cfg, data)
    moved = OmegaConf.merge(cfg, {"data": {"root": "/elsewhere", "download": True}})
    assert training_key(moved, data) == key  # where the files live does not matter
    assert training_key(OmegaConf.merge(cfg, {"train": {"mu": 0.5}}), data) != key
    assert training_key(OmegaConf.merge(cfg, {"seed": 1}), data) != key
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))
    calls = []

    def train():
        calls.append(1)
        torch.manual_seed(0)
        return SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10))

    first, src1 = ModelCache(tmp_path / "a", exp_id).get_or_train(key, train, cfg)
    again, src2 = ModelCache(tmp_path / "a", exp_id).get_or_train(key, train, cfg)
    other_machine, src3 = ModelCache(tmp_path / "b", exp_id).get_or_train(key, train, cfg)
    assert (src1, src2, src3) == ("trained", "local", "mlflow") and len(calls) == 1
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(first(x), again(x)) and torch.equal(first(x), other_machine(x))
