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


def transmission_time_s(cum_bits, rate_bps, block_s, start_s, bits) -> np.ndarray:
    """Eq. (4): the smallest tau with  integral_{start}^{start+tau} R(t) dt >= bits.

    R(t) is rate_bps[k] on block [k*block_s, (k+1)*block_s); `cum_bits` is cumulative_bits(rate_bps,
    block_s). start_s has shape (N,), bits shape (C,); returns tau of shape (N, C). bits == 0 gives 0.

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
    if start.ndim != 1 or bits.ndim != 1:
        raise ValueError(f"start_s and bits must be 1-D (got shapes {start.shape}, {bits.shape})")
    if not np.all(np.isfinite(start)) or np.any(start < 0):
        raise ValueError("start_s must be finite and >= 0")
    if not np.all(np.isfinite(bits)) or np.any(bits < 0):
        raise ValueError("bits must be finite and >= 0")

    n_blocks = rate.size
    k0 = np.floor(start / block_s).astype(np.int64)
    k0 = np.clip(k0, 0, n_blocks - 1)  # starts past the trace are caught by the shortfall check
    left_s = np.clip((k0 + 1) * block_s - start, 0.0, None)  # time left in the start block
    first_rate = rate[k0]
    first_bits = first_rate * left_s

    # (a) completes inside the start block
    fits = bits[None, :] <= first_bits[:, None]
    tau_first = np.divide(bits[None, :], first_rate[:, None], out=np.zeros((start.size, bits.size)),
                          where=first_rate[:, None] > 0)

    # (b) spills over: bits still needed once the start block ends, located on the cum_bits axis
    need = bits[None, :] - first_bits[:, None]
    edge_bits = cum[k0 + 1][:, None]
    target = edge_bits + need
    shortfall = np.where(fits, 0.0, target - cum[-1])
    if np.any(shortfall > 0):
        worst = np.unravel_index(np.argmax(shortfall), shortfall.shape)
        raise TraceTooShortError(
            f"channel trace too short: {shortfall[worst]:.6g} of {bits[worst[1]]:.6g} bits still missing "
            f"at the trace end t={n_blocks * block_s:.6g} s for the upload starting at "
            f"t={start[worst[0]]:.6g} s; extend the trace (more fading blocks)"
        )
    # first boundary with cum >= target, so the upload completes inside block j = i - 1 >= k0 + 1
    j = np.searchsorted(cum, target, side="left") - 1
    j = np.clip(j, (k0 + 1)[:, None], n_blocks - 1)
    rest_bits = np.clip(need - (cum[j] - edge_bits), 0.0, None)  # bits sent inside block j
    rate_j = rate[j]
    in_last_s = np.divide(rest_bits, rate_j, out=np.zeros_like(rest_bits), where=rate_j > 0)
    tau_spill = left_s[:, None] + (j - k0[:, None] - 1) * block_s + in_last_s

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


def payload_bits(out_elements, bits_per_element: int = 32, n_cuts: int = 1):
    """Right-hand side of eq. (4) plus the cut index: bits_per_element * d + ceil(log2(n_cuts)).

    The paper sends every element of the representation in 32 bits (Sec. II-C) and shares the
    layer index with it so the server knows where to resume (Sec. III-B). n_cuts is the number
    of cut points the client may choose from (default 1: a fixed cut, no index needed).
    `out_elements` may be an array; returns int64.
    """
    if isinstance(bits_per_element, bool) or not isinstance(bits_per_element, Integral) or bits_per_element < 1:
        raise ValueError(f"channel.bits_per_element must be an integer >= 1 (got {bits_per_element!r})")
    index_bits = cut_index_bits(n_cuts)
    d = np.asarray(out_elements)
    if not np.issubdtype(d.dtype, np.integer) or np.any(d < 0):
        raise ValueError(f"out_elements must be integers >= 0 (got {out_elements!r})")
    return d.astype(np.int64) * bits_per_element + index_bits
