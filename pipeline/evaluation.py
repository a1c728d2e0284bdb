"""From a trained model and the config to per-cut tables and the paper's comparison (Table III).

Bridges torch models to the numpy math: reads each layer's shape and non-zeros, turns the
energy config (Tables I, II) into per-element costs, and runs every method of Sec. IV over
the same scenario.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import channel, energy, selection
from .model import SplitCNN
from .simulation import Link, MethodResult, Scenario, run_method, start_rates_bps, transmission_times_s

METHODS = ("ps", "pool1", "softmax", "psnc", "offload")
FIXED_CUTS = {"pool1": "pool1", "softmax": "fc5", "offload": "input"}


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


@dataclass(frozen=True)
class EnergyConstants:
    e_mul_j: float
    e_add_j: float
    e_weight_j: float
    e_activation_j: float

    @classmethod
    def from_config(cls, cfg) -> "EnergyConstants":
        """Table I row by ``precision``; Table II level for weights (and, optionally, activations),
        scaled from a 64-bit access to one element of the precision's width."""
        ops = cfg.operations_pj[cfg.precision]
        bits = cfg.bits_per_element[cfg.precision]
        weight = energy.element_access_energy_j(cfg.memory_pj_per_64bit[cfg.weight_memory] * 1e-12, bits)
        act = 0.0
        if cfg.activation_memory:
            act = energy.element_access_energy_j(cfg.memory_pj_per_64bit[cfg.activation_memory] * 1e-12, bits)
        return cls(ops.mul * 1e-12, ops.add * 1e-12, weight, act)


@dataclass
class CutTable:
    """Per cut point (input, conv1, ..., fc5): client processing energy and payload bits."""

    names: list[str]
    processing_j: np.ndarray
    out_elements: np.ndarray
    bits: np.ndarray
    layers: dict[str, np.ndarray]  # per-layer (not cumulative) energies and op counts

    def index(self, cut: str) -> int:
        return self.names.index(cut)


def cut_table(model: SplitCNN, constants: EnergyConstants, bits_per_element: int) -> CutTable:
    shapes = layer_shapes(model)
    args = (constants.e_mul_j, constants.e_add_j, constants.e_weight_j, constants.e_activation_j)
    out_elements = energy.cut_out_elements(shapes)
    names = energy.cut_names(shapes)
    return CutTable(
        names=names,
        processing_j=energy.processing_energy_per_cut_j(shapes, *args),
        out_elements=out_elements,
        bits=channel.payload_bits(out_elements, bits_per_element, n_cuts=len(names)).astype(float),
        layers=energy.layer_energies_j(shapes, *args),
    )


def run_methods(
    compressed: CutTable, uncompressed: CutTable, scenario: Scenario, link: Link, causal: bool = False,
    methods=METHODS,
) -> tuple[Scenario, dict[str, MethodResult]]:
    """Every method of Sec. IV on the same scenario and link; PS/PSNC decide causally if asked."""
    scenario, tau_c = transmission_times_s(scenario, link, compressed.bits)
    results = {}
    start_rate = start_rates_bps(scenario, link) if causal else None
    for method in methods:
        if method == "psnc":
            scenario, tau_u = transmission_times_s(scenario, link, uncompressed.bits)
            results[method] = run_method(uncompressed.processing_j, tau_u, link.power_w,
                                         start_rate_bps=start_rate, bits=uncompressed.bits)
        elif method == "ps":
            results[method] = run_method(compressed.processing_j, tau_c, link.power_w,
                                         start_rate_bps=start_rate, bits=compressed.bits)
        else:
            cut = compressed.index(FIXED_CUTS[method])
            results[method] = run_method(compressed.processing_j, tau_c, link.power_w, fixed_cut=cut)
    return scenario, results


def table_rows(bandwidth_hz: float, results: dict[str, MethodResult], carbon_kg_per_kwh: float,
               rows: np.ndarray | None = None) -> list[dict]:
    """Table III rows: trajectory averages of E, E_p, E_tr and the CO2 of E."""
    out = []
    for method, result in results.items():
        means = result.means(rows)
        out.append({"bandwidth_hz": bandwidth_hz, "method": method, **means,
                    "co2_kg": float(selection.co2_kg(means["energy_total_j"], carbon_kg_per_kwh))})
    return out
