"""Sparsification during training, beyond the paper's penalty + one threshold (Sec. III-A, eq. 10).

Pure torch math, no I/O; ``training.fit`` calls it after every optimiser step.

- **Proximal L1** (``train.l1_mode: proximal``): eq. (10)'s L1 term leaves the loss and is applied
  as its proximal operator after each Adam step, so weights reach exact zeros during training.
  With SGD at step size lr on mu * CE + (1 - mu) ||theta||_1 the proximal gradient step is
  theta <- S(theta - lr mu grad CE, lr (1 - mu)), S(w, tau) = sign(w) max(|w| - tau, 0). Adam
  does not move every coordinate by lr times its gradient but by lr / (sqrt(v_hat_i) + eps) times
  (v_hat: Adam's bias-corrected second moment of the gradient of mu * CE), so a threshold of
  lr (1 - mu) would be negligible against Adam's lr-sized moves (3e-8 per step against ~1e-3 at
  the defaults). The proximal step in Adam's own metric diag(sqrt(v_hat) + eps) (ProxGen, Yun et
  al., NeurIPS 2021) thresholds every coordinate by its own Adam step size:

      tau_i = lr_t (1 - mu) / (sqrt(v_hat_i) + eps)

  i.e. the SGD rule lr (1 - mu) / mu on CE with Adam's per-coordinate step lr / (sqrt(v_hat_CE,i)
  + eps / mu) in place of lr. The same mu then weighs the L1 term as much against the CE as in
  ``penalty`` mode, where Adam divides the L1 gradient (1 - mu) sign(theta) by the same
  denominator; but a weight the CE no longer pulls (v_hat -> 0) gets a threshold that grows
  without bound and is set to exactly 0, where ``penalty`` mode lets it oscillate around 0 at
  amplitude ~lr. Biases too (eq. 10 sums over every parameter).

- **Group L1** (``train.group_l1`` = gamma >= 0, ``train.group_l1_per_layer`` per layer):
  sum_l gamma_l sum_{g in l} ||theta_g||_2 over the groups
  g = one conv output channel (its C_in x 5 x 5 weights and its bias) or one fc output neuron (its
  row and its bias), for every weighted layer but the last (fc5's 10 outputs are the classes).
  A zero group is a unit whose output is ReLU(0) = 0 everywhere, which ``pruning.remove_dead_units``
  deletes: fewer channels at conv1/pool1/conv2/pool2, fewer elements sent at those cuts. In
  ``penalty`` mode the term is added to the loss; in ``proximal`` mode its proximal step follows
  the L1 one (the sparse-group-lasso prox is the L1 soft-threshold then the group shrink), the
  group shrink theta_g <- theta_g max(0, 1 - tau_g / ||theta_g||_2) with
  tau_g = lr_t gamma / mean_{i in g}(sqrt(v_hat_i) + eps): the prox in Adam's metric has no
  closed form for a group, so the group's metric is taken as the mean of its coordinates'.

- **Gradual magnitude pruning** (``prune.schedule: gradual``; Zhu & Gupta, "To prune, or not to
  prune", 2017, eq. 1): at steps t = t0, t0 + dt, ..., t0 + n dt the smallest-magnitude weights are
  masked to sparsity s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3; the masks are held fixed
  between these steps (masked weights are re-zeroed after every optimiser step) and after the last
  one. Weights only (biases are 0.5% of the parameters and a bias-only unit is folded or removed
  by ``remove_dead_units``), per layer or over all layers at once; and, optionally, whole units
  (``prune.gradual.units``: a conv channel or fc neuron with its bias, smallest group norm first)
  along the same curve, the structured counterpart that shrinks what a cut sends.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import nn

L1_MODES = ("penalty", "proximal")
PRUNE_SCHEDULES = ("oneshot", "gradual")
GRADUAL_SCOPES = ("layer", "global")


# -- proximal operators ----------------------------------------------------------------------
def soft_threshold(w: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """S(w, tau) = sign(w) max(|w| - tau, 0): the prox of tau |w| (elementwise tau allowed)."""
    return torch.sign(w) * torch.clamp(w.abs() - tau, min=0.0)


def group_shrink(rows: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The prox of tau_g ||theta_g||_2 for each row g of ``rows`` (one group per row):
    theta_g max(0, 1 - tau_g / ||theta_g||_2); a zero row stays zero."""
    norms = rows.norm(dim=1)
    scale = torch.clamp(1.0 - tau / torch.where(norms > 0, norms, torch.ones_like(norms)), min=0.0)
    return rows * scale[:, None]


