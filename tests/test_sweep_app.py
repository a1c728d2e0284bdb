"""`python sweep.py -m experiment=smoke` end to end: the CI smoke run, resume, cache and records."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.client import TrackingServiceClient
from omegaconf import OmegaConf, open_dict

from hydra_plugins.ecosplit_optuna_sweeper import _interrupt
from pipeline import tracking
from pipeline.cache import ModelCache, training_key
from pipeline.config import ConfigError
from pipeline.model import SplitCNN, save_checkpoint
from pipeline.stages import load_data
from pipeline.front import front_from_mlflow
from pipeline.sweep import find_parent_run, on_abort, on_start, run_trial, study_definition, trial_summary
from tests.conftest import REPO, study_runs


def smoke(workdir: Path, data_root: Path, *extra: str, timeout=600) -> subprocess.CompletedProcess:
    args = [sys.executable, str(REPO / "sweep.py"), "-m", "experiment=smoke", f"data.root={data_root}",
            "data.download=false", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def data_root(fake_mnist) -> Path:
    """The real offline MNIST when CI provides it, else the synthetic one."""
    root = os.environ.get("MNIST_ROOT")
    return Path(root) if root and (Path(root) / "MNIST" / "raw").is_dir() else fake_mnist


# the smoke preset's dense model on the real MNIST: measured 0.76 (3 epochs of 2700 images); chance is 0.1
SMOKE_MIN_VAL_ACCURACY = 0.5

# one 1 - mu for every trial: the same training config, so every trial after the first reuses it
FIXED_MU = ("search.one_minus_mu=1e-5",)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fake_mnist):
    work = tmp_path_factory.mktemp("smoke")
    proc = smoke(work, data_root(fake_mnist), *FIXED_MU)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, proc


def test_smoke_sweep_leaves_parent_children_pareto_and_registered_model(smoke_run, fake_mnist):
    work, proc = smoke_run
    # smoke: the first 3000 training images (the synthetic set has 200), 10% of them for validation,
    # and the first 500 test images (synthetic: 100)
    real = data_root(fake_mnist) != fake_mnist
    sizes = {"train": 2700, "val": 300, "test": 500} if real else {"train": 180, "val": 20, "test": 100}
    # its own stores: nothing in the user's real ones
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists() and not (work / "cache").exists()
    assert (work / "mlruns-smoke").is_dir() and (work / "cache-smoke").is_dir()
    client = MlflowClient(f"sqlite:///{work}/mlflow-smoke.db")
    exp = client.get_experiment_by_name("ecosplit")
    parents = client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["ecosplit.study"] == "smoke-scalar" and parent.data.tags["git_commit"]
    assert parent.data.params["objective.lam"] == "0.5"
    # the UI at a glance: one top-level run, the sweep's; the cache's runs in their own experiment
    every = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in every if "mlflow.parentRunId" not in r.data.tags] == [parent.info.run_id]
    cache_exp = client.get_experiment_by_name("ecosplit-cache")
    # FIXED_MU: one model for 3 trials, trained along the sweep's train.path: from 6e-6's, itself from 3e-6's
    trained = client.search_runs([cache_exp.experiment_id])
    assert sorted(round(1 - float(r.data.tags["ecosplit.train_mu"]), 12) for r in trained) == [3e-6, 6e-6, 1e-5]
    assert {(r.data.tags["ecosplit.role"], r.info.status) for r in trained} == {("trained-model", "FINISHED")}
    children = client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'trial'")
    assert len(children) == 3 == len(every) - 1
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["optuna.trial_number"] for c in children} == {"0", "1", "2"}
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["optuna.state"] == "COMPLETE"
        if real and c.data.tags["ecosplit.dense_source"] == "trained":  # the smoke budget learns (chance:
            # 0.1), so CI sees a training regression: the dense model's last epoch
            assert c.data.metrics["dense_val_accuracy"] >= SMOKE_MIN_VAL_ACCURACY, c.data.metrics
        assert {"objective", "val_loss", "energy_total_j_ps", "energy_total_j_psnc", "compression_ratio"} <= set(c.data.metrics)
        assert {"trial.prune.threshold", "cache.dir", "energy.operations_pj.fp32.mul"} <= set(c.data.params)
        (data_input,) = c.inputs.dataset_inputs
        assert data_input.dataset.name == "mnist" and data_input.dataset.digest
        assert {t.key: t.value for t in data_input.tags} == {"mlflow.data.context": "training"}
        assert {k: json.loads(data_input.dataset.profile)[k] for k in sizes} == sizes
        # the pruned model: an MLflow logged model of the run, with the run's final metrics
        model = client.get_logged_model(c.data.tags["ecosplit.model_id"])
        assert model.source_run_id == c.info.run_id and model.status == LoggedModelStatus.READY
        assert model.model_id in {o.model_id for o in c.outputs.model_outputs}
        (objective,) = [m for m in model.metrics if m.key == "objective"]
        assert objective.value == c.data.metrics["objective"]
        assert (objective.dataset_name, objective.dataset_digest) == ("mnist", data_input.dataset.digest)
        assert not [m for m in model.metrics if m.key.startswith("time_")]  # the run's, not the model's
        assert [a.path for a in client.list_logged_model_artifacts(model.model_id)] == ["pruned.pt"]
        assert {a.path for a in client.list_artifacts(c.info.run_id)} >= {"checkpoints", "layers.csv"}
        assert [a.path for a in client.list_artifacts(c.info.run_id, "checkpoints")] == ["checkpoints/pruned.pt"]
    assert any(c.data.tags["ecosplit.dense_source"] == "trained" for c in children)
    assert len({c.inputs.dataset_inputs[0].dataset.digest for c in children}) == 1
    # the parent lists the data its trials used, once
    assert [d.dataset.digest for d in parent.inputs.dataset_inputs] == [children[0].inputs.dataset_inputs[0].dataset.digest]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.png", "trials.csv", "sweep_config.yaml"} <= artifacts
    sweep_dir = next(work.glob("multirun/*/*"))
    rows = list(csv.DictReader(open(sweep_dir / "pareto.csv")))
    assert len(rows) == 3 and sum(r["selected"] == "True" for r in rows) == 1
    summary = list(csv.DictReader(open(sweep_dir / "trials.csv")))
    assert [(r["trial"], r["state"]) for r in summary] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE")]
    assert {r["mlflow_run_id"] for r in summary} == {c.info.run_id for c in children}
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow-smoke.db")
    model = mlflow.pytorch.load_model("models:/ecosplit-smoke@champion")
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert torch.equal(model.server(model.client(x, "conv3"), "conv3"), model(x))  # still splittable


def test_rerun_resumes_instead_of_adding_trials_and_reuses_training(smoke_run, fake_mnist):
    work, _ = smoke_run
    again = smoke(work, data_root(fake_mnist), *FIXED_MU)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Launching" not in again.stdout + again.stderr  # n_trials already reached
    storage = f"sqlite:///{work}/optuna-smoke.db"
    study = optuna.load_study(study_name="smoke-scalar", storage=storage)
    assert len(study.trials) == 3
    more = smoke(work, data_root(fake_mnist), *FIXED_MU, "hydra.sweeper.n_trials=4")
    assert more.returncode == 0, more.stderr[-3000:]
    study = optuna.load_study(study_name="smoke-scalar", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert len({t.user_attrs["train_mu"] for t in complete}) == 1  # one training config
    client = MlflowClient(f"sqlite:///{work}/mlflow-smoke.db")
    exp = client.get_experiment_by_name("ecosplit")
    sources = {r.data.tags["optuna.trial_number"]: r.data.tags["ecosplit.dense_source"]
               for r in client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'trial'")}
    assert sources["0"] == "trained"
    assert sources["3"] in ("local", "mlflow")  # the re-run reused the first run's training
    assert list(sources.values()).count("trained") == 1


def test_bad_sweep_setting_is_refused_with_one_line(tmp_path, fake_mnist):
    proc = smoke(tmp_path, fake_mnist, "objective.lam=2")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "error: objective.lam must be in [0, 1] (got 2)"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("optuna", "mlflow"))]


def test_missing_data_stops_the_sweep_with_exit_2_and_the_same_command_then_finishes(tmp_path, fake_mnist):
    bad = smoke(tmp_path, Path("/nonexistent"))
    assert bad.returncode == 2, bad.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data.root" in errors[0], bad.stderr[-3000:]
    storage = f"sqlite:///{tmp_path}/optuna-smoke.db"
    (failed,) = optuna.load_study(study_name="smoke-scalar", storage=storage).trials  # stopped at the first
    assert failed.state == optuna.trial.TrialState.FAIL and "data.root" in failed.user_attrs["fail_reason"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow-smoke.db")
    exp_id = client.get_experiment_by_name("ecosplit").experiment_id
    assert client.search_runs([exp_id], "tags.`ecosplit.role` = 'trial'") == []  # refused before its run opened
    (parent,) = client.search_runs([exp_id], "tags.`ecosplit.role` = 'sweep'")
    assert parent.info.status == "FAILED" and parent.data.tags["failure_reason"]

    good = smoke(tmp_path, data_root(fake_mnist))
    assert good.returncode == 0, good.stderr[-3000:]
    trials = optuna.load_study(study_name="smoke-scalar", storage=storage).trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 3
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in trials]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and "failure_reason" not in parent.data.tags
    runs = client.search_runs([exp_id], "tags.`ecosplit.role` = 'trial'")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory, fake_mnist):
    work = tmp_path_factory.mktemp("multi")
    proc = smoke(work, data_root(fake_mnist), "objective=multi")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, proc


def test_multi_objective_sweep_leaves_pareto_front_and_registered_model(multi_run):
    work, proc = multi_run
    study = optuna.load_study(study_name="smoke-multi", storage=f"sqlite:///{work}/optuna-smoke.db")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and study.best_trials  # every trial trained, none refused a report
    client = MlflowClient(f"sqlite:///{work}/mlflow-smoke.db")
    exp = client.get_experiment_by_name("ecosplit")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.params["objective.mode"] == "multi"
    assert parent.data.tags["ecosplit.study"] == "smoke-multi"
    assert {"pareto.csv", "pareto.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["pareto_size"] >= 1 and "selected_trial" in parent.data.tags
    children = client.search_runs([exp.experiment_id], "tags.`ecosplit.role` = 'trial'")
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 3
    # logged each epoch for the UI, although a multi-objective study cannot be told them (by the trials
    # that trained: a model trained earlier as the start of another on the sweep's train.path is reused)
    trained = [c for c in children if c.data.tags["ecosplit.dense_source"] == "trained"]
    assert trained and all("intermediate_objective" in c.data.metrics for c in trained)
    rows = list(csv.DictReader(open(next(work.glob("multirun/*/*/pareto.csv")))))
    assert len(rows) == 3 and sum(r["selected"] == "True" for r in rows) == 1
    assert {"val_loss", "energy_total_j_ps", "on_front"} <= set(rows[0])
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow-smoke.db")
    version = MlflowClient().get_model_version_by_alias("ecosplit-smoke", "champion")
    assert version.run_id == next(r["mlflow_run_id"] for r in rows if r["selected"] == "True")
    model = mlflow.pytorch.load_model("models:/ecosplit-smoke@champion")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_cache_hits_locally_and_through_mlflow(tmp_path, small_train_cfg, monkeypatch):
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

    uploads = tracking.RunLog()  # the model goes up in its worker thread, as in a sweep trial
    looked_up = []  # the upload goes where the claim's creation said: no get_run first
    real_get_run = TrackingServiceClient.get_run
    monkeypatch.setattr(TrackingServiceClient, "get_run",
                        lambda self, run_id: looked_up.append(run_id) or real_get_run(self, run_id))
    first, src1 = ModelCache(tmp_path / "a", exp_id).get_or_train(key, train, cfg, background=uploads.in_background)
    again, src2 = ModelCache(tmp_path / "a", exp_id).get_or_train(key, train, cfg)  # the local copy: no wait
    uploads.join()
    assert looked_up == []
    (published,) = MlflowClient().search_runs([exp_id])
    assert published.info.status == "FINISHED" and published.data.tags["ecosplit.cache_key"] == key
    assert {a.path for a in MlflowClient().list_artifacts(published.info.run_id)} == {"dense.pt", "config.yaml"}
    other_machine, src3 = ModelCache(tmp_path / "b", exp_id).get_or_train(key, train, cfg)
    assert (src1, src2, src3) == ("trained", "local", "mlflow") and len(calls) == 1
    # the other machine's claim, made before it found the model published, is gone
    assert [r.info.run_id for r in MlflowClient().search_runs([exp_id])] == [published.info.run_id]
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(first(x), again(x)) and torch.equal(first(x), other_machine(x))


def _older_claim(exp_id: str, key: str, age_ms: int = 1000) -> str:
    """A RUNNING trained-model run for key, as another worker's claim that trains (age_ms older
    than now; negative: younger)."""
    run = MlflowClient().create_run(exp_id, start_time=int(time.time() * 1000) - age_ms,
                                    tags={"ecosplit.cache_key": key, "ecosplit.role": "trained-model",
                                          "ecosplit.claim_training": "true"})
    return run.info.run_id


def _behind(monkeypatch, trainer: str):
    """An event set once a worker's search has found ``trainer`` the only claim training."""
    import threading

    behind, trainers = threading.Event(), ModelCache._trainers

    def seen_trainers(self, *args):
        found = trainers(self, *args)
        if found == [trainer]:
            behind.set()
        return found
    monkeypatch.setattr(ModelCache, "_trainers", seen_trainers)
    return behind


