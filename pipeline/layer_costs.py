"""From a torch SplitCNN and the ``energy`` config to per-layer counts and per-cut E_p (eqs. 1, 2, 6).

The bridge between the model and the pure energy math (pipeline.energy): it reads each layer's
shape, its non-zero weights per kernel offset (exact conv MACs) and its sparsity mask (weight
storage), applies the counting rules the config names, and costs them with Tables I and II.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig

from . import energy
from .config import energy_costs
from .model import SplitCNN

def layer_shapes(model: SplitCNN) -> list[energy.LayerShape]:
    """What the energy model needs of each layer: sizes and non-zero weights/biases."""
    shapes = []
    for info in model.infos:
        nnz_w = nnz_b = 0
        if info.kind != "pool":
            layer = model.layers[info.name]
            nnz_w, nnz_b = int(torch.count_nonzero(layer.weight)), int(torch.count_nonzero(layer.bias))
        shapes.append(energy.LayerShape(
            name=info.name, kind=info.kind, in_elements=info.in_elements, out_elements=info.out_elements,
            out_positions=info.out_positions, nnz_weights=nnz_w, nnz_biases=nnz_b, relu=info.relu,
            pool_window=4 if info.kind == "pool" else 1,
        ))
    return shapes


def layer_counts(model: SplitCNN, energy_cfg: DictConfig) -> list[energy.LayerCounts]:
    """Each layer's operations, operands and stored bits under energy.conv_macs, pool_windows and
    weight_storage (value width = the precision's bits_per_element)."""
    value_bits = int(energy_cfg.bits_per_element[energy_cfg.precision])
    counts = []
    for info, shape in zip(model.infos, layer_shapes(model)):
        module = model.layers[info.name]
        macs = bias_adds = reads = comparisons = params = stored = 0
        fmt = "none"
        if info.kind == "pool":
            channels, height, width = info.in_shape
            reads, comparisons = (channels * n for n in energy.pool_counts(
                height, width, module.kernel_size, module.stride, energy_cfg.pool_windows == "exact"))
        else:
            weight, bias = module.weight.detach(), module.bias.detach()
            if info.kind == "conv":
                _, height, width = info.in_shape
                macs = energy.conv_mac_count((weight != 0).sum(dim=(0, 1)).cpu().numpy(), height, width,
                                             module.padding[0], energy_cfg.conv_macs == "exact")
            else:
                macs = shape.nnz_weights
            bias_adds = shape.nnz_biases * info.out_positions
            mask = torch.cat([weight.reshape(len(weight), -1) != 0, (bias != 0)[:, None]], dim=1).cpu().numpy()
            params = mask.size
            fmt, stored = energy.choose_storage(
                energy.storage_bits(mask, value_bits, int(energy_cfg.csr_index_bits[info.kind])),
                energy_cfg.weight_storage)
        counts.append(energy.LayerCounts(
            name=info.name, kind=info.kind, in_elements=info.in_elements, out_elements=info.out_elements,
            macs=int(macs), bias_adds=bias_adds, relu_ops=info.out_elements if info.relu else 0,
            pool_reads=reads, pool_comparisons=comparisons, params=params,
            nnz_params=shape.nnz_weights + shape.nnz_biases, stored_bits=int(stored), storage_format=fmt,
        ))
    return counts


@dataclass
class ProcessingTable:
    """Per cut point (input, conv1, ..., fc5, C = L + 1) the client's E_p and what it sends; per
    layer (L) its costs as part of the whole client model (all L layers on the client)."""

    names: list[str]
    processing_j: np.ndarray  # (C,) E_p of eq. (6); index 0 (input) = 0
    out_elements: np.ndarray  # (C,) elements sent; index 0 = the raw image
    macs: np.ndarray  # (C,) multiplies the client runs up to the cut (compute time)
    layers: dict[str, np.ndarray]  # (L,) mults, adds, macs, computation_j, memory_j, processing_j, ...
    weight_level: list[str] = field(default_factory=list)  # (C,) memory level of the client's weights

    def index(self, cut: str) -> int:
        return self.names.index(cut)


def processing_table(model: SplitCNN, energy_cfg: DictConfig) -> ProcessingTable:
    """E_p of eq. (6) per cut and the per-layer breakdown (eqs. 1, 2), under ``energy_cfg``."""
    counts = layer_counts(model, energy_cfg)
    costs = energy_costs(energy_cfg)
    processing, levels = energy.cut_processing_j(counts, costs)
    whole_level = costs.weight_level(sum(c.stored_bits for c in counts))
    layers = energy.layer_energies(counts, costs, whole_level)
    for name in ("macs", "stored_bits", "params", "nnz_params", "pool_reads"):
        layers[name] = np.array([getattr(c, name) for c in counts], dtype=np.int64)
    layers["storage_format"] = np.array([c.storage_format for c in counts])
    layers["memory_level"] = np.array([whole_level] * len(counts))
    return ProcessingTable(
        names=["input", *(c.name for c in counts)],
        processing_j=processing,
        out_elements=np.array([counts[0].in_elements, *(c.out_elements for c in counts)], dtype=np.int64),
        macs=np.concatenate(([0], np.cumsum(layers["mults"]))),
        layers=layers,
        weight_level=levels,
    )