def adam_step_sizes(optimiser: torch.optim.Adam, p: torch.Tensor) -> torch.Tensor | None:
    """lr_t / (sqrt(v_hat) + eps) per coordinate of ``p``: how far Adam moves it per unit of its
    normalised gradient (None before Adam's first step on ``p``)."""
    state = optimiser.state.get(p)
    if not state:
        return None
    group = next(g for g in optimiser.param_groups if any(q is p for q in g["params"]))
    _, beta2 = group["betas"]
    step = float(state["step"])
    v_hat = state["exp_avg_sq"] / (1.0 - beta2 ** step)
    return group["lr"] / (v_hat.sqrt() + group["eps"])


# -- groups: one per output unit --------------------------------------------------------------
def unit_groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every weighted layer whose output units form groups: all but the last."""
    return list(model.weighted_layers())[:-1]


def _rows(layer: nn.Module) -> torch.Tensor:
    """One row per output unit: its incoming weights and its bias."""
    return torch.cat([layer.weight.reshape(len(layer.weight), -1), layer.bias[:, None]], dim=1)


GroupL1 = Union[float, Mapping[str, float]]


def layer_strengths(model: nn.Module, group_l1: GroupL1) -> dict[str, float]:
    """gamma of every grouped layer: a number applies to all, a mapping names each (missing: 0).
    The CE pulls very differently on a conv1 channel (26 parameters, read at 784 positions) and on
    an fc1 neuron, so one gamma that removes conv1 channels wipes out the fc layers."""
    if isinstance(group_l1, Mapping):
        return {name: float(group_l1.get(name) or 0.0) for name, _ in unit_groups(model)}
    return {name: float(group_l1) for name, _ in unit_groups(model)}


def group_norm_sum(model: nn.Module, group_l1: GroupL1 = 1.0) -> torch.Tensor:
    """sum_l gamma_l sum_{g in l} ||theta_g||_2 over every conv output channel and fc output
    neuron but the last layer's, each group its weights and bias (the group-L1 term;
    differentiable); ``group_l1``: see ``layer_strengths`` (default 1: the plain sum of norms)."""
    gammas = layer_strengths(model, group_l1)
    return sum(gammas[name] * _rows(layer).norm(dim=1).sum() for name, layer in unit_groups(model) if gammas[name])


@torch.no_grad()
def proximal_step(model: nn.Module, optimiser: torch.optim.Adam, l1: float, group_l1: GroupL1) -> None:
    """After an Adam step: the L1 prox with tau_i = l1 * step_i, then the group prox with
    tau_g = gamma_l / mean_g(1 / step_i) (module docstring; step_i = ``adam_step_sizes``).
    ``l1`` is 1 - mu (0: no L1 prox), ``group_l1`` gamma (0: none; see ``layer_strengths``)."""
    if l1 > 0:
        for p in model.parameters():
            steps = adam_step_sizes(optimiser, p)
            if steps is not None:
                p.copy_(soft_threshold(p, l1 * steps))
    if not group_l1:
        return
    gammas = layer_strengths(model, group_l1)
    for name, layer in unit_groups(model):
        if gammas[name]:
            w_steps, b_steps = adam_step_sizes(optimiser, layer.weight), adam_step_sizes(optimiser, layer.bias)
            if w_steps is None or b_steps is None:
                continue
            metric = torch.cat([w_steps.reshape(len(w_steps), -1), b_steps[:, None]], dim=1).reciprocal().mean(dim=1)
            rows = group_shrink(_rows(layer), gammas[name] / metric)
            n_in = rows.shape[1] - 1
            layer.weight.copy_(rows[:, :n_in].reshape(layer.weight.shape))
            layer.bias.copy_(rows[:, n_in])


# -- gradual magnitude pruning ----------------------------------------------------------------
def cubic_sparsity(step: int, initial: float, final: float, start_step: int, end_step: int) -> float:
    """Zhu & Gupta's s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, with t0 = ``start_step``
    and t0 + n dt = ``end_step``; 0 before t0 (no pruning yet), s_f from ``end_step`` on."""
    if step < start_step:
        return 0.0
    if step >= end_step:
        return float(final)
    progress = (step - start_step) / (end_step - start_step)
    return float(final + (initial - final) * (1.0 - progress) ** 3)


def keep_largest(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask (same shape, 0/1) zeroing floor(sparsity * n) of the n entries, the smallest first
    (a stable sort: ties go in index order, so the same weights give the same mask)."""
    flat = magnitudes.flatten()
    n_prune = int(math.floor(sparsity * flat.numel() + 1e-6))  # 0.7 * 90 is 62.99999999999999 in floats
    mask = torch.ones_like(flat)
    if n_prune:
        mask[torch.argsort(flat, stable=True)[:n_prune]] = 0.0
    return mask.reshape(magnitudes.shape)