# younger: under load a claim's start time (stamped by its client) can be older than that of a
# claim the server stored first and whose worker already trains: age must not decide
@pytest.mark.parametrize("age_ms", [1000, -60_000], ids=["older", "younger"])
def test_cache_waits_for_a_live_claim_that_trains_and_takes_its_model(tmp_path, small_train_cfg, monkeypatch,
                                                                      age_ms):
    """One search after the claim says whose turn it is: a worker behind a live claim that trains
    waits, then downloads the model that claim publishes, never trains, and deletes its claim."""
    import threading

    from pipeline import cache

    cfg = small_train_cfg
    key = training_key(cfg, load_data(cfg))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))
    monkeypatch.setattr(cache, "CLAIM_POLL_S", 0.1)
    older = _older_claim(exp_id, key, age_ms)
    got, trained, behind = {}, [], _behind(monkeypatch, older)

    def worker():
        got["model"], got["source"] = ModelCache(tmp_path / "b", exp_id).get_or_train(
            key, lambda: trained.append(1) or SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10)), cfg)
    waiting = threading.Thread(target=worker)
    waiting.start()
    assert behind.wait(30), "the worker never found the older claim in its turn"
    study_claims = MlflowClient().search_runs([exp_id], "attributes.status = 'RUNNING'")
    assert len(study_claims) == 2 and waiting.is_alive() and not trained
    torch.manual_seed(0)
    model = SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10))
    ModelCache(tmp_path / "a", exp_id)._publish(older, cache._Beat(MlflowClient(), older), model, cfg)
    waiting.join(30)
    assert got["source"] == "mlflow" and not trained
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(got["model"](x), model(x))
    mine = MlflowClient().get_run(next(r.info.run_id for r in study_claims if r.info.run_id != older))
    assert mine.info.lifecycle_stage == "deleted"
    assert "ecosplit.claim_training" not in mine.data.tags  # it stepped back: others wait for `older` only


def test_cache_a_worker_whose_claim_was_killed_as_stale_claims_again(tmp_path, small_train_cfg, monkeypatch):
    """A waiting worker whose claim another worker KILLED as stale (the server missed its beats)
    makes a new claim: it never tags, trains into and publishes through the KILLED run."""
    import threading

    from pipeline import cache

    cfg = small_train_cfg
    key = training_key(cfg, load_data(cfg))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))
    monkeypatch.setattr(cache, "CLAIM_POLL_S", 0.1)
    trainer = _older_claim(exp_id, key)
    behind = _behind(monkeypatch, trainer)
    got = {}

    def worker():
        got["source"] = ModelCache(tmp_path / "b", exp_id).get_or_train(
            key, lambda: SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10)), cfg)[1]
    waiting = threading.Thread(target=worker, daemon=True)
    waiting.start()
    assert behind.wait(30)
    client = MlflowClient()
    (first,) = [r.info.run_id for r in client.search_runs([exp_id]) if r.info.run_id != trainer]
    client.set_terminated(first, "KILLED")  # as another worker's stale check does
    client.set_terminated(trainer, "FAILED")  # then the trainer fails: the worker's turn
    waiting.join(30)
    assert got["source"] == "trained"
    (published,) = client.search_runs([exp_id], "attributes.status = 'FINISHED'")
    assert published.info.run_id not in (first, trainer)
    assert client.get_run(first).info.status == "KILLED"


