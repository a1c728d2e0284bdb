"""The training stages, in order: data -> dense training (eq. 10) -> pruning -> fine-tuning -> metrics.

``run_train`` is what ``train.py`` calls; the sweep reuses the same pieces per trial.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from . import tracking
from .cache import data_digests, data_key, data_selection, path_start
from .config import ConfigError, validate_training
from .data import MnistSplits, load_mnist, resolve_root
from .model import SplitCNN, build_model, count_nonzero, save_checkpoint
from .pruning import layer_table, nonzero_masks, prune, summary
from .sparsity import GradualPruning
from .training import EpochRecord, EvalResult, evaluate, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)


_LOADED: dict[tuple, MnistSplits] = {}  # the last data loaded in this process, by cache.data_key and device


def load_data(cfg: DictConfig) -> MnistSplits:
    """The splits, moved once to ``train.device`` (training, evaluation, pruning and fine-tuning run there).

    Loaded once per process while ``cfg.data`` selects the same samples (``cache.data_key``): the
    trials of a sweep share them (nothing writes to them; a batch is a copy)."""
    d = cfg.data
    device = resolve_device(cfg.train.get("device", "cpu"))
    key = (*data_key(cfg), str(device))
    if key not in _LOADED:
        splits = load_mnist(d.root, d.val_fraction, d.split_seed, d.download, d.train_subset, d.test_subset,
                            d.get("train_repeat", 1), d.get("train_per_class"))
        _LOADED.clear()  # one data set held at a time
        _LOADED[key] = splits.to(device)
    return _LOADED[key]


DATASET_NAME = "mnist"


def dataset_digest(cfg: DictConfig, data: MnistSplits) -> str:
    """What identifies the samples ``cfg.data`` selects: a digest of every split's images and
    labels, the same wherever the files are (hashed once per process, ``cache.data_digests``)."""
    train_val, test = data_digests(cfg, data)
    return hashlib.sha256(f"{train_val}:{test}".encode()).hexdigest()[:12]


def dataset_input(cfg: DictConfig, data: MnistSplits) -> dict:
    """The run's data as ``tracking.log_dataset`` records it: its name, ``dataset_digest``, the
    split sizes and selection settings as its profile, the MNIST folder as its source."""
    profile = {"train": len(data.train), "val": len(data.val), "test": len(data.test), **data_selection(cfg)}
    return {"name": DATASET_NAME, "digest": dataset_digest(cfg, data),
            "source": str(resolve_root(cfg.data.root) / "MNIST"), "profile": profile}


def c_r_reference(cfg: DictConfig) -> str:
    """What C_r divides (pipeline.pruning.summary): ``parameters`` when training itself zeroes
    parameters (``train.l1_mode=proximal``, ``prune.schedule=gradual``), the trained model being
    compressed already (every parameter of an uncompressed training is non-zero); else the
    paper's ``trained`` (the trained model's non-zeros)."""
    sparsifies = cfg.train.get("l1_mode", "penalty") == "proximal" or cfg.prune.get("schedule", "oneshot") == "gradual"
    return "parameters" if sparsifies else "trained"


def gradual_pruning(cfg: DictConfig, n_train: int) -> GradualPruning | None:
    """``prune.gradual`` in optimiser steps (epochs x batches per epoch), or None under ``oneshot``."""
    if cfg.prune.get("schedule", "oneshot") != "gradual":
        return None
    g = cfg.prune.gradual
    steps_per_epoch = math.ceil(n_train / cfg.train.batch_size)
    max_steps = cfg.train.get("max_steps")
    if max_steps is not None and g.end_epoch * steps_per_epoch > max_steps:
        # the run would stop on the way to its target sparsity (the cubic curve at 35% of its steps
        # is at 73% of it), so C_r would be a fraction of what was asked for
        raise ConfigError(f"prune.gradual.end_epoch={g.end_epoch} ends at step {g.end_epoch * steps_per_epoch} "
                          f"({steps_per_epoch} steps per epoch on {n_train} training images), after "
                          f"train.max_steps={max_steps}: set train.max_steps=null or end the schedule earlier")
    per_layer = {k: float(v) for k, v in (g.per_layer or {}).items() if v is not None}
    units = {k: float(v) for k, v in (g.get("units") or {}).items() if v is not None}
    return GradualPruning(initial=g.initial_sparsity, final=g.final_sparsity, start_step=g.start_epoch * steps_per_epoch,
                          end_step=g.end_epoch * steps_per_epoch, frequency=g.frequency_steps, scope=g.scope,
                          per_layer=per_layer, units=units)


def _objective(cfg: DictConfig) -> dict:
    """The training objective's settings (``fit``'s mu, ce_reduction, l1_mode, group_l1)."""
    t = cfg.train
    group_l1 = float(t.get("group_l1", 0.0))
    per_layer = {k: float(v) for k, v in (t.get("group_l1_per_layer") or {}).items() if v is not None}
    if per_layer:  # gamma per grouped layer (every weighted layer but the last), the global one by default
        names = [f"conv{i}" for i in range(1, len(cfg.model.conv_channels) + 1)]
        names += [f"fc{i}" for i in range(1, len(cfg.model.fc_units))]
        group_l1 = {name: per_layer.get(name, group_l1) for name in names}
    return {"mu": t.mu, "ce_reduction": t.ce_reduction, "l1_mode": t.get("l1_mode", "penalty"), "group_l1": group_l1}


def train_on_path(
    cfg: DictConfig, data: MnistSplits, on_epoch: Callable[[EpochRecord, SplitCNN], None] | None = None,
    start_model: Callable[[DictConfig], SplitCNN] | None = None,
) -> SplitCNN:
    """``train_dense`` from the model ``path_start`` names (got from ``start_model(config)``, by
    default trained here the same way; a sweep passes its reuse cache), or from scratch."""
    start = path_start(cfg)
    if start is None:
        return train_dense(cfg, data, on_epoch)
    if start_model is None:
        init = train_on_path(start, data)
    else:
        init = start_model(start)
    return train_dense(cfg, data, on_epoch, init=init)


def train_dense(
    cfg: DictConfig, data: MnistSplits, on_epoch: Callable[[EpochRecord, SplitCNN], None] | None = None,
    init: SplitCNN | None = None,
) -> SplitCNN:
    """Train the CNN on eq. (10) from the seed in ``cfg``, or on from a copy of ``init``'s weights
    (a fresh Adam state: ``train_on_path``); dense under the paper's procedure, with
    ``train.l1_mode=proximal`` or ``prune.schedule=gradual`` it leaves training already sparse.
    ``on_epoch(record, model)`` sees every epoch's record and the model being trained (it must not
    change the model)."""
    seed_everything(cfg.seed, cfg.train.num_threads)
    model = build_model(cfg.model.conv_channels, cfg.model.fc_units)
    if init is not None:
        model.load_state_dict(init.state_dict())
    t = cfg.train
    fit(model, data.train, data.val, epochs=t.epochs, lr=t.lr, lr_setting="train.lr", **_objective(cfg),
        batch_size=t.batch_size, seed=cfg.seed, on_epoch=None if on_epoch is None else lambda rec: on_epoch(rec, model),
        max_steps=t.get("max_steps"), lr_schedule=t.get("lr_schedule", "constant"),
        gradual=gradual_pruning(cfg, len(data.train)))
    return model


def prune_only(cfg: DictConfig, model: SplitCNN) -> SplitCNN:
    """Step 2 of Sec. III-A as configured in ``cfg.prune``: thresholds (``prune.mode``: absolute
    values, or multiples of each layer's weight std) plus dead-unit removal, no fine-tuning (cheap:
    what a sweep trial reports at every epoch)."""
    p = cfg.prune
    per_layer = OmegaConf.to_container(p.per_layer) if p.per_layer else None
    return prune(model, p.threshold, per_layer, mode=p.mode)


def prune_model(
    cfg: DictConfig, dense: SplitCNN, data: MnistSplits, on_epoch: Callable[[EpochRecord], None] | None = None
) -> SplitCNN:
    """Threshold pruning plus dead-unit removal, then optional masked fine-tuning (zeros stay zero)
    on eq. (10) as the paper writes it (``train.mu``, ``train.ce_reduction``; L1 in the loss).
    Fine-tuning recovers accuracy under fixed masks: the proximal steps and the group term of
    ``train.l1_mode``/``train.group_l1`` act during training only (with them, fine-tuning would
    keep shrinking the surviving units it is meant to retrain)."""
    p = cfg.prune
    pruned = prune_only(cfg, dense)
    if p.finetune_epochs:
        seed_everything(cfg.seed + 1, cfg.train.num_threads)
        epoch_steps = p.get("finetune_epoch_steps")
        fit(pruned, data.train, data.val, epochs=p.finetune_epochs, mu=cfg.train.mu,
            max_steps=None if epoch_steps is None else epoch_steps * p.finetune_epochs,
            ce_reduction=cfg.train.ce_reduction, lr=p.finetune_lr, lr_setting="prune.finetune_lr",
            batch_size=cfg.train.batch_size, seed=cfg.seed + 1, masks=nonzero_masks(pruned), desc="finetune",
            on_epoch=on_epoch)
    return pruned


def measure(dense: SplitCNN, pruned: SplitCNN, data: MnistSplits, dense_test: EvalResult | None = None,
            reference: str = "trained") -> dict[str, float]:
    """Final metrics: pruned model on val (selection) and test (reporting only), dense test accuracy
    (pass ``dense_test`` when it is known: a trial reusing a trained model need not recompute it).
    ``reference``: what C_r divides (``c_r_reference``); under ``parameters`` the trained model's
    own non-zeros are reported too (``nnz_trained``)."""
    val, test = evaluate(pruned, data.val), evaluate(pruned, data.test)
    dense_test = dense_test or evaluate(dense, data.test)
    metrics = {
        "val_loss": val.loss,
        "val_accuracy": val.accuracy,
        "test_loss": test.loss,
        "test_accuracy": test.accuracy,
        "dense_test_accuracy": dense_test.accuracy,
        "dense_test_loss": dense_test.loss,
    }
    s = summary(dense, pruned, reference)
    metrics.update(compression_ratio=s["compression_ratio"], nnz_params=s["nnz_params"], nnz_dense=s["nnz_dense"])
    if reference == "parameters":
        metrics["nnz_trained"] = count_nonzero(dense)
    return metrics


def log_models(dense: SplitCNN, pruned: SplitCNN) -> None:
    """Checkpoints and the per-layer table as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("dense.pt", dense), ("pruned.pt", pruned)):
            save_checkpoint(model, Path(tmp) / name)
            tracking.log_file(Path(tmp) / name, "checkpoints")
    tracking.log_table([dataclasses.asdict(r) for r in layer_table(dense, pruned)], "layers.csv")


