"""train.py end to end on toy data, and every bad input it must refuse."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from omegaconf import OmegaConf
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError, validate_training
from pipeline.stages import dataset_digest, load_data, run_train
from tests.conftest import REPO

FINAL_METRICS = {"test_accuracy", "test_loss", "val_accuracy", "val_loss", "compression_ratio", "nnz_params",
                 "dense_test_accuracy"}


def test_run_records_params_metrics_and_artifacts(small_train_cfg):
    result = run_train(small_train_cfg)
    client = MlflowClient(small_train_cfg.tracking.uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert FINAL_METRICS <= set(run.data.metrics)
    assert run.data.params["train.mu"] == str(small_train_cfg.train.mu)
    assert run.data.params["prune.threshold"] == str(small_train_cfg.prune.threshold)
    assert run.data.params["train.ce_reduction"] == "mean" and run.data.params["prune.mode"] == "std"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    # training epoch 1, fine-tuning epochs 2..1+F, then the pruned model's final value one step
    # later, so it is what MLflow shows as the latest val_accuracy
    finetune = small_train_cfg.prune.finetune_epochs
    assert [m.step for m in history] == list(range(1, 1 + finetune + 2))
    assert history[-1].value == run.data.metrics["val_accuracy"] == result["val_accuracy"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "layers.csv", "checkpoints"} <= artifacts
    ckpts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert ckpts == {"checkpoints/dense.pt", "checkpoints/pruned.pt"}
    assert run.data.metrics["compression_ratio"] >= 1.0
    (data_input,) = run.inputs.dataset_inputs  # the UI's Dataset column
    dataset = data_input.dataset
    assert dataset.name == "mnist" and dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": str(Path(small_train_cfg.data.root) / "MNIST")}
    # the synthetic set: 200 training images, 10% for validation; 100 test images
    assert {k: json.loads(dataset.profile)[k] for k in ("train", "val", "test")} == {"train": 180, "val": 20, "test": 100}
    assert dataset.digest == dataset_digest(small_train_cfg, load_data(small_train_cfg))
    assert {t.key: t.value for t in data_input.tags} == {"mlflow.data.context": "training"}


def test_the_dataset_digest_follows_the_samples_not_the_folder(small_train_cfg, fake_mnist, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fake_mnist, copy)
    elsewhere = OmegaConf.merge(small_train_cfg, {"data": {"root": str(copy), "download": True}})
    digest = dataset_digest(small_train_cfg, load_data(small_train_cfg))
    assert len(digest) == 12 and dataset_digest(elsewhere, load_data(elsewhere)) == digest
    fewer = OmegaConf.merge(small_train_cfg, {"data": {"train_subset": 100}})
    assert dataset_digest(fewer, load_data(fewer)) != digest
    other_split = OmegaConf.merge(small_train_cfg, {"data": {"split_seed": 1}})
    assert dataset_digest(other_split, load_data(other_split)) != digest
    other_test = OmegaConf.merge(small_train_cfg, {"data": {"test_subset": 50}})
    assert dataset_digest(other_test, load_data(other_test)) != digest
    # the same selection of different files (same names and sizes): hashed again, another digest
    image = copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw = bytearray(image.read_bytes())
    raw[-1] ^= 0xFF
    image.write_bytes(bytes(raw))
    assert dataset_digest(elsewhere, load_data(elsewhere)) != digest


def test_same_config_same_metrics(small_train_cfg):
    a, b = run_train(small_train_cfg), run_train(small_train_cfg)
    a.pop("run_id"), b.pop("run_id")
    assert a == b


BAD = [
    ("train.mu=0", r"train.mu must be in \(0, 1\]"),
    ("train.mu=1.2", r"train.mu must be in \(0, 1\]"),
    ("prune.threshold=-0.1", r"prune.threshold must be in \[0, inf\)"),
    ("train.epochs=0", r"train.epochs must be in \[1, inf\)"),
    ("train.batch_size=-4", r"train.batch_size must be in \[1, inf\)"),
    ("data.val_fraction=1.0", r"data.val_fraction must be in \(0, 1\)"),
    ("data.val_fraction=0", r"data.val_fraction must be in \(0, 1\)"),
    ("+prune.per_layer.fc9=0.1", r"prune.per_layer: 'fc9' is no layer with weights; valid: conv1, conv2, conv3"),
]


def _overridden(cfg, override: str):
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with_dotlist([override.lstrip("+")])
    return cfg


@pytest.mark.parametrize("override,message", BAD)
def test_bad_input_is_refused_before_anything_is_recorded(small_train_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        run_train(_overridden(small_train_cfg, override))
    client = MlflowClient(small_train_cfg.tracking.uri)
    assert client.search_experiments(filter_string="name = 'ecosplit'") == []


# settings checked by the same validate_training that run_train calls first (the rows above show
# that nothing is recorded then); checked directly, since every run_train row opens an MLflow store
CHOICES = [
    ("prune.mode=relative", r"prune.mode must be one of absolute, std \(got 'relative'\)"),
    ("train.ce_reduction=avg", r"train.ce_reduction must be one of mean, sum \(got 'avg'\)"),
    ("prune.per_layer.fc1=-0.1", r"prune.per_layer.fc1 must be in \[0, inf\) \(got -0.1\)"),
    ("prune.finetune_epoch_steps=0", r"prune.finetune_epoch_steps must be in \[1, inf\) \(got 0\)"),
    ("train.path=[1e-5,1.5]", r"train.path must be null or a list of 1 - mu values in \(0, 1\) \(got 1.5\)"),
    ("train.path=0.5", r"train.path must be null or a list of 1 - mu values in \(0, 1\) \(got 0.5\)"),
    ("train.path=[abc]", r"train.path must be null or a list of 1 - mu values in \(0, 1\) \(got 'abc'\)"),
    # each of these was a traceback (several after the MLflow run had opened, one after training)
    ("prune.per_layer.softmax=5", r"prune.per_layer: 'softmax' is no layer with weights"),  # was ignored
    ("prune.per_layer.pool1=5", r"prune.per_layer: 'pool1' is no layer with weights"),
    ("prune.finetune_lr=-1", r"prune.finetune_lr must be in \(0, inf\) \(got -1\)"),
    ("prune.finetune_lr=abc", r"prune.finetune_lr must be a finite number \(got 'abc'\)"),
    ("train.num_threads=-1", r"train.num_threads must be in \[1, inf\) \(got -1\)"),
    ("train.num_threads=0", r"train.num_threads must be in \[1, inf\) \(got 0\)"),  # was torch's default
    ("seed=abc", r"seed must be a finite number \(got 'abc'\)"),
    ("seed=-1", r"seed must be in \[0, 4294967295\] \(got -1\)"),
    ("data.split_seed=1.5", r"data.split_seed must be an integer \(got 1.5\)"),
    ("data.download=maybe", r"data.download must be one of True, False \(got 'maybe'\)"),  # a text counted as true
    ("train.batch_size=32.0", r"train.batch_size must be an integer \(got 32.0\)"),
    ("data.train_subset=300.0", r"data.train_subset must be an integer \(got 300.0\)"),
    ("model.fc_units=[512,256,128,64,5]", r"model.fc_units must end with 10, MNIST's classes \(got \[512, 256, 128, 64, 5\]\)"),
    ("model.fc_units=[512,256,128,64]", r"model.fc_units must be a list of 5 layer widths"),
    ("model.conv_channels=[0,32,48,64]", r"model.conv_channels.0 must be in \[1, inf\) \(got 0\)"),
]


@pytest.mark.parametrize("override,message", CHOICES)
def test_bad_mode_and_reduction_are_refused(small_train_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        validate_training(_overridden(small_train_cfg, override))


def test_cli_exit_code_and_single_line_and_nothing_damaged(fake_mnist, tmp_path):
    db = tmp_path / "mlflow.db"
    args = [sys.executable, "train.py", f"data.root={fake_mnist}", "data.download=false", "train.epochs=1",
            f"tracking.uri=sqlite:///{db}", f"tracking.artifact_location={tmp_path}/art", f"hydra.run.dir={tmp_path}/o"]
    ok = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    before = db.read_bytes()
    bad = subprocess.run(args + ["train.mu=2"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: train.mu must be in (0, 1] (got 2)"]
    assert db.read_bytes() == before
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("ecosplit")
    assert [r.info.status for r in client.search_runs([exp.experiment_id])] == ["FINISHED"]


def test_diverged_training_is_one_line_exit_1_and_its_run_ends_failed_with_the_reason(fake_mnist, tmp_path):
    """A learning rate that blows the loss up is a run that failed, not a setting outside a known
    range: one line naming the setting, exit status 1, the run FAILED with that reason."""
    db = tmp_path / "mlflow.db"
    args = [sys.executable, "train.py", f"data.root={fake_mnist}", "data.download=false", "train.epochs=1",
            "train.lr=1e6", f"tracking.uri=sqlite:///{db}", f"tracking.artifact_location={tmp_path}/art",
            f"hydra.run.dir={tmp_path}/o"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    line = ("training diverged at epoch 1 (train_loss=nan) with train.lr=1e+06: a smaller learning rate "
            "may converge")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1] == f"error: {line}", proc.stderr
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("ecosplit").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == f"TrainingDiverged: {line}"


def test_diverged_fine_tuning_names_its_own_learning_rate(small_train_cfg):
    from pipeline.stages import prune_model, train_dense
    from pipeline.training import TrainingDiverged

    cfg = OmegaConf.merge(small_train_cfg, {"prune": {"finetune_epochs": 1, "finetune_lr": 1e6}})
    data = load_data(cfg)
    with pytest.raises(TrainingDiverged, match=r"^fine-tuning diverged at epoch 1 \(train_loss=nan\) with "
                                               r"prune.finetune_lr=1e\+06: a smaller learning rate may converge$"):
        prune_model(cfg, train_dense(cfg, data), data)


def test_diverged_training_with_gradual_pruning_is_training_not_fine_tuning(small_train_cfg):
    """Gradual pruning masks weights during training: still the training that diverged."""
    from pipeline.stages import load_data, train_dense
    from pipeline.training import TrainingDiverged

    cfg = OmegaConf.merge(small_train_cfg, {"train": {"lr": 1e6}, "prune": {"schedule": "gradual", "gradual": {
        "start_epoch": 0, "end_epoch": 1, "frequency_steps": 1}}})  # masks from the first step
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1 .* with train.lr=1e\+06"):
        train_dense(cfg, load_data(cfg))


def test_diverged_training_in_a_sweep_trial_fails_the_trial_not_the_sweep(monkeypatch):
    """Outside a sweep: exit status 1. In a sweeper's trial the error goes on to the sweeper, which
    fails the trial with it and runs the next one (a user error would stop the sweep: exit 2)."""
    from hydra_plugins.ecosplit_optuna_sweeper import ENV_TRIAL_ID
    from pipeline.cli import user_errors_exit
    from pipeline.training import TrainingDiverged

    @user_errors_exit
    def task():
        raise TrainingDiverged("training diverged")
    monkeypatch.delenv(ENV_TRIAL_ID, raising=False)
    with pytest.raises(SystemExit) as exited:
        task()
    assert exited.value.code == 1
    monkeypatch.setenv(ENV_TRIAL_ID, "7")
    with pytest.raises(TrainingDiverged):
        task()