def test_cache_a_trainer_taken_over_as_stale_does_not_publish_through_the_killed_claim(
        tmp_path, small_train_cfg, monkeypatch):
    """Its beats did not reach the server for CLAIM_STALE_S and another worker KILLED its claim:
    the model it trained stays local; the KILLED run is not made FINISHED (the taker publishes)."""
    from pipeline import cache

    cfg = small_train_cfg
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))
    monkeypatch.setattr(cache, "CLAIM_STALE_S", 0.4)
    store = ModelCache(tmp_path / "a", exp_id)
    claim = store._claim("k" * 64, cfg)
    beat = cache._Beat(MlflowClient(), claim)
    time.sleep(0.3)  # beats every CLAIM_BEAT_S (2 s): none yet, more than half the stale time
    MlflowClient().set_terminated(claim, "KILLED")
    store._publish(claim, beat, SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10)), cfg)
    assert MlflowClient().get_run(claim).info.status == "KILLED"
    assert not MlflowClient().list_artifacts(claim)


def test_cache_two_claims_tagged_at_once_step_back_and_one_trains(tmp_path, small_train_cfg, monkeypatch):
    """Two workers whose claims were tagged at the same moment both see the other's tag: both
    step back (the tag removed), and after a random pause one tags again and trains while the other
    waits for its model. Two threads here, each its own worker; their first searches are held
    until both claims exist, and their answers until both have read."""
    import threading

    from pipeline import cache

    cfg = small_train_cfg
    key = training_key(cfg, load_data(cfg))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))
    monkeypatch.setattr(cache, "CLAIM_POLL_S", 0.2)
    both_claimed, both_read = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)
    runs, first = ModelCache._runs, threading.local()

    def held_runs(self, *args):
        if getattr(first, "done", False):
            return runs(self, *args)
        first.done = True
        both_claimed.wait()  # both claims made (tagged) before either reads
        found = runs(self, *args)
        both_read.wait()  # and both read before either steps back
        return found
    monkeypatch.setattr(ModelCache, "_runs", held_runs)
    stepped_back, delete_tag = [], MlflowClient.delete_tag
    monkeypatch.setattr(MlflowClient, "delete_tag",
                        lambda self, run_id, tag: stepped_back.append(run_id) or delete_tag(self, run_id, tag))
    got, trained = {}, []

    def worker(name):
        def train():
            trained.append(name)
            torch.manual_seed(0)
            return SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10))
        got[name] = ModelCache(tmp_path / name, exp_id).get_or_train(key, train, cfg)[1]
    threads = [threading.Thread(target=worker, args=(name,), daemon=True) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(trained) == 1 and sorted(got.values()) == ["mlflow", "trained"], (trained, got)
    assert len(set(stepped_back)) == 2  # both saw the other's tag at first
    (published,) = MlflowClient().search_runs([exp_id])
    assert published.info.status == "FINISHED"


def test_cache_takes_over_a_claim_whose_beat_stopped(tmp_path, small_train_cfg, monkeypatch):
    from pipeline import cache

    cfg = small_train_cfg
    key = training_key(cfg, load_data(cfg))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))
    monkeypatch.setattr(cache, "CLAIM_POLL_S", 0.1)
    monkeypatch.setattr(cache, "CLAIM_STALE_S", 0.5)
    dead = _older_claim(exp_id, key)  # its worker died: no beat ever moves
    model, source = ModelCache(tmp_path / "b", exp_id).get_or_train(
        key, lambda: SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10)), cfg)
    assert source == "trained"
    run = MlflowClient().get_run(dead)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"].startswith("claim stale")


def test_cache_claim_of_a_training_stopped_by_a_hidden_ctrl_c_ends_killed(tmp_path, small_train_cfg):
    """A Ctrl-C that a library turned into its own error during training (see _interrupt) ends the
    claim KILLED, as the trial's run, not FAILED with the library's error."""
    cfg = small_train_cfg
    key = training_key(cfg, load_data(cfg))
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp_id = mlflow.create_experiment("cache", artifact_location=str(tmp_path / "art"))

    def train():
        try:
            _interrupt._on_sigint(signal.SIGINT, None)  # what SIGINT runs during a sweep
        except KeyboardInterrupt:
            raise ValueError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None
    with pytest.raises(ValueError):
        ModelCache(tmp_path / "a", exp_id).get_or_train(key, train, cfg)
    (claim,) = MlflowClient().search_runs([exp_id])
    assert claim.info.status == "KILLED" and claim.data.tags["failure_reason"] == "interrupted (KeyboardInterrupt)"


# -- the sweeper's hooks and the trial's run, in process ------------------------------------------
def sweep_cfg(*overrides: str):
    """sweep.yaml composed as the sweeper process sees it (hydra node included)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("sweep", list(overrides), return_hydra_config=True)


def test_study_definition_is_what_changes_a_trial_not_where_it_runs():
    base = study_definition(sweep_cfg("experiment=smoke"))
    json.dumps(base)  # the sweeper stores it on the study
    assert base["objective"] == {"mode": "scalar", "lam": 0.5}
    assert base["data"] == {"val_fraction": 0.1, "split_seed": 0, "train_per_class": None, "train_subset": 3000,
                            "test_subset": 500, "train_repeat": 1}
    assert base["seed"] == 0 and base["train"]["epochs"] == 3
    # searched keys and what derives from them are the search space, not the definition
    assert "mu" not in base["train"] and "threshold" not in base["prune"] and "search" not in base
    same = ["data.root=/elsewhere", "data.download=false", "train.num_threads=1", "train.device=cpu", "tracking.uri=sqlite:///x.db",
            "cache.dir=/tmp/c", "hydra.sweeper.n_trials=9", "channel.bandwidths_hz=[1e3]",
            "evaluation.realisations=5", "selection.rule=knee"]  # read after the trials only
    assert study_definition(sweep_cfg("experiment=smoke", *same)) == base
    for changed in ("objective.lam=0.2", "objective=multi", "data.train_subset=100", "seed=1", "train.epochs=2",
                    "train.max_steps=5", "data.train_repeat=2",
                    "channel.bandwidth_hz=1e6", "trajectory.duration_s=30", "energy.precision=int8",
                    "scenario=paper", "selection.candidates=layers", "selection.enforce_deadline=false",
                    "evaluation.objective_realisations=3"):
        assert study_definition(sweep_cfg("experiment=smoke", changed)) != base, changed
    fixed_mu = study_definition(sweep_cfg("experiment=smoke", "search.one_minus_mu=1e-5"))
    assert fixed_mu["train"]["mu"] == pytest.approx(1 - 1e-5)  # no longer searched: it defines the study


@pytest.mark.parametrize("override,message", [
    ("objective.lam=2", "objective.lam must be in [0, 1] (got 2)"),
    ("sweep.warmup_epochs=-1", "sweep.warmup_epochs must be in [0, inf) (got -1)"),
    # a searched mode ran one single-objective study, its "multi" trials ranked by eq. (8)
    ("+hydra.sweeper.params.objective='choice(scalar,multi)'", "objective: the objective mode (scalar: eq. (8), or multi: "
     "the front) sets the study's directions and cannot be searched; run one sweep per mode (objective=scalar, "
     "objective=multi)"),
    ("cache.enabled=maybe", "cache.enabled must be one of True, False (got 'maybe')"),  # was taken as true
    ("cache.dir=''", "cache.dir must be a folder for the reuse cache's local copies (got '')"),  # wrote into ./
])
def test_study_definition_refuses_a_bad_setting_with_one_line(capsys, override, message):
    with pytest.raises(SystemExit) as exc:
        study_definition(sweep_cfg("experiment=smoke", override))
    assert exc.value.code == 2 and isinstance(exc.value.__cause__, ConfigError)
    assert capsys.readouterr().err.splitlines() == [f"error: {message}"]


@pytest.fixture
def hook_env(tmp_path):
    """A study in SQLite, the sweep config pointing at a throwaway MLflow store, the parent run."""
    cfg = sweep_cfg("experiment=smoke", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                    f"tracking.artifact_location={tmp_path}/art", f"sweep.storage=sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(study_name=cfg.hydra.sweeper.study_name, storage=cfg.hydra.sweeper.storage)
    on_start(study, cfg)
    client = MlflowClient(cfg.tracking.uri)
    exp_id = client.get_experiment_by_name("ecosplit").experiment_id
    return cfg, study, client, exp_id


def test_a_study_resumed_in_another_tracking_store_is_refused_not_split(hook_env, tmp_path, capsys):
    """Found by a reviewer: a second sweep run in the other store, with the new trials only, and a
    second registered model; trials.csv without the earlier trials' runs."""
    cfg, study, client, exp_id = hook_env
    assert study.user_attrs["ecosplit:tracking_uri"] == f"sqlite:///{tmp_path}/mlflow.db"

    def store(name):
        return sweep_cfg("experiment=smoke", f"tracking.uri=sqlite:///{tmp_path}/{name}.db",
                         f"tracking.artifact_location={tmp_path}/art-{name}", f"sweep.storage={cfg.hydra.sweeper.storage}")

    def refused(where, missing):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            on_start(study, where)
        assert exc.value.code == 2
        return capsys.readouterr().err.splitlines() == [
            f"error: tracking.uri={where.tracking.uri}: study '{study.study_name}' has 1 trial(s), but experiment "
            f"'ecosplit' of this tracking store holds no {missing} of it: they were recorded elsewhere (its sweep run "
            f"was last made in tracking.uri=sqlite:///{tmp_path}/other.db). Set tracking.uri and tracking.experiment "
            "to those of the earlier runs (or restore the deleted runs), or start a new study with another sweep.name"]

    other = store("other")
    on_start(study, other)  # no trial ran yet: the study may still move (nothing recorded elsewhere)
    b = MlflowClient(other.tracking.uri)
    b_exp = b.get_experiment_by_name("ecosplit").experiment_id
    assert len(b.search_runs([b_exp])) == 1
    trial = study.ask()
    _trial_run(b, b_exp, study, trial)  # the trial ran in the other store
    study.tell(trial, 1.0)
    assert refused(store("third"), "sweep run")
    assert not (tmp_path / "third.db").exists()  # nothing made to check
    assert refused(cfg, "trial run")  # the first store's sweep run was made before any trial: not its store
    on_start(study, other)  # the store of its trials: resumes


