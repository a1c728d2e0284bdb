"""Client processing energy: computation (eq. 1) and memory access (eq. 2), summed per cut (eq. 6).

Pure numpy. Energies are in joules; per-operation costs come from Table I (arithmetic) and
Table II (memory, quoted per 64-bit access).

Table I, 45 nm 0.9 V, 32-bit floating point: e_A = 0.9 pJ per add, e_M = 3.7 pJ per multiply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import numpy as np

LAYER_KINDS = ("conv", "pool", "fc")

# Table I, 32-bit floating point row (joules per operation).
FP32_ADD_J = 0.9e-12
FP32_MUL_J = 3.7e-12


def _check_energy_per_unit(value, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0 (got {value})")
    return value


def _check_counts(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0 (got {values})")
    return arr


@dataclass(frozen=True)
class LayerShape:
    """What one layer costs the client and what it would send if the cut is after it.

    `name` is the cut-point name of this layer's output ("conv1", "pool1", ..., "fc5").
    Counts are of the (possibly pruned) layer: pruning lowers nnz_* and, when whole neurons or
    channels go, out_elements too.
    """

    name: str
    kind: str  # "conv" | "pool" | "fc"
    in_elements: int
    out_elements: int
    out_positions: int  # spatial output positions H*W for conv/pool, 1 for fc
    nnz_weights: int
    nnz_biases: int
    relu: bool
    pool_window: int = 1  # k*k of a max-pool (4 for 2x2)

    def __post_init__(self):
        where = f"layer {self.name!r}"
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"{where}: kind must be one of {LAYER_KINDS} (got {self.kind!r})")
        for field, low in (
            ("in_elements", 0),
            ("out_elements", 0),
            ("out_positions", 1),
            ("nnz_weights", 0),
            ("nnz_biases", 0),
            ("pool_window", 1),
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"{where}: {field} must be an integer >= {low} (got {value!r})")
        if self.kind == "pool" and (self.nnz_weights or self.nnz_biases):
            raise ValueError(
                f"{where}: a pool layer has no parameters, nnz_weights and nnz_biases must be 0 "
                f"(got {self.nnz_weights}, {self.nnz_biases})"
            )
        if self.kind == "fc" and self.out_positions != 1:
            raise ValueError(f"{where}: out_positions must be 1 for an fc layer (got {self.out_positions})")


def op_counts(layer: LayerShape) -> tuple[int, int]:
    """(multiplications M, additions A) the client performs for one layer, inputs to eq. (1).

    Counting rules (only non-zero parameters cost anything; pruned weights are skipped):

    - conv: each non-zero weight does one multiply and one add at every output position,
      and each non-zero bias is added at every output position:
      M = nnz_weights * out_positions,  A = nnz_weights * out_positions + nnz_biases * out_positions.
    - fc: M = nnz_weights,  A = nnz_weights + nnz_biases.
    - ReLU (if `relu`): one comparison per output element, counted as an add.
    - max-pool: (pool_window - 1) comparisons per output element, counted as adds.
    """
    mults = adds = 0
    if layer.kind == "conv":
        mults = layer.nnz_weights * layer.out_positions
        adds = (layer.nnz_weights + layer.nnz_biases) * layer.out_positions
    elif layer.kind == "fc":
        mults = layer.nnz_weights
        adds = layer.nnz_weights + layer.nnz_biases
    else:  # pool: picking the max of k*k values takes k*k - 1 comparisons
        adds = (layer.pool_window - 1) * layer.out_elements
    if layer.relu:
        adds += layer.out_elements
    return int(mults), int(adds)


def computation_energy_j(mults, adds, e_mul_j: float, e_add_j: float):
    """Eq. (1): E_c = e_M * M + e_A * A. `mults`, `adds` may be arrays (broadcast)."""
    e_mul_j = _check_energy_per_unit(e_mul_j, "energy.e_mul_j")
    e_add_j = _check_energy_per_unit(e_add_j, "energy.e_add_j")
    mults = _check_counts(mults, "mults")
    adds = _check_counts(adds, "adds")
    return e_mul_j * mults + e_add_j * adds


def memory_energy_j(n_elements, e_mem_j_per_element: float):
    """Eq. (2): E_m = Gamma * e_m, Gamma = number of elements fetched. Arrays ok."""
    e_mem_j_per_element = _check_energy_per_unit(e_mem_j_per_element, "energy.e_mem_j_per_element")
    return _check_counts(n_elements, "n_elements") * e_mem_j_per_element


def element_access_energy_j(access_64bit_j: float, bits_per_element: int = 32) -> float:
    """e_m of eq. (2) from a Table II figure, which is quoted per 64-bit access.

    e_m = access_64bit_j * bits_per_element / 64, e.g. DRAM 2.6 nJ -> 1.3 nJ per fp32 element.
    """
    access_64bit_j = _check_energy_per_unit(access_64bit_j, "energy.access_64bit_j")
    if isinstance(bits_per_element, bool) or not isinstance(bits_per_element, Integral) or bits_per_element < 1:
        raise ValueError(f"energy.bits_per_element must be an integer >= 1 (got {bits_per_element!r})")
    return access_64bit_j * bits_per_element / 64


def layer_energies_j(
    layers: Sequence[LayerShape],
    e_mul_j: float,
    e_add_j: float,
    e_weight_j: float,
    e_activation_j: float = 0.0,
) -> dict[str, np.ndarray]:
    """Per-layer processing energy, arrays of len(layers) in layer order.

    Keys: "mults", "adds" (op_counts), "computation_j" (eq. 1), "memory_j" (eq. 2),
    "processing_j" = computation_j + memory_j (E_p of eq. 6 for that layer alone).

    Memory follows eq. (2) as written: Gamma = nnz_weights + nnz_biases fetched at e_weight_j.
    The paper does not charge activations; pass e_activation_j > 0 to also charge reading the
    layer's input and writing its output, (in_elements + out_elements) * e_activation_j.
    """
    e_weight_j = _check_energy_per_unit(e_weight_j, "energy.e_weight_j")
    e_activation_j = _check_energy_per_unit(e_activation_j, "energy.e_activation_j")
    if len(layers) == 0:
        raise ValueError("layers must contain at least one LayerShape (got 0)")
    counts = np.array([op_counts(layer) for layer in layers], dtype=np.int64)
    mults, adds = counts[:, 0], counts[:, 1]
    params = np.array([layer.nnz_weights + layer.nnz_biases for layer in layers], dtype=float)
    activations = np.array([layer.in_elements + layer.out_elements for layer in layers], dtype=float)

    computation = computation_energy_j(mults, adds, e_mul_j, e_add_j)
    memory = memory_energy_j(params, e_weight_j) + memory_energy_j(activations, e_activation_j)
    return {
        "mults": mults,
        "adds": adds,
        "computation_j": computation,
        "memory_j": memory,
        "processing_j": computation + memory,
    }


def processing_energy_per_cut_j(
    layers: Sequence[LayerShape],
    e_mul_j: float,
    e_add_j: float,
    e_weight_j: float,
    e_activation_j: float = 0.0,
) -> np.ndarray:
    """E_p of eq. (6) for every cut point, shape (len(layers) + 1,).

    Index 0 is the cut "input" (raw data sent, the client runs nothing, E_p = 0); index l is the
    cut after layer l, so E_p is the sum of E_c + E_m over the first l layers.
    """
    per_layer = layer_energies_j(layers, e_mul_j, e_add_j, e_weight_j, e_activation_j)["processing_j"]
    return np.concatenate(([0.0], np.cumsum(per_layer)))


def cut_names(layers: Sequence[LayerShape]) -> list[str]:
    """Cut-point names aligned with processing_energy_per_cut_j: ["input", layer names...]."""
    return ["input"] + [layer.name for layer in layers]


def cut_out_elements(layers: Sequence[LayerShape]) -> np.ndarray:
    """Elements sent at every cut point (d of eq. 4), aligned with processing_energy_per_cut_j.

    The cut "input" sends the raw input, i.e. what the first layer reads.
    """
    if len(layers) == 0:
        raise ValueError("layers must contain at least one LayerShape (got 0)")
    return np.array([layers[0].in_elements] + [layer.out_elements for layer in layers], dtype=np.int64)
