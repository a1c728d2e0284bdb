"""What a cut sends and how the client computes: uniform quantisation, payload sizes, run-length.

Pure torch/numpy, no I/O. The paper sends every element of the representation in 32 bits
(Sec. II-C) and computes in fp32; this module makes the two widths settings (issue 11):

- ``channel.activation_bits`` (32 | 16 | 8 | 4): the tensor sent at a cut is quantised to b-bit
  codes with a uniform affine quantiser (``AffineQuantiser``) whose range is calibrated on
  validation data (min/max, per tensor or per channel); the server runs on the dequantised tensor.
  32 sends the fp32 values as they are (the paper's).
- ``channel.activation_coding`` (dense | sparse): the payload of eq. (4) for one tensor of d
  elements, n of them non-zero, b bits each (``sparse_body_bits``).
- ``energy.precision`` (int8 | int32 | fp16 | fp32): the client's arithmetic; integer precisions
  quantise weights (``symmetric_per_row``) and activations (``AffineQuantiser``) post training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ACTIVATION_BITS = (32, 16, 8, 4)
ACTIVATION_CODINGS = ("dense", "sparse")
GRANULARITIES = ("per_tensor", "per_channel")
FLOAT_WIDTH = 32  # activation_bits=32: the fp32 values themselves, no quantiser

# -- uniform affine quantisation ------------------------------------------------------------
@dataclass(frozen=True)
class AffineQuantiser:
    """b-bit uniform quantiser of a range [lo, hi] that holds 0 (so ReLU zeros stay exact zeros).

    scale = (hi - lo) / (2^b - 1),  zero_point = round(-lo / scale),
    q = clip(round(x / scale) + zero_point, 0, 2^b - 1),  x_hat = (q - zero_point) * scale.

    ``lo``/``hi`` are tensors of shape (1,) (per tensor) or (channels,) (per channel: axis 1 of the
    tensor, the channel of a conv map or the unit of an fc vector). A range of width 0 (a channel
    that was 0 on every calibration sample) gets scale 1: everything it sees maps to 0.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    bits: int

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    @property
    def scale(self) -> torch.Tensor:
        width = (self.hi - self.lo).double()
        return torch.where(width > 0, width / self.levels, torch.ones_like(width))

    @property
    def zero_point(self) -> torch.Tensor:
        return torch.round(-self.lo.double() / self.scale)

    def _broadcast(self, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if value.numel() == 1:
            return value.reshape(())
        return value.reshape(1, -1, *([1] * (x.dim() - 2)))

    @property
    def _dtype(self) -> torch.dtype:
        return torch.float32 if self.bits <= 16 else torch.float64  # codes exact in the mantissa

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in [0, 2^b - 1], as floats (exact: fp32 up to 16 bits, else fp64)."""
        scale = self._broadcast(self.scale, x).to(self._dtype)
        zero = self._broadcast(self.zero_point, x).to(self._dtype)
        return torch.clamp(torch.round(x.to(self._dtype) / scale) + zero, 0, self.levels)

    def dequantise(self, codes: torch.Tensor) -> torch.Tensor:
        scale = self._broadcast(self.scale, codes).to(codes.dtype)
        zero = self._broadcast(self.zero_point, codes).to(codes.dtype)
        return ((codes - zero) * scale).float()

    def zero_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Bool mask of the codes that dequantise to exactly 0 (what sparse coding leaves out)."""
        return codes == self._broadcast(self.zero_point, codes).to(codes.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Quantise-dequantise (what the receiver of the codes computes with)."""
        return self.dequantise(self.quantise(x))


def channel_range(x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of a batch (N, C, ...) over everything (per_tensor, shape (1,)) or over all
    but axis 1 (per_channel, shape (C,)), widened to hold 0."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"channel.activation_granularity must be one of {', '.join(GRANULARITIES)} "
                         f"(got {granularity!r})")
    if granularity == "per_tensor":
        flat = x.reshape(1, -1)
    else:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return torch.clamp(flat.amin(dim=1), max=0.0), torch.clamp(flat.amax(dim=1), min=0.0)


def merge_range(old, new):
    """Running min/max over calibration batches (old may be None)."""
    if old is None:
        return new
    return torch.minimum(old[0], new[0]), torch.maximum(old[1], new[1])


def symmetric_per_row(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-training weight quantisation: per output unit (row of a linear, filter of a conv),
    symmetric, scale = max|w| / (2^(b-1) - 1). Returns the dequantised weights (zeros stay zero,
    small weights may round to zero) and the (rows,) scales. Computed in float64 so that int32
    keeps its resolution; a row of zeros gets scale 1."""
    w = weight.detach().double()
    peak = w.reshape(len(w), -1).abs().amax(dim=1)
    scale = torch.where(peak > 0, peak / (2 ** (bits - 1) - 1), torch.ones_like(peak))
    shaped = scale.reshape(-1, *([1] * (w.dim() - 1)))
    return (torch.round(w / shaped) * shaped).to(weight.dtype), scale


def round_to_fp16(x: torch.Tensor) -> torch.Tensor:
    """The nearest fp16 value (IEEE half, round to nearest even), kept as fp32 for the arithmetic."""
    return x.half().float()


# -- payload of one tensor (eq. 4's right-hand side, without the cut index) -------------------
CODING_FORMATS = ("dense", "bitmask", "run_length")
FORMAT_HEADER_BITS = 2  # which of the three formats follows: ceil(log2 3)
RUN_WIDTH_HEADER_BITS = 4  # r - 1 for run widths r = 1 .. 16
MAX_RUN_WIDTH = 2**RUN_WIDTH_HEADER_BITS


def count_bits(d: int) -> int:
    """Bits of a count 0..d: ceil(log2(d + 1))."""
    return int(d).bit_length()


def run_length_position_bits(gaps, d: int, run_width: int) -> int:
    """Position bits of the run-length format for one tensor of d elements with run width r.

    Format (row-major order of the tensor, (C, H, W) for a conv map):
      header: n, the number of non-zero elements, in ceil(log2(d + 1)) bits, then r - 1 in 4 bits;
      per non-zero: its zero run g (zeros since the previous non-zero, or since the start) as
      floor(g / (2^r - 1)) escape words 2^r - 1 (each "2^r - 1 zeros, no value"), then the rest
      g mod (2^r - 1) in r bits, then the value's b bits (counted by the caller);
      zeros after the last non-zero are not coded: the decoder knows d from the cut index.
    ``gaps`` are the n zero runs.
    """
    gaps = np.asarray(gaps, dtype=np.int64)
    return int(_run_length_positions(np.zeros(gaps.size, np.int64), gaps, 1, d, run_width)[0])


def _run_length_positions(rows, gaps, n_tensors: int, d: int, run_width: int) -> np.ndarray:
    """run_length_position_bits of n_tensors tensors at once (``rows``: the tensor of each gap)."""
    if not 1 <= run_width <= MAX_RUN_WIDTH:
        raise ValueError(f"run width must be in [1, {MAX_RUN_WIDTH}] (got {run_width})")
    long_run = 2**run_width - 1
    escaped = gaps >= long_run  # only these need escape words: filter before summing (most runs are short)
    escapes = np.bincount(rows[escaped], weights=gaps[escaped] // long_run, minlength=n_tensors)
    words = np.bincount(rows, minlength=n_tensors) + escapes.astype(np.int64)
    return count_bits(d) + RUN_WIDTH_HEADER_BITS + run_width * words


def zero_runs(nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a (B, d) bool mask of non-zeros: (row of each non-zero, its preceding zero run)."""
    d = nonzero.shape[1]
    flat = np.flatnonzero(nonzero)  # row-major: each row's non-zeros in order
    rows = flat // d
    gaps = np.diff(flat, prepend=-1) - 1
    first_in_row = np.diff(rows, prepend=-1) != 0
    gaps[first_in_row] = flat[first_in_row] - rows[first_in_row] * d  # zeros from the row's start
    return rows, gaps


def sparse_body_bits(nonzero, value_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse coding of B tensors of d elements (``nonzero``: (B, d) bool), each in the smallest of

    - dense: d * b (every value, no positions),
    - bitmask: d + n * b (one presence bit per element, then the n non-zero values),
    - run_length: run_length_position_bits(best r in 1..16) + n * b,

    plus a 2-bit header naming the format. Returns (bits (B,) int64, format index (B,) into
    CODING_FORMATS); ties go to the earlier format.
    """
    nonzero = np.asarray(nonzero, dtype=bool)
    if nonzero.ndim != 2:
        raise ValueError(f"nonzero must be (B, d) (got shape {nonzero.shape})")
    b, d = nonzero.shape
    n = nonzero.sum(axis=1).astype(np.int64)
    rows, gaps = zero_runs(nonzero)
    run_positions = np.full(b, np.iinfo(np.int64).max)
    for r in range(1, min(MAX_RUN_WIDTH, max(1, count_bits(d))) + 1):
        run_positions = np.minimum(run_positions, _run_length_positions(rows, gaps, b, d, r))
    options = np.stack([np.full(b, d * value_bits), d + n * value_bits, run_positions + n * value_bits], axis=1)
    fmt = np.argmin(options, axis=1)
    return FORMAT_HEADER_BITS + options[np.arange(b), fmt], fmt


def dense_body_bits(d: int, value_bits: int) -> int:
    """Dense coding: d * b bits (the paper's d * 32 at b = 32)."""
    return int(d) * int(value_bits)


def check_activation_bits(bits) -> int:
    if isinstance(bits, bool) or bits not in ACTIVATION_BITS:
        raise ValueError(f"channel.activation_bits must be one of {', '.join(map(str, ACTIVATION_BITS))} "
                         f"(got {bits!r})")
    return int(bits)