def test_the_store_a_study_records_is_absolute(tmp_path, monkeypatch):
    """sqlite:///mlflow.db is the store of the folder a worker runs in: the study names the file itself."""
    monkeypatch.chdir(tmp_path)
    cfg = sweep_cfg("experiment=smoke", "tracking.uri=sqlite:///rel.db", f"tracking.artifact_location={tmp_path}/art",
                    f"sweep.storage=sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(study_name=cfg.hydra.sweeper.study_name, storage=cfg.hydra.sweeper.storage)
    on_start(study, cfg)
    assert study.user_attrs["ecosplit:tracking_uri"] == f"sqlite:///{tmp_path}/rel.db"


def _trial_run(client, exp_id, study, trial):
    """A trial's MLflow run left RUNNING, as by a worker that died."""
    return client.create_run(exp_id, tags={"ecosplit.role": "trial", "ecosplit.study": study.study_name,
                                           "optuna.trial_id": str(trial._trial_id)}).info.run_id


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_on_abort_ends_parent_and_orphaned_trial_runs_with_the_reason(hook_env, status):
    cfg, study, client, exp_id = hook_env
    failed, done, refused = study.ask(), study.ask(), study.ask()
    failed_run, done_run = _trial_run(client, exp_id, study, failed), _trial_run(client, exp_id, study, done)
    refused_run = _trial_run(client, exp_id, study, refused)  # finished, then its result was refused
    cache_exp_id = client.get_experiment_by_name(cfg.cache.experiment).experiment_id  # on_start made it
    claim = client.create_run(cache_exp_id, tags={"ecosplit.role": "trained-model", "ecosplit.study": study.study_name,
                                                  "optuna.trial_id": str(failed._trial_id)}).info.run_id
    failed.set_user_attr("fail_reason", "DataUnavailableError: no MNIST in /nonexistent")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.tell(done, 1.0)
    refused.set_user_attr("fail_reason", "objective 'objective' is nan")
    study.tell(refused, state=optuna.trial.TrialState.FAIL)
    for run_id in (done_run, refused_run):
        client.set_tag(run_id, "optuna.state", "COMPLETE")
        client.set_terminated(run_id, "FINISHED")
    on_abort(study, cfg, status, "sweep stopped: configuration error")
    parent = find_parent_run(exp_id, study.study_name)
    assert parent.info.status == status
    assert parent.data.tags["failure_reason"] == "sweep stopped: configuration error"
    for run_id in (failed_run, claim):  # left RUNNING by the failed trial, in both experiments
        run = client.get_run(run_id)
        assert run.info.status == status
        assert run.data.tags["failure_reason"] == "DataUnavailableError: no MNIST in /nonexistent"
    assert client.get_run(failed_run).data.tags["optuna.state"] == "FAIL"
    assert "optuna.state" not in client.get_run(claim).data.tags  # not a trial run
    refused = client.get_run(refused_run)
    assert refused.info.status == "FAILED" and refused.data.tags["optuna.state"] == "FAIL"
    assert refused.data.tags["failure_reason"] == "objective 'objective' is nan"
    done = client.get_run(done_run)
    assert done.info.status == "FINISHED" and done.data.tags["optuna.state"] == "COMPLETE"
    # the same command again resumes the study: the parent run is live again
    on_start(study, cfg)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "RUNNING" and "failure_reason" not in parent.data.tags


def test_on_abort_leaves_the_parent_running_while_another_worker_runs_trials(hook_env):
    cfg, study, client, exp_id = hook_env
    study.ask()  # RUNNING in another worker
    on_abort(study, cfg, "KILLED", "interrupted")
    parent = find_parent_run(exp_id, study.study_name)
    assert parent.info.status == "RUNNING" and "failure_reason" not in parent.data.tags


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_end_of_sweep_registers_the_trial_selection_rule_picks(hook_env, tmp_path, monkeypatch):
    from pipeline.front import FORMAT, FORMAT_TAG
    from pipeline.pruning import prune
    from pipeline.sweep import on_complete
    cfg, study, client, exp_id = hook_env
    monkeypatch.chdir(tmp_path)  # hydra.sweep.dir is relative
    OmegaConf.update(cfg, "selection.min_val_accuracy", 0.95)
    OmegaConf.update(cfg, "cache.dir", str(tmp_path / "cache"))
    torch.manual_seed(0)
    dense = SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10))
    (tmp_path / "cache").mkdir()
    save_checkpoint(dense, tmp_path / "cache" / f"{'c' * 64}.pt")  # the trial's dense model, by its cache key
    save_checkpoint(prune(dense, 0.2), tmp_path / "pruned.pt")
    study.set_metric_names(["objective"])
    # trial 0: least energy; 1: least eq. (8) among the feasible; 2: lower still, but val_accuracy < 0.95
    for number, (objective_value, energy_j, accuracy) in enumerate([(0.5, 10e-6, 0.96), (0.3, 20e-6, 0.97),
                                                                     (0.2, 5e-6, 0.90)]):
        run_id = client.create_run(exp_id, tags={"ecosplit.role": "trial", "ecosplit.study": study.study_name,
                                                 "optuna.trial_number": str(number),
                                                 "ecosplit.cache_key": "c" * 64}).info.run_id
        client.log_artifact(run_id, str(tmp_path / "pruned.pt"), "checkpoints")
        client.set_terminated(run_id, "FINISHED")
        study.add_trial(optuna.trial.create_trial(value=objective_value, user_attrs={
            "energy_total_j_ps": energy_j, "val_accuracy": accuracy, "mlflow_run_id": run_id}))
    for rule, picked in (("min_energy", 0), ("best_objective", 1)):  # the sweep re-run with another rule
        OmegaConf.update(cfg, "selection.rule", rule)
        on_complete(study, cfg)
        version = client.get_model_version_by_alias("ecosplit-smoke", "champion")
        assert version.run_id == study.trials[picked].user_attrs["mlflow_run_id"], rule
        assert version.tags[FORMAT_TAG] == FORMAT and version.tags["trial"] == str(picked)
        assert find_parent_run(exp_id, study.study_name).data.tags["selected_trial"] == str(picked)
    # the user promotes trial 0 again, then the same sweep is run once more (nothing left to run):
    # its pick, trial 1, is the version it registered before; the promotion stays, at once
    first = client.search_model_versions(f"name = 'ecosplit-smoke' and run_id = '{study.trials[0].user_attrs['mlflow_run_id']}'")
    client.set_registered_model_alias("ecosplit-smoke", "champion", first[0].version)
    versions = len(client.search_model_versions("name = 'ecosplit-smoke'"))
    started = time.monotonic()
    on_complete(study, cfg)
    assert time.monotonic() - started < 30  # not the 120 s wait for a registration nobody makes
    assert client.get_model_version_by_alias("ecosplit-smoke", "champion").version == first[0].version
    # without a registered model name the end of the sweep registers nothing
    OmegaConf.update(cfg, "selection.rule", "min_energy")
    OmegaConf.update(cfg, "selection.registered_model", None)
    on_complete(study, cfg)
    assert len(client.search_model_versions("name = 'ecosplit-smoke'")) == versions
    assert client.get_model_version_by_alias("ecosplit-smoke", "champion").version == first[0].version


