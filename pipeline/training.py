"""Training with the L1-relaxed sparsity objective of eq. (10), evaluation, masked fine-tuning."""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .data import TensorSplit
from .sparsity import L1_MODES, GradualPruning, GroupL1, group_norm_sum, proximal_step

log = logging.getLogger(__name__)


def l1_norm(model: nn.Module) -> torch.Tensor:
    """sum_l ||theta_l||_1 over every weight and bias of the model (eq. 10, second term)."""
    return sum(p.abs().sum() for p in model.parameters())


CE_REDUCTIONS = ("mean", "sum")
LR_SCHEDULES = ("constant", "cosine")


def sparse_loss(
    logits: torch.Tensor, labels: torch.Tensor, model: nn.Module, mu: float, ce_reduction: str = "mean",
    l1_mode: str = "penalty", group_l1: GroupL1 = 0.0,
) -> torch.Tensor:
    """Eq. (10): mu * loss(theta) + (1 - mu) * sum_l ||theta_l||_1, on one batch of B samples.

    The paper does not say how loss(theta) is reduced over a batch (``train.ce_reduction``):
    - ``mean``: loss = (1/B) sum_i CE_i, the batch-mean cross-entropy (PyTorch's default);
    - ``sum``:  loss = sum_i CE_i = B * CE_mean, the cross-entropy summed over the batch.
    In both modes the L1 term is the unnormalised sum of |theta| over every weight and bias (433k
    parameters, about 10.6k at initialisation), added once per batch:
    - ``mean``: mu * CE_mean + (1 - mu) * L1;
    - ``sum``:  mu * B * CE_mean + (1 - mu) * L1.
    ``sum`` with mu_sum is ``mean`` with (1 - mu_mean) / mu_mean = (1 - mu_sum) / (B mu_sum), up to
    an overall factor that Adam's steps ignore (but for its eps and a smaller last batch). Under
    ``mean`` the paper's mu = 0.9999 collapses this model to chance accuracy; under ``sum`` (B = 64)
    it is mean's 1 - 1.56e-6 and trains (README, "Model").

    ``group_l1`` = gamma (or gamma per layer) adds gamma * sum_g ||theta_g||_2 (pipeline.sparsity). With
    ``l1_mode="proximal"`` the penalties are not in the loss: mu * loss only, the L1 and group
    terms being applied by their proximal steps after each optimiser step (``fit``).
    """
    if ce_reduction not in CE_REDUCTIONS:
        raise ValueError(f"ce_reduction must be one of {', '.join(CE_REDUCTIONS)} (got {ce_reduction!r})")
    if l1_mode not in L1_MODES:
        raise ValueError(f"train.l1_mode must be one of {', '.join(L1_MODES)} (got {l1_mode!r})")
    ce = F.cross_entropy(logits, labels, reduction=ce_reduction)
    if l1_mode == "proximal":
        return ce if mu == 1.0 else mu * ce
    loss = ce if mu == 1.0 else mu * ce + (1.0 - mu) * l1_norm(model)
    if group_l1:
        loss = loss + group_norm_sum(model, group_l1)
    return loss


