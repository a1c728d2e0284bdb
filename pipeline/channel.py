"""Wireless link: Shannon rate (eq. 3), upload time over block fading (eq. 4), upload energy (eq. 5),
and the finite-blocklength rate that replaces eq. (3) under ``channel.rate_model=finite_blocklength``.

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


# -- finite blocklength (channel.rate_model=finite_blocklength) -------------------------------
RATE_MODELS = ("shannon", "finite_blocklength")
LOG2_E = 1.0 / math.log(2.0)


def check_block_error_rate(eps) -> float:
    """epsilon, the block error probability of a codeword: in (0, 0.5), where Q^-1(epsilon) > 0
    and the normal approximation is a back-off from capacity."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"channel.block_error_rate must be a number in (0, 0.5) (got {eps!r})") from None
    if not 0.0 < eps < 0.5:
        raise ValueError(f"channel.block_error_rate must be in (0, 0.5) (got {eps})")
    return eps


def q_inverse(eps) -> float:
    """Q^-1(epsilon), the inverse of the Gaussian tail Q(x) = P(N(0,1) > x): Q^-1(1e-3) = 3.0902."""
    from scipy.special import ndtri  # Phi^-1; -Phi^-1(eps) keeps precision at small eps
    return float(-ndtri(check_block_error_rate(eps)))


def dispersion_bits2(snr) -> np.ndarray:
    """Channel dispersion of a complex AWGN channel use, V = (1 - 1/(1 + SNR)^2) (log2 e)^2 in bits^2.

    Computed as SNR (2 + SNR) / (1 + SNR)^2 (log2 e)^2, the same value without the cancellation
    of 1 - 1/(1 + SNR)^2 at small SNR. Arrays ok.
    """
    snr = np.asarray(snr, dtype=float)
    return snr * (2.0 + snr) / (1.0 + snr) ** 2 * LOG2_E**2


def finite_blocklength_bits(n_uses, snr, eps) -> np.ndarray:
    """Information bits one codeword of n channel uses carries at block error probability eps:
    k = n C - sqrt(n V) Q^-1(eps), clipped at 0 (a codeword too short or too weak for eps carries none).

    The normal approximation of Polyanskiy, Poor and Verdu, "Channel coding rate in the finite
    blocklength regime", IEEE Trans. Inf. Theory 56(5):2307-2359, 2010: for the real AWGN channel
    log2 M*(n, eps) = n C - sqrt(n V) Q^-1(eps) + (1/2) log2 n + O(1), with C = (1/2) log2(1 + SNR)
    and V = SNR (SNR + 2) / (2 (SNR + 1)^2) (log2 e)^2. A complex channel use (h ~ CN(0, 1), W
    complex uses per second) is two real uses at the same SNR, so C and V double:
    C = log2(1 + SNR), as in eq. (3) per channel use, and V = dispersion_bits2(SNR).
    V is in bits^2 (it carries the (log2 e)^2), so there is no further 1/ln 2 on sqrt(V/n).

    The third-order term (1/2) log2 n is left out: it is known only up to O(1) (Tan and Tomamichel,
    2015, show the (1/2) log n is tight for the AWGN channel), leaving it out can only understate
    the rate (the conservative side), and without it k(n) inverts in closed form (time_for_bits_s).
    It is worth at most 9.5 bits per codeword here (a whole 35 ms fading block at 15 MHz,
    n = 525,000), against sqrt(n V) Q^-1(eps) ~ 3,000 bits of dispersion back-off there.
    """
    n = np.asarray(n_uses, dtype=float)
    snr = np.asarray(snr, dtype=float)
    if np.any(n < 0) or np.any(snr < 0):
        raise ValueError("n_uses and snr must be >= 0")
    # bits_in_s per channel use: rate C, penalty Q^-1(eps) sqrt(V), "time" n
    return bits_in_s(np.log1p(snr) * LOG2_E, q_inverse(eps) * np.sqrt(dispersion_bits2(snr)), n)


def finite_blocklength_rate(snr, n_uses, eps) -> np.ndarray:
    """The normal approximation as a rate: R = C - sqrt(V / n) Q^-1(eps) bits per channel use, clipped
    at 0 (see finite_blocklength_bits; n > 0)."""
    n = np.asarray(n_uses, dtype=float)
    if np.any(n <= 0):
        raise ValueError("n_uses must be > 0")
    return finite_blocklength_bits(n, snr, eps) / n


