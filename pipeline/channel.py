"""Wireless link: Shannon rate (eq. 3), upload time over block fading (eq. 4), upload energy (eq. 5).

Pure numpy. The channel is block fading: fading block k covers [k*block_s, (k+1)*block_s) and
the rate R(t) is constant inside a block.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np


class TraceTooShortError(ValueError):
    """The fading trace ends before an upload completes: generate more blocks and retry."""


def _check_positive(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0 (got {value})")
    return value


def validate_link(bandwidth_hz, power_w, noise_psd_w_per_hz) -> tuple[float, float, float]:
    """Check the link settings of eq. (3) and return them as floats: each must be finite and > 0."""
    return (
        _check_positive(bandwidth_hz, "channel.bandwidth_hz"),
        _check_positive(power_w, "channel.power_w"),
        _check_positive(noise_psd_w_per_hz, "channel.noise_psd_w_per_hz"),
    )


def rate_bps(gain, bandwidth_hz, power_w, noise_psd_w_per_hz) -> np.ndarray:
    """Eq. (3): R = W * log2(1 + P * |h|^2 / (N0 * W)) in bit/s; `gain` is |h|^2 (array ok)."""
    bandwidth_hz, power_w, noise_psd_w_per_hz = validate_link(bandwidth_hz, power_w, noise_psd_w_per_hz)
    gain = np.asarray(gain, dtype=float)
    if not np.all(np.isfinite(gain)) or np.any(gain < 0):
        raise ValueError("channel gain |h|^2 must be finite and >= 0")
    snr = power_w * gain / (noise_psd_w_per_hz * bandwidth_hz)
    # log1p keeps precision at the low SNRs of wide bandwidths
    return bandwidth_hz * np.log1p(snr) / np.log(2.0)


def _check_rates(rate, block_s) -> tuple[np.ndarray, float]:
    block_s = _check_positive(block_s, "channel.block_s")
    rate = np.asarray(rate, dtype=float)
    if rate.ndim != 1 or rate.size == 0:
        raise ValueError(f"rate_bps must be a non-empty 1-D array of per-block rates (got shape {rate.shape})")
    if not np.all(np.isfinite(rate)) or np.any(rate < 0):
        raise ValueError("rate_bps must be finite and >= 0 in every block")
    return rate, block_s


def cumulative_bits(rate_bps, block_s) -> np.ndarray:
    """Bits deliverable from t=0 to each block boundary: (K,) block rates -> (K+1,), starting at 0.

    The left-hand side of eq. (4) evaluated at t = k * block_s for a piecewise-constant R(t).
    """
    rate, block_s = _check_rates(rate_bps, block_s)
    return np.concatenate(([0.0], np.cumsum(rate * block_s)))


# Relative tolerance of block_index: a time within this fraction of a block of a block edge is on it.
BLOCK_EDGE_TOL = 1e-9


def block_index(times_s, block_s) -> np.ndarray:
    """Index k of the fading block [k*block_s, (k+1)*block_s) holding each time, as int64.

    Times on a block edge belong to the block that starts there, also when float rounding puts
    them a hair below it: 0.7 / 0.035 = 19.999999999999996, so 0.7 // 0.035 = 19 (the previous
    block), here 20. One function for the causal rate and for eq. (4), so both see the same block.
    """
    block_s = _check_positive(block_s, "channel.block_s")
    return np.floor(np.asarray(times_s, dtype=float) / block_s + BLOCK_EDGE_TOL).astype(np.int64)


def transmission_time_s(cum_bits, rate_bps, block_s, start_s, bits) -> np.ndarray:
    """Eq. (4): the smallest tau with  integral_{start}^{start+tau} R(t) dt >= bits.

    R(t) is rate_bps[k] on block [k*block_s, (k+1)*block_s); `cum_bits` is cumulative_bits(rate_bps,
    block_s). bits has shape (C,) or (N, C) (a payload that depends on the inference's input); start_s
    shape (N,) (every cut starts at once) or (N, C) (each cut starts when the client has computed
    it); returns tau of shape (N, C). bits == 0 gives 0.

    Vectorised: an upload that fits in the rest of its start block takes bits / R there; otherwise
    np.searchsorted on cum_bits finds the block where it completes and the time inside that block
    is interpolated linearly. Bits are counted from the start block's end rather than from t=0 so
    that uploads finishing in the next block do not lose precision to the large global sums.

    Raises ValueError if the trace ends before some upload completes; the caller should generate
    more fading blocks (block_gains draws them in order, so the existing blocks do not change).
    """
    rate, block_s = _check_rates(rate_bps, block_s)
    cum = np.asarray(cum_bits, dtype=float)
    if cum.shape != (rate.size + 1,):
        raise ValueError(f"cum_bits must have shape ({rate.size + 1},) to match rate_bps (got {cum.shape})")
    start = np.asarray(start_s, dtype=float)
    bits = np.asarray(bits, dtype=float)
    if (bits.ndim not in (1, 2) or start.ndim not in (1, 2) or (start.ndim == 2 and start.shape[1] != bits.shape[-1])
            or (bits.ndim == 2 and bits.shape[0] != start.shape[0])):
        raise ValueError(f"need bits (C,) or (N, C) and start_s (N,) or (N, C) (got shapes {bits.shape}, {start.shape})")
    if not np.all(np.isfinite(start)) or np.any(start < 0):
        raise ValueError("start_s must be finite and >= 0")
    if not np.all(np.isfinite(bits)) or np.any(bits < 0):
        raise ValueError("bits must be finite and >= 0")
    start = np.broadcast_to(start[:, None] if start.ndim == 1 else start, (start.shape[0], bits.shape[-1]))
    bits = np.broadcast_to(bits, start.shape)

    n_blocks = rate.size
    k0 = np.clip(block_index(start, block_s), 0, n_blocks - 1)  # starts past the trace: shortfall check
    left_s = np.clip((k0 + 1) * block_s - start, 0.0, None)  # time left in the start block
    first_rate = rate[k0]
    first_bits = first_rate * left_s

    # (a) completes inside the start block
    fits = bits <= first_bits
    tau_first = np.divide(bits, first_rate, out=np.zeros(start.shape), where=first_rate > 0)

    # (b) spills over: bits still needed once the start block ends, located on the cum_bits axis
    need = bits - first_bits
    edge_bits = cum[k0 + 1]
    target = edge_bits + need
    shortfall = np.where(fits, 0.0, target - cum[-1])
    if np.any(shortfall > 0):
        worst = np.unravel_index(np.argmax(shortfall), shortfall.shape)
        raise TraceTooShortError(
            f"channel trace too short: {shortfall[worst]:.6g} of {bits[worst]:.6g} bits still missing "
            f"at the trace end t={n_blocks * block_s:.6g} s for the upload starting at "
            f"t={start[worst]:.6g} s; extend the trace (more fading blocks)"
        )
    # first boundary with cum >= target, so the upload completes inside block j = i - 1 >= k0 + 1
    j = np.searchsorted(cum, target, side="left") - 1
    j = np.clip(j, k0 + 1, n_blocks - 1)
    rest_bits = np.clip(need - (cum[j] - edge_bits), 0.0, None)  # bits sent inside block j
    rate_j = rate[j]
    in_last_s = np.divide(rest_bits, rate_j, out=np.zeros_like(rest_bits), where=rate_j > 0)
    tau_spill = left_s + (j - k0 - 1) * block_s + in_last_s

    return np.where(fits, tau_first, tau_spill)


def transmission_energy_j(tau_s, power_w):
    """Eq. (5) made physical: E_tr = integral_0^tau P(t) dt = P * tau for a constant power P.

    Eq. (5) as printed, tau * integral_0^tau P dt, has units of J*s and is not an energy; we
    implement the integral. Arrays ok.
    """
    power_w = _check_positive(power_w, "channel.power_w")
    tau_s = np.asarray(tau_s, dtype=float)
    if np.any(np.isnan(tau_s)) or np.any(tau_s < 0):
        raise ValueError("tau_s must be >= 0")
    return power_w * tau_s


def cut_index_bits(n_cuts: int) -> int:
    """Bits to name one of n_cuts cut points: ceil(log2(n_cuts)); 0 when there is only one."""
    if isinstance(n_cuts, bool) or not isinstance(n_cuts, Integral) or n_cuts < 1:
        raise ValueError(f"n_cuts must be an integer >= 1 (got {n_cuts!r})")
    return int(n_cuts - 1).bit_length()  # == ceil(log2(n_cuts)) without float rounding


def payload_bits(out_elements, bits_per_element: int = 32, n_cuts: int = 1, input_bits_per_element: int | None = None):
    """Right-hand side of eq. (4) plus the cut index: w_c * d_c + ceil(log2(n_cuts)) for every cut c.

    The paper sends every element of the representation in 32 bits (Sec. II-C) and shares the
    layer index with it so the server knows where to resume (Sec. III-B). n_cuts is the number
    of cut points the client may choose from (1: a fixed cut, no index needed). `out_elements`
    is aligned with the cut names, index 0 being the raw input; `input_bits_per_element` (None:
    bits_per_element) is the width of the raw input's elements (8-bit pixels for MNIST).
    Returns int64 of the shape of `out_elements`.
    """
    def _width(value, name):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
        return int(value)

    width = _width(bits_per_element, "channel.bits_per_element")
    input_width = width if input_bits_per_element is None else _width(input_bits_per_element,
                                                                      "channel.input_bits_per_element")
    index_bits = cut_index_bits(n_cuts)
    d = np.asarray(out_elements)
    if not np.issubdtype(d.dtype, np.integer) or np.any(d < 0):
        raise ValueError(f"out_elements must be integers >= 0 (got {out_elements!r})")
    widths = np.full(d.shape, width, dtype=np.int64)
    if d.ndim == 1 and d.size:
        widths[0] = input_width
    return d.astype(np.int64) * widths + index_bits