@torch.no_grad()
def penalty_value(model: nn.Module, mu: float, group_l1: GroupL1) -> float:
    """(1 - mu) * L1 + gamma * group norms: what ``proximal`` mode leaves out of the loss, added
    back to the logged ``train_loss`` so it is eq. (10) (+ the group term) in both modes."""
    value = (1.0 - mu) * float(l1_norm(model)) if mu != 1.0 else 0.0
    return value + (float(group_norm_sum(model, group_l1)) if group_l1 else 0.0)


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy
    accuracy: float


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` + 1 (0-based ``step``) as a fraction of ``train.lr``:
    1 for ``constant``; (1 + cos(pi step / total_steps)) / 2 for ``cosine`` (SGDR without restarts,
    Loshchilov & Hutter, ICLR 2017): 1 at the first step, 1/2 half-way, towards 0 at the last."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(spec: str) -> torch.device:
    """``train.device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises ValueError naming the setting when the value is malformed or asks for a GPU this
    machine does not have."""
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = spec.partition(":")[2]
    if not (spec == "cuda" or (spec.startswith("cuda:") and index.isdigit())):
        raise ValueError(f"train.device must be one of {DEVICE_CHOICES} (got {spec!r})")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device={spec}: CUDA is not available here (torch {torch.__version__}, "
                         f"torch.cuda.is_available() is False); use train.device=cpu or auto")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ValueError(f"train.device={spec}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return torch.device(spec)


def split_device(split: TensorSplit) -> torch.device:
    return split.images.device


@torch.no_grad()
def evaluate(model: nn.Module, split: TensorSplit, batch_size: int = 1000) -> EvalResult:
    """Mean cross-entropy and accuracy; the model runs where the data live (``train.device``)."""
    model.to(split_device(split)).eval()
    total_loss, correct = 0.0, 0
    for images, labels in split.batches(batch_size):
        logits = model(images)
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
    n = len(split)
    return EvalResult(total_loss / n, correct / n)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float  # eq. (10) per batch (as train.ce_reduction reduces it), averaged over the epoch's samples
    val_loss: float
    val_accuracy: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)


class TrainingDiverged(FloatingPointError):
    """The training loss became non-finite: a run failure (the run ends FAILED, a sweep's trial
    FAIL with this reason and the sweep goes on), not a setting outside its range."""


def seed_everything(seed: int, num_threads: int | None = None) -> None:
    """Same config and seed -> same weights on CPU (fixed thread count: reductions are order-sensitive).

    On CUDA, deterministic algorithms are requested too (cuBLAS needs CUBLAS_WORKSPACE_CONFIG set
    before its first call, set here unless the user chose one); an op without a deterministic CUDA
    kernel warns instead of failing (README "CPU or GPU"): same GPU model and CUDA/cuDNN versions -> same
    metrics, but not the CPU's, nor another GPU's."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    if num_threads:
        torch.set_num_threads(num_threads)


def _apply_masks(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
    if masks:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in masks:
                    p.mul_(masks[name])


def fit(
    model: nn.Module,
    train: TensorSplit,
    val: TensorSplit,
    *,
    epochs: int,
    mu: float,
    ce_reduction: str = "mean",
    lr: float,
    batch_size: int,
    seed: int,
    masks: dict[str, torch.Tensor] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    desc: str = "train",
    lr_setting: str = "lr",
    max_steps: int | None = None,
    lr_schedule: str = "constant",
    l1_mode: str = "penalty",
    group_l1: GroupL1 = 0.0,
    gradual: GradualPruning | None = None,
) -> TrainResult:
    """Adam on eq. (10) (``ce_reduction``: see ``sparse_loss``). With ``masks`` (fine-tuning) pruned weights are held at zero after every step.

    ``l1_mode``: ``penalty`` (the paper: the L1 term in the loss) or ``proximal`` (its proximal
    step after each Adam step, exact zeros; ``group_l1`` likewise: pipeline.sparsity). ``gradual``:
    magnitude masks recomputed at its schedule's steps and held between them (in place of ``masks``).

    The model runs where ``train`` lives (``train.device``). ``max_steps`` caps the optimiser
    steps (the last epoch ends early; None = ``epochs`` full epochs), ``lr_schedule``: ``constant``
    (the paper's Adam at ``lr``) or ``cosine`` (lr * (1 + cos(pi s / S)) / 2 at step s of the S
    steps run, Loshchilov & Hutter 2017).
    ``on_epoch`` sees each epoch's record (MLflow logging, Optuna pruning); it may raise to stop.
    A non-finite training loss raises TrainingDiverged, naming ``lr_setting`` (the setting ``lr`` came from).
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)} (got {lr_schedule!r})")
    device = split_device(train)
    model.to(device)
    masks = {k: m.to(device) for k, m in masks.items()} if masks else None
    what = "fine-tuning" if masks is not None else "training"  # gradual pruning makes masks of its own below
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n_batches = math.ceil(len(train) / batch_size)
    total_steps = epochs * n_batches if max_steps is None else min(epochs * n_batches, max_steps)
    epochs = math.ceil(total_steps / n_batches)
    schedule = None
    if lr_schedule != "constant":
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(lr_schedule, s, total_steps))
    result = TrainResult()
    interactive = sys.stderr.isatty()
    step = 0  # optimiser steps done
    if gradual is not None and gradual.is_update(step):  # a schedule starting at step 0 masks the initial weights
        masks = gradual.masks(model, step)
        _apply_masks(model, masks)
    for epoch in range(1, epochs + 1):
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(total=n_batches, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not interactive)
        for images, labels in train.batches(batch_size, generator):
            if step == total_steps:
                break
            step += 1
            optimiser.zero_grad(set_to_none=True)
            loss = sparse_loss(model(images), labels, model, mu, ce_reduction, l1_mode, group_l1)
            loss.backward()
            value = float(loss.detach())
            if l1_mode == "proximal":
                value += penalty_value(model, mu, group_l1)  # at the weights the loss saw
            optimiser.step()
            if l1_mode == "proximal":  # at this step's lr, before the schedule moves it
                proximal_step(model, optimiser, 1.0 - mu, group_l1)
            if schedule is not None:
                schedule.step()
            if gradual is not None and gradual.is_update(step):
                masks = gradual.masks(model, step)
            _apply_masks(model, masks)
            running += value * len(labels)
            seen += len(labels)
            bar.update()
        bar.close()
        metrics = evaluate(model, val)
        record = EpochRecord(epoch, running / seen, metrics.loss, metrics.accuracy)
        result.history.append(record)
        log.info(
            "%s epoch %d/%d: train_loss=%.4f val_loss=%.4f val_accuracy=%.4f",
            desc, epoch, epochs, record.train_loss, record.val_loss, record.val_accuracy,
        )
        if not math.isfinite(record.train_loss):
            raise TrainingDiverged(f"{what} diverged at epoch {epoch} "
                                   f"(train_loss={record.train_loss}) with {lr_setting}={lr:g}: a smaller "
                                   "learning rate may converge")
        if on_epoch is not None:
            on_epoch(record)
    return result