def run_train(cfg: DictConfig) -> dict[str, float]:
    """``train.py``: one MLflow run holding params, per-epoch curves, final metrics and artifacts."""
    validate_training(cfg)
    tracking.check_configured_server(cfg)
    data = load_data(cfg)  # fails before any run is opened when data are missing
    gradual_pruning(cfg, len(data.train))  # a schedule past train.max_steps too
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                                        cfg.tracking.sqlite_wal)
    batch = tracking.RunLog()
    batch.params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
    batch.metrics({"train_samples": len(data.train), "val_samples": len(data.val), "test_samples": len(data.test)})
    with tracking.run(experiment_id, cfg.tracking.run_name or "train", {"stage": "train"}, batch=batch) as active:
        batch.send()
        tracking.log_dataset(active.info.run_id, **dataset_input(cfg, data))
        tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        # one step axis: training epochs, then fine-tuning epochs, then the final (pruned) values,
        # so MLflow's "latest" value of val_accuracy is the pruned model's
        def log_epoch(offset: int):
            def log(rec: EpochRecord, model: SplitCNN | None = None) -> None:
                values = {"train_loss": rec.train_loss, "val_loss": rec.val_loss, "val_accuracy": rec.val_accuracy}
                tracking.log_metrics(values, step=offset + rec.epoch)
            return log

        dense = train_on_path(cfg, data, log_epoch(0))
        pruned = prune_model(cfg, dense, data, log_epoch(cfg.train.epochs))
        metrics = measure(dense, pruned, data, reference=c_r_reference(cfg))
        batch.metrics(metrics, step=cfg.train.epochs + cfg.prune.finetune_epochs + 1)  # sent as the run ends
        log_models(dense, pruned)
        log.info("run %s: %s", active.info.run_id, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return {"run_id": active.info.run_id, **metrics}
