"""Client processing energy: computation (eq. 1) and memory access (eq. 2), summed per cut (eq. 6).

Pure numpy. Energies are in joules; per-operation costs come from Table I (arithmetic) and
Table II (memory, quoted per 64-bit access).

Table I, 45 nm 0.9 V, 32-bit floating point: e_A = 0.9 pJ per add, e_M = 3.7 pJ per multiply.

Two layers of API: ``LayerShape`` / ``op_counts`` / ``processing_energy_per_cut_j`` (padded
counts, non-zero weights fetched at one per-element cost; used by benchmarks), and the configurable
one pipeline.layer_costs uses: counting rules (``conv_mac_count``, ``pool_counts``), weight
storage (``storage_bits``), ``LayerCounts`` and ``EnergyCosts`` with the per-MAC or weights-once
memory model, and ``cut_processing_j`` with the memory level chosen per cut.
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


# ------------------------------------------------------------------------------------------------
# Counting rules chosen by config (issue 9, items 3 and 5) and the two memory models of eq. (2).
# Everything below is pure numpy; pipeline/layer_costs.py reads a torch model into LayerCounts.

MEMORY_MODELS = ("per_mac", "weights")
CONV_MAC_RULES = ("padded", "exact")
POOL_WINDOW_RULES = ("padded", "exact")
WEIGHT_STORAGES = ("nonzero", "dense", "auto")
STORAGE_FORMATS = ("nonzero", "dense", "bitmask", "csr", "none")  # none: a layer without parameters


def _axis_taps(size: int, kernel: int, padding: int) -> np.ndarray:
    """For each kernel offset d along one axis of a stride-1 conv: the number of output positions
    whose input tap (o + d - padding) lies inside [0, size)."""
    out = size + 2 * padding - kernel + 1
    d = np.arange(kernel)
    return np.clip(np.minimum(out, size + padding - d) - np.maximum(0, padding - d), 0, None)


def conv_mac_count(nonzeros_per_offset, height: int, width: int, padding: int, exact: bool) -> int:
    """Multiply-accumulates of a stride-1 conv layer, the M of eq. (1) (each MAC is also one add).

    ``nonzeros_per_offset[dy, dx]`` counts the non-zero weights (over all input and output
    channels) at kernel offset (dy, dx); the input is ``height`` x ``width`` zero-padded by
    ``padding`` on every side.

    - padded: every non-zero weight runs at every output position, padding included:
      MACs = nnz * H_out * W_out.
    - exact: only where the tap reads a real pixel: MACs = sum over (dy, dx) of
      nonzeros_per_offset[dy, dx] * rows(dy) * cols(dx), rows(dy) = #{y : 0 <= y + dy - p < H}.
    """
    nz = np.asarray(nonzeros_per_offset, dtype=np.int64)
    if nz.ndim != 2 or np.any(nz < 0):
        raise ValueError(f"nonzeros_per_offset must be a 2-D array of counts >= 0 (got shape {nz.shape})")
    kh, kw = nz.shape
    rows, cols = _axis_taps(height, kh, padding), _axis_taps(width, kw, padding)
    if not exact:
        return int(nz.sum() * (height + 2 * padding - kh + 1) * (width + 2 * padding - kw + 1))
    return int(rows @ nz @ cols)


def _window_sizes(size: int, window: int, stride: int) -> np.ndarray:
    """Real sizes of ceil-mode pooling windows along one axis (no padding): the last window may
    hang over the edge and holds only the elements that exist."""
    n_out = -(-(size - window) // stride) + 1 if size > window else 1
    starts = np.arange(n_out) * stride
    return np.minimum(starts + window, size) - starts


def pool_counts(height: int, width: int, window: int, stride: int, exact: bool) -> tuple[int, int]:
    """(element reads, comparisons) of one channel of a ceil-mode max-pool; comparisons are the
    adds of eq. (1), reads the operands of the per-MAC memory model.

    - padded: every window counts window^2 elements, window^2 - 1 comparisons.
    - exact: an edge window holds only its real elements n and takes n - 1 comparisons
      (7x7 -> 4x4 with 2x2/2: nine 2x2, three 2x1, three 1x2 and one 1x1 window).
    """
    rows, cols = _window_sizes(height, window, stride), _window_sizes(width, window, stride)
    if exact:
        sizes = np.outer(rows, cols)
    else:
        sizes = np.full((len(rows), len(cols)), window * window)
    return int(sizes.sum()), int((sizes - 1).sum())


# -- weight storage (what the client keeps in memory and fetches under memory_model=weights) ----
def _check_mask(mask) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (rows = output units, columns = their inputs) (got shape {mask.shape})")
    return mask


def csr_entries(mask, index_bits: int) -> int:
    """Stored entries of CSR with relative indices (Han et al., Deep Compression, ICLR 2016, Sec. 3).

    Each non-zero stores the number of zeros skipped since the previous entry of its row (or since
    the row's start) in ``index_bits`` bits. A gap g > 2^b - 1 is bridged by filler zeros, each an
    entry that skips 2^b - 1 zeros and is itself a zero: floor(g / 2^b) fillers.
    """
    mask = _check_mask(mask)
    rows, cols = np.nonzero(mask)  # row-major order
    prev = np.concatenate(([-1], cols[:-1]))
    first_in_row = np.concatenate(([True], rows[1:] != rows[:-1]))
    gaps = np.where(first_in_row, cols, cols - prev - 1)
    return int(len(cols) + (gaps // 2**index_bits).sum())


def storage_bits(mask, value_bits: int, index_bits: int) -> dict[str, int]:
    """Bits to store one layer (weights and, as an extra column, biases) in each format.

    ``mask`` (rows = output units, columns = inputs + bias) marks non-zero parameters.

    - nonzero: nnz * value_bits. Eq. (2) as written (Gamma = non-zero elements): indices are free.
    - dense: every parameter, zeros included: rows * cols * value_bits.
    - bitmask: one presence bit per parameter plus the non-zero values: rows * cols + nnz * value_bits.
    - csr: entries * (value_bits + index_bits) (csr_entries: non-zeros + filler zeros) plus rows + 1
      row pointers, each ceil(log2(entries + 1)) bits wide (just wide enough to address any entry).
    """
    mask = _check_mask(mask)
    n_rows, n_cols = mask.shape
    nnz = int(mask.sum())
    entries = csr_entries(mask, index_bits)
    pointer_bits = max(1, math.ceil(math.log2(entries + 1)))
    return {
        "nonzero": nnz * value_bits,
        "dense": n_rows * n_cols * value_bits,
        "bitmask": n_rows * n_cols + nnz * value_bits,
        "csr": entries * (value_bits + index_bits) + (n_rows + 1) * pointer_bits,
    }


def choose_storage(bits: dict[str, int], storage: str) -> tuple[str, int]:
    """(format, bits) for ``energy.weight_storage``: ``nonzero`` or ``dense`` as named; ``auto`` the
    cheapest of dense, bitmask and csr (ties to the simpler one, in that order)."""
    if storage not in WEIGHT_STORAGES:
        raise ValueError(f"energy.weight_storage must be one of {', '.join(WEIGHT_STORAGES)} (got {storage!r})")
    if storage != "auto":
        return storage, bits[storage]
    fmt = min(("dense", "bitmask", "csr"), key=lambda f: bits[f])
    return fmt, bits[fmt]


def smallest_level(required_bytes: float, capacity_bytes: dict[str, float | None]) -> str:
    """The smallest memory level (Table II) whose capacity holds ``required_bytes``; None = unbounded."""
    fits = [(math.inf if cap is None else cap, name) for name, cap in capacity_bytes.items()
            if cap is None or cap >= required_bytes]
    if not fits:
        raise ValueError(f"no memory level holds {required_bytes:.0f} bytes (capacities: {capacity_bytes})")
    return min(fits)[1]


# -- per-layer counts and the two memory models -------------------------------------------------
@dataclass(frozen=True)
class LayerCounts:
    """Operation, operand and storage counts of one (possibly pruned) layer, under the configured
    counting rules (conv_macs, pool_windows, weight_storage). ``name`` is its cut-point name."""

    name: str
    kind: str  # "conv" | "pool" | "fc"
    in_elements: int
    out_elements: int
    macs: int  # multiply-accumulates: conv_mac_count (conv), non-zero weights (fc), 0 (pool)
    bias_adds: int  # non-zero biases x output positions
    relu_ops: int  # one comparison per output element when followed by ReLU
    pool_reads: int  # max-pool window elements read (pool_counts)
    pool_comparisons: int
    params: int  # weights + biases, zeros included
    nnz_params: int
    stored_bits: int  # weights + biases in storage_format (storage_bits)
    storage_format: str

    def __post_init__(self):
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"layer {self.name!r}: kind must be one of {LAYER_KINDS} (got {self.kind!r})")
        for field in ("in_elements", "out_elements", "macs", "bias_adds", "relu_ops", "pool_reads",
                      "pool_comparisons", "params", "nnz_params", "stored_bits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ValueError(f"layer {self.name!r}: {field} must be an integer >= 0 (got {value!r})")
        if self.storage_format not in STORAGE_FORMATS:
            raise ValueError(f"layer {self.name!r}: storage_format must be one of {STORAGE_FORMATS} "
                             f"(got {self.storage_format!r})")

    @property
    def mults(self) -> int:
        """M of eq. (1): one multiply per MAC."""
        return self.macs

    @property
    def adds(self) -> int:
        """A of eq. (1): one add per MAC, bias adds, ReLU and max-pool comparisons (charged as adds)."""
        return self.macs + self.bias_adds + self.relu_ops + self.pool_comparisons


@dataclass(frozen=True)
class EnergyCosts:
    """Per-operation and per-access costs (Tables I, II) and the memory model of eq. (2).

    - memory_model "per_mac" (what the paper's Table III implies): every MAC fetches
      ``operand_fetches`` operands and every max-pool window element is read once, each a full
      Table II access at ``operand_level`` (not scaled by width); bias adds and ReLU work on the
      accumulator and fetch nothing.
    - memory_model "weights" (eq. 2 as written): the layer's stored weights and biases
      (``LayerCounts.stored_bits``) are fetched once per inference from ``weight_memory`` at
      Table II's 64-bit access cost per 64 bits; ``auto`` = the smallest level whose
      ``capacity_bytes`` holds the client's stored weights.
    Either way, ``activation_element_j`` > 0 also charges each layer's input read and output write.

    Precision (issue 11): a per_mac operand fetch moves one ``operand_bits``-wide value, charged
    operand_bits / 32 of a Table II access (the paper's calibration is one access per fp32
    operand; four int8 operands share a 32-bit word). ``e_acc_add_j`` is the add of a MAC and of a
    bias, done in the accumulator (int8 products are summed in 32-bit integers); None: ``e_add_j``.
    ReLU and max-pool comparisons stay at ``e_add_j``, on the operands' width.
    """

    e_mul_j: float
    e_add_j: float
    access_64bit_j: dict[str, float]  # Table II, per memory level
    memory_model: str = "weights"
    operand_fetches: float = 2.0
    operand_level: str = "1MB"
    weight_memory: str = "DRAM"  # a level of access_64bit_j or "auto"
    capacity_bytes: dict[str, float | None] | None = None  # needed by weight_memory="auto"
    activation_element_j: float = 0.0
    e_acc_add_j: float | None = None
    operand_bits: int = 32

    def __post_init__(self):
        for name, key in (("e_mul_j", "energy.e_mul_j"), ("e_add_j", "energy.e_add_j"),
                          ("activation_element_j", "energy.e_activation_j"),
                          ("operand_fetches", "energy.per_mac.operand_fetches")):
            _check_energy_per_unit(getattr(self, name), key)
        if self.e_acc_add_j is not None:
            _check_energy_per_unit(self.e_acc_add_j, "energy.accumulate")
        if isinstance(self.operand_bits, bool) or not isinstance(self.operand_bits, Integral) or self.operand_bits < 1:
            raise ValueError(f"energy.bits_per_element must be an integer >= 1 (got {self.operand_bits!r})")
        for level, value in self.access_64bit_j.items():
            _check_energy_per_unit(value, f"energy.memory_pj_per_64bit.{level}")
        if self.memory_model not in MEMORY_MODELS:
            raise ValueError(f"energy.memory_model must be one of {', '.join(MEMORY_MODELS)} (got {self.memory_model!r})")
        if self.operand_level not in self.access_64bit_j:
            raise ValueError(f"energy.per_mac.level must be one of {', '.join(self.access_64bit_j)} "
                             f"(got {self.operand_level!r})")
        levels = [*self.access_64bit_j, "auto"]
        if self.weight_memory not in levels:
            raise ValueError(f"energy.weight_memory must be one of {', '.join(levels)} (got {self.weight_memory!r})")
        if self.weight_memory == "auto" and set(self.capacity_bytes or {}) != set(self.access_64bit_j):
            raise ValueError(f"energy.memory_capacity_bytes needs one entry per level {list(self.access_64bit_j)} "
                             f"when energy.weight_memory=auto (got {self.capacity_bytes})")

    def weight_level(self, stored_bits: float) -> str:
        """Where the weights live: ``weight_memory`` (per_mac: the operand level), or under ``auto``
        the smallest level holding ``stored_bits``."""
        if self.memory_model == "per_mac":
            return self.operand_level
        if self.weight_memory == "auto":
            return smallest_level(stored_bits / 8, self.capacity_bytes)
        return self.weight_memory


def layer_energies(layers: Sequence[LayerCounts], costs: EnergyCosts, level: str) -> dict[str, np.ndarray]:
    """Per-layer E_c (eq. 1), E_m (eq. 2) and E_p = E_c + E_m (eq. 6), weights held at ``level``.

    per_mac:  E_m = (operand_fetches * MACs + pool_reads) * e_access(operand_level) * operand_bits / 32
    weights:  E_m = stored_bits / 64 * e_access(level)   (Table II quotes a 64-bit access)
    plus, for both, (in_elements + out_elements) * activation_element_j.
    E_c = e_M * MACs + e_acc * (MACs + bias adds) + e_A * (ReLU + pool comparisons) (eq. 1).
    """
    if len(layers) == 0:
        raise ValueError("layers must contain at least one LayerCounts (got 0)")
    col = lambda field: np.array([getattr(layer, field) for layer in layers], dtype=np.int64)  # noqa: E731
    mults, adds = col("mults"), col("adds")
    if costs.memory_model == "per_mac":
        fetches = costs.operand_fetches * col("macs") + col("pool_reads")
        weights_j = fetches * costs.access_64bit_j[costs.operand_level] * (costs.operand_bits / 32)
    else:
        weights_j = col("stored_bits") / 64 * costs.access_64bit_j[level]
    activations_j = (col("in_elements") + col("out_elements")) * costs.activation_element_j
    computation = computation_energy_j(mults, adds, costs.e_mul_j, costs.e_add_j)
    if costs.e_acc_add_j is not None and costs.e_acc_add_j != costs.e_add_j:  # else as above, bit for bit
        accumulated = col("macs") + col("bias_adds")
        computation = computation_energy_j(mults, adds - accumulated, costs.e_mul_j, costs.e_add_j) + \
            computation_energy_j(0, accumulated, 0.0, costs.e_acc_add_j)
    memory = weights_j + activations_j
    return {"mults": mults, "adds": adds, "computation_j": computation, "memory_j": memory,
            "processing_j": computation + memory}


def cut_processing_j(layers: Sequence[LayerCounts], costs: EnergyCosts) -> tuple[np.ndarray, list[str]]:
    """E_p of eq. (6) at every cut (index 0 = input: nothing runs, E_p = 0) and the weight memory
    level each cut's client part uses. Under weight_memory=auto a cut's level depends on the weights
    up to that cut, so E_p(cut) is the sum over its layers at that level, not a running sum."""
    stored = np.cumsum([layer.stored_bits for layer in layers])
    levels = [costs.weight_level(bits) for bits in stored]
    cumulative = {level: np.cumsum(layer_energies(layers, costs, level)["processing_j"]) for level in set(levels)}
    processing = [cumulative[level][i] for i, level in enumerate(levels)]
    return np.concatenate(([0.0], processing)), ["", *levels]