def test_the_front_from_mlflow_counts_complete_trials_only(hook_env):
    cfg, study, client, exp_id = hook_env
    for number, state, energy in ((0, "COMPLETE", 2e-6), (1, "PRUNED", 1e-6), (2, "COMPLETE", 3e-6)):
        run_id = client.create_run(exp_id, tags={"ecosplit.role": "trial", "ecosplit.study": study.study_name,
                                                 "optuna.trial_number": str(number), "optuna.state": state}).info.run_id
        client.log_metric(run_id, "energy_total_j_ps", energy)
        client.log_metric(run_id, "val_accuracy", 0.9)
        client.set_terminated(run_id, "FINISHED")  # a pruned trial's run finishes too
    rows, chosen = front_from_mlflow(cfg.tracking.uri, cfg.tracking.experiment, [study.study_name])
    assert sorted(r["energy_total_j_ps"] for r in rows) == [2e-6, 3e-6]
    assert rows[chosen]["energy_total_j_ps"] == 2e-6


def test_trial_summary_has_one_row_per_ended_trial_with_its_settings_results_and_place_on_the_front():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial
    from optuna.distributions import CategoricalDistribution
    dist = {"prune.threshold": FloatDistribution(0.1, 2.0)}
    # experiment=beyond: another searched setting gets its column (1 - mu is train.mu's)
    beyond = {**dist, "energy.precision": CategoricalDistribution(["fp32", "int8"]),
              "search.one_minus_mu": FloatDistribution(1e-6, 1e-4)}
    complete = create_trial(value=0.5, params={"prune.threshold": 1.5, "energy.precision": "int8",
                                               "search.one_minus_mu": 1e-5}, distributions=beyond,
                            user_attrs={"val_accuracy": 0.96})
    pruned = create_trial(state=TrialState.PRUNED, params={"prune.threshold": 0.2}, distributions=dist,
                          intermediate_values={1: 0.9, 2: 0.8, 3: 0.85})
    failed = create_trial(state=TrialState.FAIL, params={"prune.threshold": 0.3}, distributions=dist)
    running = create_trial(state=TrialState.RUNNING, params={"prune.threshold": 0.4}, distributions=dist)
    for number, (trial_id, t) in enumerate(zip((10, 11, 12, 13), (complete, pruned, failed, running))):
        t.number, t._trial_id = number, trial_id
    runs = {10: ("run-a", {"train.mu": "0.99999", "prune.threshold": "1.5", "prune.finetune_epochs": "2"}),
            11: ("run-b", {"train.mu": "0.99998", "prune.threshold": "0.2", "prune.finetune_epochs": "0"})}
    front = [{"trial": 0, "val_accuracy": 0.96, "test_accuracy": 0.95, "energy_total_j_ps": 4e-6,
              "compression_ratio": 12.0, "objective": 0.5, "on_front": True, "selected": True}]
    rows = trial_summary([failed, running, pruned, complete], runs, front)
    assert [(r["trial"], r["state"], r["mlflow_run_id"]) for r in rows] == [
        (0, "COMPLETE", "run-a"), (1, "PRUNED", "run-b"), (2, "FAIL", "")]  # RUNNING: not ended
    assert rows[0] == {"trial": 0, "state": "COMPLETE", "train.mu": "0.99999", "prune.threshold": "1.5",
                       "prune.finetune_epochs": "2", "energy.precision": "int8", "val_accuracy": 0.96, "test_accuracy": 0.95,
                       "energy_total_j_ps": 4e-6, "compression_ratio": 12.0, "objective": 0.5, "on_front": True,
                       "selected": True, "pruned_at_epoch": None, "mlflow_run_id": "run-a"}
    assert rows[1]["pruned_at_epoch"] == 3 and rows[1]["val_accuracy"] is None and not rows[1]["on_front"]
    # no run (it failed before opening one): the trial's own params
    assert rows[2]["prune.threshold"] == 0.3 and rows[2]["train.mu"] is None
    assert rows[1]["energy.precision"] is None  # not searched in that trial, no run param either