def dispersion_penalty(gain, bandwidth_hz, power_w, noise_psd_w_per_hz, eps) -> np.ndarray:
    """D = Q^-1(eps) sqrt(W V) in bit/s^0.5: a codeword that takes t seconds of a fading block of rate R
    (eq. 3) has n = W t channel uses and carries R t - D sqrt(t) bits (finite_blocklength_bits)."""
    bandwidth_hz, power_w, noise_psd_w_per_hz = validate_link(bandwidth_hz, power_w, noise_psd_w_per_hz)
    snr = power_w * np.asarray(gain, dtype=float) / (noise_psd_w_per_hz * bandwidth_hz)
    return q_inverse(eps) * np.sqrt(bandwidth_hz * dispersion_bits2(snr))


def expected_transmissions(eps) -> float:
    """1 / (1 - eps): the mean of the geometric number of times a codeword is sent until it is
    decoded, each attempt failing independently with probability eps (ARQ)."""
    return 1.0 / (1.0 - check_block_error_rate(eps))


def bits_in_s(rate_bps, penalty, time_s):
    """Bits one codeword carries in ``time_s`` of a fading block: R t (eq. 4 with Shannon's rate;
    penalty None) or max(0, R t - D sqrt(t)) (finite blocklength, D = dispersion_penalty)."""
    if penalty is None:
        return rate_bps * time_s
    return np.clip(rate_bps * time_s - penalty * np.sqrt(time_s), 0.0, None)


def time_for_bits_s(bits, rate_bps, penalty=None) -> np.ndarray:
    """The shortest t with bits_in_s(rate_bps, penalty, t) >= bits for one codeword in one block.

    Shannon: bits / R. Finite blocklength: R t - D sqrt(t) = bits is a quadratic in x = sqrt(t),
    x = (D + sqrt(D^2 + 4 R bits)) / (2 R), the root where the codeword's bits grow with t.
    0 where bits = 0 or R = 0 (a block that carries nothing is never asked for bits). Arrays ok.
    """
    bits = np.asarray(bits, dtype=float)
    rate = np.asarray(rate_bps, dtype=float)
    shape = np.broadcast_shapes(bits.shape, rate.shape)
    if penalty is None:
        return np.divide(bits, rate, out=np.zeros(shape), where=rate > 0)
    penalty = np.asarray(penalty, dtype=float)
    root = np.divide(penalty + np.sqrt(penalty**2 + 4.0 * rate * bits), 2.0 * rate, out=np.zeros(shape),
                     where=rate > 0)
    return np.where(bits > 0, root * root, 0.0)


def _check_rates(rate, block_s) -> tuple[np.ndarray, float]:
    block_s = _check_positive(block_s, "channel.block_s")
    rate = np.asarray(rate, dtype=float)
    if rate.ndim != 1 or rate.size == 0:
        raise ValueError(f"rate_bps must be a non-empty 1-D array of per-block rates (got shape {rate.shape})")
    if not np.all(np.isfinite(rate)) or np.any(rate < 0):
        raise ValueError("rate_bps must be finite and >= 0 in every block")
    return rate, block_s


def _check_penalty(penalty, rate: np.ndarray) -> np.ndarray | None:
    if penalty is None:
        return None
    penalty = np.asarray(penalty, dtype=float)
    if penalty.shape != rate.shape or not np.all(np.isfinite(penalty)) or np.any(penalty < 0):
        raise ValueError(f"penalty must be finite and >= 0, one per block (shape {rate.shape}; got {penalty.shape})")
    return penalty


def cumulative_bits(rate_bps, block_s, penalty=None) -> np.ndarray:
    """Bits deliverable from t=0 to each block boundary: (K,) block rates -> (K+1,), starting at 0.

    The left-hand side of eq. (4) evaluated at t = k * block_s for a piecewise-constant R(t).
    With ``penalty`` (finite blocklength, one codeword per block): bits_in_s over whole blocks.
    """
    rate, block_s = _check_rates(rate_bps, block_s)
    return np.concatenate(([0.0], np.cumsum(bits_in_s(rate, _check_penalty(penalty, rate), block_s))))


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


