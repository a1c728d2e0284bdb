"""Step 2 of Sec. III-A: magnitude pruning, removal of structurally dead units, compression ratio.

After thresholding, a channel or neuron whose incoming weights are all zero emits a constant,
and one whose outputs no later layer reads is useless; deleting both shrinks the representation
sent at that cut (paper Fig. 3: "eliminating entire neurons after pruning").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import SplitCNN, count_nonzero, count_parameters


PRUNE_MODES = ("absolute", "std")


def layer_thresholds(
    model: SplitCNN, threshold: float, per_layer: dict[str, float] | None = None, mode: str = "absolute"
) -> dict[str, float]:
    """The absolute threshold of every weighted layer (``prune.mode``).

    ``per_layer`` values (keys are layer names such as ``fc1``; None = the global value) override
    ``threshold`` for their layer. In ``absolute`` mode (the paper's "predefined pruning threshold",
    Sec. III-A step 2) a value is the threshold itself. In ``std`` mode it is a quality parameter q
    and the layer's threshold is q * std(W_l), the population standard deviation of the layer's
    weights, biases excluded (Han et al., "Learning both Weights and Connections for Efficient
    Neural Networks", NeurIPS 2015): it scales with the weights, so it means the same
    after 2 epochs as after 30, when an absolute 0.08 is above fc1's whole initial range
    (PyTorch's init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)): 1/sqrt(256) = 0.0625 for fc1).
    """
    if mode not in PRUNE_MODES:
        raise ValueError(f"mode must be one of {', '.join(PRUNE_MODES)} (got {mode!r})")
    per_layer = {k: v for k, v in (per_layer or {}).items() if v is not None}
    thresholds = {}
    for name, layer in model.weighted_layers():
        value = per_layer.get(name, threshold)
        if mode == "std":
            value *= float(layer.weight.detach().std(correction=0))
        thresholds[name] = float(value)
    return thresholds


def magnitude_masks(
    model: SplitCNN, threshold: float, per_layer: dict[str, float] | None = None, mode: str = "absolute"
) -> dict[str, torch.Tensor]:
    """Keep-masks: a weight or bias survives iff |theta| >= its layer's threshold (``layer_thresholds``)."""
    thresholds = layer_thresholds(model, threshold, per_layer, mode)
    masks = {}
    for name, p in model.named_parameters():
        layer = name.split(".")[1]  # "layers.fc1.weight" -> "fc1"
        masks[name] = (p.detach().abs() >= thresholds[layer]).to(p.dtype)
    return masks


def apply_masks(model: SplitCNN, masks: dict[str, torch.Tensor]) -> SplitCNN:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(masks[name])
    return model


def _unit_slices(model: SplitCNN):
    """For each weighted layer except the last: (layer, consumer, how the consumer reads unit u).

    conv_l feeds conv_{l+1} through a pool (input channel u); conv4 feeds fc1 through pool4 and a
    flatten, so its channel u is the fc1 input columns u*h*w .. (u+1)*h*w - 1.
    """
    names = [n for n, _ in model.weighted_layers()]
    spatial = model.flat_shape[1] * model.flat_shape[2]
    for layer, consumer in zip(names[:-1], names[1:]):
        group = spatial if (layer.startswith("conv") and consumer.startswith("fc")) else 1
        yield layer, consumer, group


def remove_dead_units(model: SplitCNN) -> SplitCNN:
    """A new, smaller SplitCNN computing exactly the same logits as ``model`` (already masked).

    Repeats until nothing changes, since deleting a unit can leave its producers unread:
    - a unit whose outputs no later layer reads is deleted;
    - a unit with all-zero incoming weights outputs ReLU(b) everywhere: if that is 0 it is
      deleted; if not and the consumer is fully connected, the constant is folded into the
      consumer's bias and the unit deleted. A constant conv channel feeding another conv is kept:
      zero padding makes its contribution position-dependent, so folding would not be exact.
    At least one unit per layer is kept so every layer still has a shape.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    w = lambda n: state[f"layers.{n}.weight"]  # noqa: E731
    b = lambda n: state[f"layers.{n}.bias"]  # noqa: E731
    changed = True
    while changed:
        changed = False
        for layer, consumer, group in _unit_slices(model):
            W, B, Wn = w(layer), b(layer), w(consumer)
            n_units = W.shape[0]
            # consumer weights grouped by the producing unit: (out, n_units, rest)
            reads = Wn.reshape(Wn.shape[0], n_units, -1)
            is_read = reads.ne(0).any(dim=2).any(dim=0)
            dead_in = ~W.reshape(n_units, -1).ne(0).any(dim=1)
            constant = torch.relu(B)
            foldable = consumer.startswith("fc")
            remove = ~is_read | (dead_in & ((constant == 0) | foldable))
            if bool(remove.all()):
                remove[0] = False
            if not bool(remove.any()):
                continue
            fold = remove & is_read & dead_in & (constant != 0)
            if bool(fold.any()):
                b(consumer).add_(reads[:, fold, :].sum(dim=2) @ constant[fold])
            keep = ~remove
            changed = True
            state[f"layers.{layer}.weight"] = W[keep]
            state[f"layers.{layer}.bias"] = B[keep]
            state[f"layers.{consumer}.weight"] = Wn[:, keep.repeat_interleave(group)] if group > 1 else Wn[:, keep]
    widths = {
        "conv_channels": [state[f"layers.conv{i}.weight"].shape[0] for i in range(1, 5)],
        "fc_units": [state[f"layers.fc{i}.weight"].shape[0] for i in range(1, 6)],
    }
    smaller = SplitCNN(**widths)
    smaller.load_state_dict(state)
    return smaller


def nonzero_masks(model: SplitCNN) -> dict[str, torch.Tensor]:
    """Masks that hold the current zeros at zero (masked fine-tuning of a cleaned model)."""
    return {name: (p.detach() != 0).to(p.dtype) for name, p in model.named_parameters()}


def compression_ratio(dense_nnz: int, pruned_nnz: int) -> float:
    """C_r = non-zeros of the trained dense model / non-zeros of the compressed one (Sec. IV)."""
    if pruned_nnz <= 0:
        return float("inf")
    return dense_nnz / pruned_nnz


def prune(
    model: SplitCNN, threshold: float, per_layer: dict[str, float] | None = None, mode: str = "absolute"
) -> SplitCNN:
    """Threshold (a copy of) ``model`` (``layer_thresholds``) and remove its dead units."""
    masked = SplitCNN(model.conv_channels, model.fc_units)
    masked.load_state_dict(model.state_dict())
    apply_masks(masked, magnitude_masks(masked, threshold, per_layer, mode))
    return remove_dead_units(masked)


@dataclass
class LayerRow:
    layer: str
    kind: str
    params_dense: int
    nnz_dense: int
    params_pruned: int
    nnz_pruned: int
    out_elements_dense: int
    out_elements_pruned: int


def _layer_counts(model: SplitCNN, name: str) -> tuple[int, int]:
    params = list(model.layers[name].parameters())
    return sum(p.numel() for p in params), int(sum(int(torch.count_nonzero(p)) for p in params))


def layer_table(dense: SplitCNN, pruned: SplitCNN) -> list[LayerRow]:
    """Per-layer parameters, non-zeros and output elements before and after pruning."""
    rows = []
    for d_info, p_info in zip(dense.infos, pruned.infos):
        pd, nd = _layer_counts(dense, d_info.name)
        pp, npr = _layer_counts(pruned, p_info.name)
        rows.append(LayerRow(d_info.name, d_info.kind, pd, nd, pp, npr, d_info.out_elements, p_info.out_elements))
    return rows


C_R_REFERENCES = ("trained", "parameters")


def summary(dense: SplitCNN, pruned: SplitCNN, reference: str = "trained") -> dict[str, float]:
    """Sizes and C_r. ``reference`` is what C_r divides: ``trained`` = the non-zeros of ``dense``
    (the paper: the uncompressed trained model, which eq. (10) with Adam leaves without exact
    zeros); ``parameters`` = its parameter count, for a ``dense`` that training already sparsified
    (proximal L1, gradual pruning), whose own non-zeros would hide that compression."""
    if reference not in C_R_REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(C_R_REFERENCES)} (got {reference!r})")
    dense_nnz, pruned_nnz = count_nonzero(dense), count_nonzero(pruned)
    if reference == "parameters":
        dense_nnz = count_parameters(dense)
    return {
        "params_dense": count_parameters(dense),
        "nnz_dense": dense_nnz,
        "nnz_params": pruned_nnz,
        "compression_ratio": compression_ratio(dense_nnz, pruned_nnz),
    }