def test_on_abort_before_on_start_creates_no_store(tmp_path):
    cfg = sweep_cfg("experiment=smoke", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    on_abort(optuna.create_study(), cfg, "FAILED", "hydra.sweeper.constraints: malformed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raised,status,reason", [
    (KeyboardInterrupt(), "KILLED", "interrupted (KeyboardInterrupt)"),
    (RuntimeError("disk full"), "FAILED", "RuntimeError: disk full"),
    ("user error", "FAILED", "DataUnavailableError: no MNIST here"),
    # a Ctrl-C that a library turned into its own error (OmegaConf did, in CI): still the user's
    ("masked Ctrl-C", "KILLED", "interrupted (KeyboardInterrupt)"),
])
def test_trial_run_ends_with_status_and_reason_however_the_trial_ends(tmp_path, fake_mnist, monkeypatch,
                                                                      raised, status, reason):
    from hydra.core.hydra_config import HydraConfig
    from pipeline.cli import user_errors_exit
    from pipeline.data import DataUnavailableError
    cfg = sweep_cfg("experiment=smoke", f"data.root={fake_mnist}", "data.download=false",
                    f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/art")
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
    HydraConfig.instance().set_config(cfg)  # as in a job: the task reads hydra.sweeper from here
    task_cfg = cfg.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]

    @user_errors_exit  # the task's protocol: exit status 2 chained to the user error
    def missing_data():
        raise DataUnavailableError("no MNIST here")

    def fail(*args):
        if raised == "user error":
            missing_data()
        if raised == "masked Ctrl-C":
            try:
                _interrupt._on_sigint(signal.SIGINT, None)  # what SIGINT runs during a sweep
            except KeyboardInterrupt:
                raise ValueError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None
        raise raised

    monkeypatch.setattr("pipeline.sweep._trial_metrics", fail)
    with pytest.raises((KeyboardInterrupt, RuntimeError, SystemExit)) as ended:
        run_trial(task_cfg)
    assert isinstance(ended.value, KeyboardInterrupt) == (status == "KILLED")  # the sweeper re-queues it
    client = MlflowClient(task_cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ecosplit").experiment_id])
    assert run.info.status == status and run.data.tags["optuna.state"] == "FAIL"
    assert run.data.tags["failure_reason"] == reason
    assert run.data.params["train.mu"] == str(task_cfg.train.mu)  # what the run had queued is kept


# -- what a trial reports to the pruner at every epoch ---------------------------------------------
TINY_MODEL = ("model.conv_channels=[4,4,4,4]", "model.fc_units=[16,8,8,8,10]")


@pytest.fixture(scope="module")
def trial_store(tmp_path_factory):
    """One MLflow store for the module's in-process trials (creating one takes seconds)."""
    return tmp_path_factory.mktemp("trials")


@pytest.fixture
def trial_task(trial_store, tmp_path, fake_mnist, monkeypatch):
    """run_trial in process on the toy data and a tiny model, as a sweep job runs it with ``trial``
    as the live trial, in a study and MLflow experiment of its own (so no trained model is shared):
    ``run(trial, *overrides) -> (task config, metrics or the TrialPruned raised)``."""
    from hydra.core.hydra_config import HydraConfig
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test

    def run(trial, *overrides):
        cfg = sweep_cfg("experiment=smoke", f"data.root={fake_mnist}", "data.download=false", *TINY_MODEL,
                        f"tracking.uri=sqlite:///{trial_store}/mlflow.db", f"tracking.artifact_location={trial_store}/art",
                        f"tracking.experiment={tmp_path.name}", f"cache.experiment={tmp_path.name}-cache",
                        f"cache.dir={tmp_path}/cache", f"sweep.name={tmp_path.name}",
                        "search.one_minus_mu=1e-5", "train.path=null",
                        *overrides)
        HydraConfig.instance().set_config(cfg)  # the task reads hydra.sweeper from here
        task_cfg = cfg.copy()
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        monkeypatch.setattr("hydra_plugins.ecosplit_optuna_sweeper.current_trial", lambda: trial)
        run.last_cfg = task_cfg
        try:
            return task_cfg, run_trial(task_cfg)
        except optuna.TrialPruned as exc:
            return task_cfg, exc

    return run


@pytest.mark.parametrize("finetune_epochs,finetuned_loss,loss_of", [
    (0, "dense", "pruned"),  # no fine-tuning: the loss its final objective will compute
    (1, "dense", "dense"),   # fine-tuning recovers the dense model's loss
    (1, "pruned", "pruned"),
])
def test_the_value_reported_each_epoch_is_eq8_of_that_epochs_model_pruned(trial_task, finetune_epochs,
                                                                         finetuned_loss, loss_of):
    from pipeline.model import load_checkpoint
    from pipeline.reporting import energy_terms
    from pipeline.stages import prune_only, train_dense
    study = optuna.create_study()
    cfg, metrics = trial_task(study.ask(), "train.epochs=2", "prune.threshold=0.02", "objective.lam=0.3",
                              f"prune.finetune_epochs={finetune_epochs}", f"sweep.finetuned_loss={finetuned_loss}")
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [1, 2]
    data = load_data(cfg)
    for epoch in (1, 2):
        # epoch 1 of a 2-epoch training is a 1-epoch training (same seed, same batches)
        dense = train_dense(OmegaConf.merge(cfg, {"train": {"epochs": epoch}}), data)
        pruned = prune_only(cfg, dense)
        with torch.no_grad():
            model = pruned if loss_of == "pruned" else dense
            val_loss = float(torch.nn.functional.cross_entropy(model(data.val.images), data.val.labels))
        energy = energy_terms(cfg, dense, pruned)
        # eq. (8): lam * loss + (1 - lam) * E_ps / E_psnc with lam = 0.3
        expected = 0.3 * val_loss + 0.7 * energy["energy_total_j_ps"] / energy["energy_total_j_psnc"]
        assert reported[epoch] == pytest.approx(expected, rel=1e-6), epoch
    if not finetune_epochs:  # the final objective is the last epoch's value
        assert metrics["objective"] == pytest.approx(reported[2], rel=1e-9)
    # training went on as without the per-epoch values: the cached model is the plain 2-epoch one
    cached = load_checkpoint(Path(cfg.cache.dir) / f"{training_key(cfg, data)}.pt")
    assert all(torch.equal(a, b) for a, b in zip(cached.state_dict().values(), dense.state_dict().values()))
    history = MlflowClient(cfg.tracking.uri).get_metric_history(metrics["mlflow_run_id"], "intermediate_objective")
    assert [(m.step, m.value) for m in history] == [(1, reported[1]), (2, reported[2])]


def test_a_trial_beyond_the_papers_representation_is_normalised_by_the_papers_psnc_and_judged_as_deployed(trial_task):
    """experiment=beyond: eq. (8)'s normaliser is PSNC of the uncompressed model in fp32 with 32-bit
    dense payloads whatever the trial deploys (else an int8 client makes PS and its yardstick cheaper
    together), and val_accuracy is PS's accuracy as deployed on the validation route."""
    from pipeline.model import load_checkpoint
    from pipeline.reporting import PAPER_REPRESENTATION, evaluate_models, method_rows
    from pipeline.stages import prune_model
    beyond = ("energy.precision=int8", "channel.activation_bits=4", "channel.activation_coding=sparse")
    cfg, metrics = trial_task(None, "train.epochs=1", "prune.threshold=0.5", "prune.finetune_epochs=0",
                              "objective.lam=0.3", *beyond)
    data = load_data(cfg)
    dense = load_checkpoint(Path(cfg.cache.dir) / f"{training_key(cfg, data)}.pt")
    pruned = prune_model(cfg, dense, data)
    bw, n = float(cfg.channel.bandwidth_hz), cfg.evaluation.objective_realisations

    def mean_energy(c, method):
        ev = evaluate_models(c, dense, pruned, [bw], realisations=n, data=data)
        return ev, float(np.mean([r.means()["energy_total_j"] for r in ev.results[bw][method]]))

    paper = OmegaConf.merge(cfg, PAPER_REPRESENTATION)
    assert paper.energy.precision == "fp32" and paper.channel.activation_bits == 32
    _, psnc_paper = mean_energy(paper, "psnc")
    deployed, psnc_deployed = mean_energy(cfg, "psnc")
    _, ps = mean_energy(cfg, "ps")
    assert metrics["energy_total_j_psnc"] == pytest.approx(psnc_paper, rel=1e-12)
    assert psnc_deployed < 0.9 * psnc_paper  # the int8 client's PSNC: what the normaliser must not be
    assert metrics["energy_total_j_ps"] == pytest.approx(ps, rel=1e-12)
    # eq. (8): 0.3 * loss + 0.7 * E_ps / E_psnc(paper)
    assert metrics["objective"] == pytest.approx(0.3 * metrics["val_loss"] + 0.7 * ps / psnc_paper, rel=1e-9)
    # the accuracy of what is deployed (evaluate.py's route_accuracy, here on the validation route)
    ps_row = next(r for r in method_rows(cfg, deployed, bw, 0.0) if r["method"] == "ps")
    assert metrics["val_accuracy"] == pytest.approx(ps_row["route_accuracy"], abs=1e-12)
    with torch.no_grad():
        fp32 = (pruned(data.val.images).argmax(1) == data.val.labels).float().mean().item()
    assert metrics["val_accuracy_fp32"] == pytest.approx(fp32, abs=1e-6)


def test_experiment_beyond_searches_the_representation_beside_mu_and_the_threshold():
    from pipeline.sweep import _searched_keys
    cfg = sweep_cfg("experiment=beyond")
    assert _searched_keys(cfg) == {"search.one_minus_mu", "prune.threshold", "prune.finetune_epochs",
                                   "channel.activation_bits", "channel.activation_coding", "energy.precision"}
    assert cfg.sweep.study_name == "beyond-scalar"
    assert sweep_cfg("experiment=beyond", "objective=multi").sweep.study_name == "beyond-multi"
    # every value it searches passes validation
    for bits in (32, 16, 8, 4):
        for coding in ("dense", "sparse"):
            for precision in ("fp32", "fp16", "int8"):
                study_definition(sweep_cfg("experiment=beyond", f"channel.activation_bits={bits}",
                                           f"channel.activation_coding={coding}", f"energy.precision={precision}"))


def test_experiment_max_compression_searches_the_sparsity_target_with_mu_and_the_threshold_fixed():
    """Searching 1 - mu and an absolute threshold under the preset would mean nothing (its mu is 1,
    its threshold 0: masks only); it searches the final sparsity and the fine-tuning epochs."""
    from pipeline.sweep import _searched_keys
    cfg = sweep_cfg("experiment=max_compression")
    assert _searched_keys(cfg) == {"prune.gradual.final_sparsity", "prune.finetune_epochs"}
    assert (cfg.train.mu, cfg.prune.threshold, cfg.prune.mode, cfg.sweep.study_name) == (1.0, 0.0, "absolute",
                                                                                          "max_compression-scalar")
    assert cfg.train.max_steps is None  # not the sweep's 7000: the schedule runs to its end on any data size
    for sparsity in (0.95, 0.998):  # the interval's ends pass validation
        study_definition(sweep_cfg("experiment=max_compression", f"prune.gradual.final_sparsity={sparsity}"))


@pytest.mark.parametrize("warmup_epochs,pruned_at", [(0, 1), (2, 3), (3, None)])
def test_a_bad_trial_is_pruned_only_after_the_warmup_and_never_caches_a_half_trained_model(
        trial_task, warmup_epochs, pruned_at):
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    # a finished trial better than any trial can be at every epoch (eq. (8) >= 0)
    study.add_trial(optuna.trial.create_trial(value=-1.0, intermediate_values={e: -1.0 for e in range(1, 5)}))
    cfg, result = trial_task(study.ask(), "train.epochs=4", f"sweep.warmup_epochs={warmup_epochs}")
    reported = sorted(study.trials[1].intermediate_values)
    cached = list(Path(cfg.cache.dir).glob("*.pt"))
    client = MlflowClient(cfg.tracking.uri)
    models = study_runs(client, cfg.cache.experiment, cfg.sweep.study_name, role="trained-model", status="FINISHED")
    (run,) = study_runs(client, cfg.tracking.experiment, cfg.sweep.study_name, role="trial")
    assert run.info.status == "FINISHED"  # a pruned trial is no failure
    if pruned_at is None:  # judged at no epoch: 1-3 are the warm-up, 4 is the last
        assert isinstance(result, dict) and reported == [1, 2, 3, 4]
        assert len(cached) == 1 and len(models) == 1
        assert run.data.tags["optuna.state"] == "COMPLETE"
    else:
        assert isinstance(result, optuna.TrialPruned) and str(result).startswith(f"epoch {pruned_at}:")
        assert reported == list(range(1, pruned_at + 1))
        assert cached == [] and models == []  # nothing half-trained is taken for the trained model
        assert run.data.tags["optuna.state"] == "PRUNED" and "failure_reason" not in run.data.tags
        assert run.data.tags["optuna.pruned"] == str(result)
        # the interrupted training's cache claim, in the cache's experiment: stopped, and why
        (claim,) = study_runs(client, cfg.cache.experiment, cfg.sweep.study_name, role="trained-model")
        assert claim.info.status == "KILLED"
        assert claim.data.tags["failure_reason"] == f"training stopped: the trial was pruned ({result})"
        assert "intermediate_objective" in run.data.metrics  # the epochs it trained are in its run


def test_a_failing_background_mlflow_call_fails_the_trial_and_ends_its_run(trial_task, monkeypatch):
    def store_full(*args, **kwargs):
        raise OSError("artifact store full")
    monkeypatch.setattr("pipeline.tracking.log_model", store_full)  # called in the run's worker thread
    study = optuna.create_study()
    with pytest.raises(OSError, match="artifact store full"):
        trial_task(study.ask())
    cfg = trial_task.last_cfg
    client = MlflowClient(cfg.tracking.uri)
    (run,) = study_runs(client, cfg.tracking.experiment, cfg.sweep.study_name, role="trial")
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    assert run.data.tags["failure_reason"] == "OSError: artifact store full"
    assert run.inputs.dataset_inputs and run.data.params["train.mu"]  # the other background calls were made


# -- training along the regularisation path (train.path) ----------------------------------------
PATH = "train.path=[1.0e-5,2.0e-5,4.0e-5]"


def test_path_start_is_the_listed_one_minus_mu_just_below_and_keys_follow_the_start(fake_mnist):
    from pipeline.cache import path_start
    cfg = lambda *o: sweep_cfg(f"data.root={fake_mnist}", "data.download=false", *o)  # noqa: E731
    # 1 - mu = 4e-5 on [1e-5, 2e-5, 4e-5]: starts from 2e-5, which starts from 1e-5, which starts from scratch
    start = path_start(cfg(PATH, "search.one_minus_mu=4.0e-5"))
    assert 1.0 - start.train.mu == pytest.approx(2.0e-5, rel=1e-9)
    assert 1.0 - path_start(start).train.mu == pytest.approx(1.0e-5, rel=1e-9)
    assert path_start(path_start(start)) is None
    # off the list (a continuous search): the nearest listed value below; below the list or no list: scratch
    assert 1.0 - path_start(cfg(PATH, "search.one_minus_mu=3.0e-5")).train.mu == pytest.approx(2.0e-5, rel=1e-9)
    assert path_start(cfg(PATH, "search.one_minus_mu=5.0e-6")) is None
    assert path_start(cfg("train.path=null", "search.one_minus_mu=4.0e-5")) is None
    # everything but mu is the trial's own (a frozen copy: no interpolation left to re-resolve)
    assert start.prune.threshold == cfg(PATH, "search.one_minus_mu=4.0e-5").prune.threshold
    data = load_data(cfg())
    key = lambda c: training_key(c, data)  # noqa: E731
    # the first model of the path is the from-scratch model; a model does not depend on values listed above it
    assert key(cfg(PATH, "search.one_minus_mu=1.0e-5")) == key(cfg("train.path=null", "search.one_minus_mu=1.0e-5"))
    assert key(cfg(PATH, "search.one_minus_mu=2.0e-5")) == key(cfg("train.path=[1.0e-5,2.0e-5]", "search.one_minus_mu=2.0e-5"))
    assert key(cfg(PATH, "search.one_minus_mu=2.0e-5")) != key(cfg("train.path=null", "search.one_minus_mu=2.0e-5"))
    assert key(cfg(PATH, "search.one_minus_mu=2.0e-5")) != key(cfg("train.path=[5.0e-6,2.0e-5]", "search.one_minus_mu=2.0e-5"))


def test_a_trial_on_the_path_trains_from_the_cached_model_below_it(trial_task):
    from pipeline.cache import path_start
    from pipeline.model import load_checkpoint
    from pipeline.stages import train_dense
    study = optuna.create_study()
    cfg, metrics = trial_task(study.ask(), PATH, "search.one_minus_mu=2.0e-5", "train.epochs=1")
    data = load_data(cfg)
    start = path_start(cfg)
    cached = lambda c: load_checkpoint(Path(cfg.cache.dir) / f"{training_key(c, data)}.pt")  # noqa: E731
    # both models are in the cache: 1e-5 from scratch, 2e-5 trained on from it (same seed, same batches)
    first = train_dense(start, data)
    expected = train_dense(cfg, data, init=first)
    scratch = train_dense(cfg, data)
    for got, want in ((cached(start), first), (cached(cfg), expected)):
        assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(expected.state_dict().values(), scratch.state_dict().values()))
    # a later trial at 1e-5 finds its model in the cache: trained once, by the trial that needed it as a start
    _, again = trial_task(study.ask(), PATH, "search.one_minus_mu=1.0e-5", "train.epochs=1")
    run = MlflowClient(cfg.tracking.uri).get_run(again["mlflow_run_id"])
    assert run.data.tags["ecosplit.dense_source"] == "local" and metrics["train_mu"] == pytest.approx(1 - 2e-5)


def test_the_sweep_path_is_its_search_grid():
    cfg = sweep_cfg()
    grid = cfg.hydra.sweeper.params["search.one_minus_mu"]
    assert grid.startswith("choice(") and grid.endswith(")")
    assert [float(v) for v in grid[len("choice("):-1].split(",")] == list(cfg.train.path)


def test_two_trials_logging_a_new_dataset_at_once_both_record_it(tmp_path, monkeypatch):
    """Two workers' trials log the same dataset, new to the store, at the same moment: PostgreSQL
    refuses the second insert of the dataset row (UniqueViolation on dataset_pk; a trial FAILED
    so in bench_workers with 3 workers). Played by a client whose first log_inputs lets the other
    trial's call land, then raises as the store did; the trial's run still gets its input."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp_id = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    other, mine = client.create_run(exp_id).info.run_id, client.create_run(exp_id).info.run_id
    raised = []

    class Racing(MlflowClient):
        def log_inputs(self, run_id, datasets=None, models=None):
            if not raised:
                MlflowClient().log_inputs(other, datasets)  # the other worker's insert lands first
                raised.append(run_id)
                raise mlflow.exceptions.MlflowException(
                    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"')
            return super().log_inputs(run_id, datasets, models)

    monkeypatch.setattr(tracking, "MlflowClient", Racing)
    tracking.log_dataset(mine, "mnist", "d1", "/data", {"train": 1})
    assert raised == [mine]
    for run_id in (other, mine):
        assert [d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs] == ["d1"]


def test_two_workers_ending_together_both_log_the_sweeps_dataset_without_failing(tmp_path):
    """on_complete of two workers: both read the parent without the trials' dataset input and log
    it at the same moment; a tracking server on PostgreSQL then refuses one insert as a duplicate
    (seen in test_scaling; sequential calls are deduplicated, so the race is played here by a
    client whose log_inputs raises after the other worker's insert landed). Not an error: it is there."""
    from pipeline.sweep import _log_sweep_data
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp_id = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    parent_id, trial_id = client.create_run(exp_id).info.run_id, client.create_run(exp_id).info.run_id
    tracking.log_dataset(trial_id, "mnist", "d1", "/data", {"train": 1})
    stale = client.get_run(parent_id)  # what each worker read before either logged
    trials = [client.get_run(trial_id)]

    class Racing(MlflowClient):
        def __init__(self, lands: bool):
            super().__init__()
            self.lands = lands

        def log_inputs(self, run_id, datasets=None, models=None):
            if self.lands:  # the other worker's insert
                super().log_inputs(run_id, datasets, models)
            raise mlflow.exceptions.MlflowException("duplicate key value violates unique constraint inputs_pk")

    _log_sweep_data(Racing(lands=True), stale, trials)
    assert [d.dataset.digest for d in client.get_run(parent_id).inputs.dataset_inputs] == ["d1"]
    with pytest.raises(mlflow.exceptions.MlflowException):  # a refusal that left them missing
        _log_sweep_data(Racing(lands=False), client.get_run(client.create_run(exp_id).info.run_id), trials)


def test_a_study_made_again_under_a_recorded_name_is_refused_and_the_earlier_sweep_left_alone(hook_env, tmp_path,
                                                                                             capsys):
    """README's `optuna delete-study` then the same command, or another sweep.storage, or an
    in-memory study run twice: the new study's trials went under the earlier sweep's run (two
    trial-0 runs, one front over both), which then stayed RUNNING."""
    from hydra_plugins.ecosplit_optuna_sweeper._study import STUDY_UUID
    cfg, study, client, exp_id = hook_env  # a study and sweep run from before the uuid
    parent = find_parent_run(exp_id, study.study_name)
    client.create_run(exp_id, tags={"mlflow.parentRunId": parent.info.run_id, "ecosplit.role": "trial"})
    client.set_terminated(parent.info.run_id, "FINISHED")
    again = sweep_cfg("experiment=smoke", f"tracking.uri={cfg.tracking.uri}", f"tracking.artifact_location={tmp_path}/art",
                      f"sweep.storage=sqlite:///{tmp_path}/elsewhere.db")
    new = optuna.create_study(study_name=study.study_name, storage=again.hydra.sweeper.storage)
    new.set_user_attr(STUDY_UUID, "b" * 32)
    for _ in range(2):
        with pytest.raises(SystemExit) as exc:
            on_start(new, again)
        assert exc.value.code == 2
        assert capsys.readouterr().err.startswith(
            f"error: sweep.name=smoke: study 'smoke-scalar' in sqlite:///{tmp_path}/elsewhere.db is not the one "
            f"experiment 'ecosplit' recorded under that name (sweep run {parent.info.run_id}, storage "
            f"sqlite:///{tmp_path}/optuna.db)")
        on_abort(new, again, "FAILED", "refused")  # as the sweeper calls it then
        earlier = client.get_run(parent.info.run_id)
        assert earlier.info.status == "FINISHED" and "failure_reason" not in earlier.data.tags
        # the earlier study resumed (it has trials) takes its run and tags it: a new study then still refused
        study.set_user_attr(STUDY_UUID, "a" * 32)
        study.ask()
        on_start(study, cfg)
        assert client.get_run(parent.info.run_id).data.tags["ecosplit.study_uuid"] == "a" * 32
        client.set_terminated(parent.info.run_id, "FINISHED")
    assert len(client.search_runs([exp_id], "tags.`ecosplit.role` = 'sweep'")) == 1


@pytest.mark.parametrize("line,message", [
    ("prune.finetune_epochs=choice(0,-1)", "prune.finetune_epochs=choice(0,-1): every trial drawing "
     "prune.finetune_epochs=-1 would fail: prune.finetune_epochs must be in [0, inf) (got -1)"),
    ("prune.threshold=interval(-1,2)", "prune.threshold=interval(-1,2): every trial drawing prune.threshold=-1.0 "
     "would fail: prune.threshold must be in [0, inf) (got -1.0)"),
    ("train.batch_size=range(0,64,16)", "train.batch_size=range(0,64,16): every trial drawing train.batch_size=0 "
     "would fail: train.batch_size must be in [1, inf) (got 0)"),
    ("seed=choice(-1,0)", "seed=choice(-1,0): every trial drawing seed=-1 would fail: seed must be in [0, 4294967295] "
     "(got -1)"),  # a top-level setting
    # no value valid: every value of the preset's searched search.one_minus_mu fails too; the line
    # names the setting at fault (found by a reviewer: it blamed search.one_minus_mu)
    ("prune.threshold=interval(-2.0,-1.0)", "prune.threshold=interval(-2.0,-1.0): every trial drawing "
     "prune.threshold=-2.0 would fail: prune.threshold must be in [0, inf) (got -2.0)"),
    ("prune.finetune_epochs=choice(a,b)", "prune.finetune_epochs=choice(a,b): every trial drawing "
     "prune.finetune_epochs='a' would fail: prune.finetune_epochs must be"),
    ("search.one_minus_mu=choice(1.0e-5,2)", "search.one_minus_mu=choice(1.0e-5,2): every trial drawing "
     "search.one_minus_mu=2 would fail: train.mu must be in (0, 1] (got -1"),  # through its interpolation
])
def test_a_searched_value_no_trial_could_run_is_refused_before_the_study_is_made(capsys, line, message):
    """It failed the first trial with one line, but the study was then defined with that space:
    the same command with the typo mended was refused as a study 'defined differently'."""
    cfg = sweep_cfg("experiment=smoke")
    with open_dict(cfg):
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.overrides.task = [*cfg.hydra.overrides.task, line]
    with pytest.raises(SystemExit) as exc:
        study_definition(cfg)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert study_definition(sweep_cfg("experiment=smoke"))  # the default space: every value valid


@pytest.mark.parametrize("where,message", [
    ("file", "cache.dir={f}: it is a file, not a folder; set cache.dir to a folder (created if missing)"),
    ("file/sub", "cache.dir={f}/sub: its parent {f} is a file, not a folder; set cache.dir to a folder (created if "
                 "missing)"),
    ("gone", "cache.dir={d}/gone: it is a file, not a folder; set cache.dir to a folder (created if missing)"),
    (None, "cache.dir must be a folder (created if missing), a non-empty text (got None)"),  # was a TypeError
])
def test_a_cache_dir_no_trial_can_write_is_refused_before_the_study_is_made(tmp_path, capsys, where, message):
    """Each trial raised FileExistsError with a traceback (counted as a task failure), found by a reviewer."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # a dangling link: mkdir fails as for a file
    folder = tmp_path / where if where else "null"
    with pytest.raises(SystemExit) as exc:
        study_definition(sweep_cfg("experiment=smoke", f"cache.dir={folder}"))
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == "error: " + message.format(f=tmp_path / "file", d=tmp_path)
    assert study_definition(sweep_cfg("experiment=smoke", f"cache.dir={tmp_path}/new/cache"))  # made as needed
    assert not (tmp_path / "new").exists()  # not by the check
    assert study_definition(sweep_cfg("experiment=smoke", f"cache.dir={folder}", "cache.enabled=false"))


def test_a_cache_dir_under_a_folder_this_user_may_not_enter_is_one_line(tmp_path, monkeypatch, capsys):
    """Path.exists raises PermissionError there (Python 3.11): it was a traceback (found by a reviewer;
    simulated, as root enters every folder)."""
    from pathlib import Path
    real = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: real(p) if "locked" not in str(p) else (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(p))))
    with pytest.raises(SystemExit) as exc:
        study_definition(sweep_cfg("experiment=smoke", f"cache.dir={tmp_path}/locked/cache"))
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: cache.dir={tmp_path}/locked/cache: cannot be used (Permission "
                                               f"denied: {tmp_path}/locked/cache); set cache.dir to a folder this "
                                               "user can write in")


@pytest.mark.parametrize("overrides", [
    # the command line fixes what the preset searches: the preset's space is not the sweep's
    ("experiment=max_compression", "prune.gradual.initial_sparsity=0.97", "prune.gradual.final_sparsity=0.99"),
    # values valid together with some value of another searched setting (end_epoch 35 needs epochs >= 35)
    ("experiment=max_compression", "train.epochs=choice(40,50)", "prune.gradual.end_epoch=choice(35,40)"),
])
def test_a_search_space_every_trial_of_which_can_run_is_accepted(overrides):
    cfg = sweep_cfg(*[o for o in overrides if "choice(" not in o])
    with open_dict(cfg):
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.overrides.task = [*cfg.hydra.overrides.task, *[o for o in overrides if "choice(" in o]]
    assert study_definition(cfg)