def transmission_time_s(cum_bits, rate_bps, block_s, start_s, bits, penalty=None) -> np.ndarray:
    """Eq. (4): the smallest tau with  integral_{start}^{start+tau} R(t) dt >= bits.

    R(t) is rate_bps[k] on block [k*block_s, (k+1)*block_s); `cum_bits` is cumulative_bits(rate_bps,
    block_s, penalty). bits has shape (C,) or (N, C) (a payload that depends on the inference's input);
    start_s shape (N,) (every cut starts at once) or (N, C) (each cut starts when the client has
    computed it); returns tau of shape (N, C). bits == 0 gives 0.

    ``penalty`` (K,) (finite blocklength, dispersion_penalty): the upload is one codeword per fading
    block it occupies, its blocklength the channel uses it spends there (W x the time in the
    block: the rest of the start block, whole blocks, then what the last one needs), each carrying
    bits_in_s. A block too short or too weak to carry a bit at epsilon carries none, and the upload
    waits through it. Retransmissions are not in tau (the caller scales it, expected_transmissions).

    Vectorised: an upload that fits in the rest of its start block takes bits / R there; otherwise
    np.searchsorted on cum_bits finds the block where it completes and the time inside that block
    is interpolated linearly. Bits are counted from the start block's end rather than from t=0 so
    that uploads finishing in the next block do not lose precision to the large global sums.

    Raises ValueError if the trace ends before some upload completes; the caller should generate
    more fading blocks (block_gains draws them in order, so the existing blocks do not change).
    """
    rate, block_s = _check_rates(rate_bps, block_s)
    penalty = _check_penalty(penalty, rate)
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
    first_penalty = None if penalty is None else penalty[k0]
    first_bits = bits_in_s(first_rate, first_penalty, left_s)

    # (a) completes inside the start block
    fits = bits <= first_bits
    tau_first = time_for_bits_s(bits, first_rate, first_penalty)

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
    in_last_s = time_for_bits_s(rest_bits, rate[j], None if penalty is None else penalty[j])
    tau_spill = left_s + (j - k0 - 1) * block_s + in_last_s

    return np.where(fits, tau_first, tau_spill)


def radio_power_w(power_w, pa_efficiency=1.0, circuit_power_w=0.0) -> float:
    """What the client's radio draws while it transmits: P / eta + P_c (eq. 5 generalised).

    P is the radiated power of eq. (3); the power amplifier turns supply power into it with drain
    efficiency eta in (0, 1], and the rest of the transmit chain (oscillator, mixers, DAC, filters)
    draws P_c >= 0 whenever the radio is on. The paper's eq. (5) is eta = 1, P_c = 0, which
    returns P itself (P / 1.0 + 0.0 == P exactly, so the paper's figures are unchanged).
    """
    power_w = _check_positive(power_w, "channel.power_w")
    try:
        eta, circuit = float(pa_efficiency), float(circuit_power_w)
    except (TypeError, ValueError):
        raise ValueError(f"channel.pa_efficiency and channel.circuit_power_w must be numbers "
                         f"(got {pa_efficiency!r}, {circuit_power_w!r})") from None
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"channel.pa_efficiency must be in (0, 1] (got {pa_efficiency})")
    if not (math.isfinite(circuit) and circuit >= 0.0):
        raise ValueError(f"channel.circuit_power_w must be in [0, inf) (got {circuit_power_w})")
    return power_w / eta + circuit


def transmission_energy_j(tau_s, power_w, pa_efficiency=1.0, circuit_power_w=0.0):
    """Eq. (5) made physical and generalised: E_tr = (P / eta + P_c) * tau (radio_power_w).

    Eq. (5) as printed, tau * integral_0^tau P dt, has units of J*s and is not an energy; we
    implement the integral of the constant draw over the radio's time, P * tau with the paper's
    eta = 1 and P_c = 0. Arrays ok.
    """
    draw_w = radio_power_w(power_w, pa_efficiency, circuit_power_w)
    tau_s = np.asarray(tau_s, dtype=float)
    if np.any(np.isnan(tau_s)) or np.any(tau_s < 0):
        raise ValueError("tau_s must be >= 0")
    return draw_w * tau_s


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

    width = _width(bits_per_element, "channel.activation_bits")
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