@dataclass
class GradualPruning:
    """Masks on every weighted layer's weights along ``cubic_sparsity`` (steps count optimiser
    steps from 1). ``per_layer`` maps a layer to its own final sparsity (it then follows its own
    schedule from ``initial`` to it; 0 keeps it dense); the other layers reach ``final``, each
    on its own (``scope='layer'``) or ranked together by magnitude (``scope='global'``).

    ``units`` maps a grouped layer (``unit_groups``) to the fraction of its output units (conv
    channels, fc neurons) to remove, along the same curve: the units with the smallest group
    norm ||(weights, bias)||_2 are masked whole, bias included, so they output ReLU(0) = 0 and
    ``remove_dead_units`` deletes them, shrinking what that cut sends (structured pruning); the
    weight-level target of the layer then counts their weights as pruned first."""

    initial: float
    final: float
    start_step: int
    end_step: int
    frequency: int
    scope: str = "layer"
    per_layer: dict[str, float] = field(default_factory=dict)
    units: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scope not in GRADUAL_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(GRADUAL_SCOPES)} (got {self.scope!r})")
        # n dt: the last update lands on a multiple of dt, where s reaches s_f exactly
        span = max(self.end_step - self.start_step, 0)
        self.end_step = self.start_step + (span // self.frequency) * self.frequency

    def is_update(self, step: int) -> bool:
        return self.start_step <= step <= self.end_step and (step - self.start_step) % self.frequency == 0

    def _curve(self, step: int, final: float) -> float:
        initial = min(self.initial, final)
        if self.end_step == self.start_step:
            return float(final) if step >= self.start_step else 0.0
        return cubic_sparsity(step, initial, final, self.start_step, self.end_step)

    def sparsity(self, step: int, layer: str | None = None) -> float:
        return self._curve(step, self.per_layer.get(layer, self.final) if layer is not None else self.final)

    def unit_sparsity(self, step: int, layer: str) -> float:
        return self._curve(step, self.units.get(layer, 0.0))

    @torch.no_grad()
    def masks(self, model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        """The keep-masks at ``step`` (parameter name -> 0/1 tensor): every weight, and the
        biases of the layers in ``units``."""
        layers = dict(model.weighted_layers())
        masks, magnitudes = {}, {name: layer.weight.abs() for name, layer in layers.items()}
        for name in self.units:
            rows = keep_largest(_rows(layers[name]).norm(dim=1), self.unit_sparsity(step, name))
            masks[f"layers.{name}.bias"] = rows
            magnitudes[name] = magnitudes[name] * rows.reshape(-1, *[1] * (magnitudes[name].dim() - 1))
        pooled = []
        for name in layers:
            if self.scope == "layer" or name in self.per_layer:
                masks[f"layers.{name}.weight"] = keep_largest(magnitudes[name], self.sparsity(step, name))
            else:
                pooled.append(name)
        if pooled:
            mask = keep_largest(torch.cat([magnitudes[name].flatten() for name in pooled]), self.sparsity(step))
            for name, piece in zip(pooled, torch.split(mask, [magnitudes[name].numel() for name in pooled])):
                masks[f"layers.{name}.weight"] = piece.reshape(layers[name].weight.shape)
        for name in self.units:  # a removed unit's weights go even where the weight target keeps fewer zeros
            masks[f"layers.{name}.weight"] *= masks[f"layers.{name}.bias"].reshape(-1, *[1] * (layers[name].weight.dim() - 1))
        return masks
