import math

import numpy as np
import pytest

from pipeline.channel import (
    cumulative_bits,
    payload_bits,
    rate_bps,
    transmission_energy_j,
    transmission_time_s,
    validate_link,
)

BLOCK_S = 0.01
RATES = np.array([1000.0, 3000.0])  # bit/s in blocks [0, 0.01) and [0.01, 0.02)


def tau(rates, starts, bits, block_s=BLOCK_S):
    rates = np.asarray(rates, dtype=float)
    return transmission_time_s(cumulative_bits(rates, block_s), rates, block_s, np.asarray(starts, float),
                               np.asarray(bits, float))


def test_rate_eq3():
    # SNR = P g / (N0 W) = 1e-3 * 2 / (1e-7 * 1e3) = 20
    assert rate_bps(2.0, 1e3, 1e-3, 1e-7) == pytest.approx(1e3 * math.log2(21), rel=1e-12)
    # paper values (Sec. IV): P = 1 mW, N0 = 1e-9, W = 5 MHz, unit gain -> SNR 0.2
    assert rate_bps(1.0, 5e6, 1e-3, 1e-9) == pytest.approx(5e6 * math.log2(1.2), rel=1e-12)
    np.testing.assert_allclose(rate_bps(np.array([0.0, 0.5]), 1e3, 1e-3, 1e-7), [0.0, 1e3 * math.log2(6)], rtol=1e-12)


def test_cumulative_bits():
    np.testing.assert_allclose(cumulative_bits(RATES, BLOCK_S), [0.0, 10.0, 40.0], rtol=1e-12)


def test_tau_across_two_blocks():
    # 5 bits in the second half of block 0 (0.005 s), then 15 bits at 3000 bit/s (0.005 s)
    assert tau(RATES, [0.005], [20])[0, 0] == pytest.approx(0.005 + 15 / 3000, rel=1e-12)


def test_tau_matrix_starts_by_bits():
    got = tau(RATES, [0.005, 0.012], [0, 5, 20])
    expected = [
        [0.0, 5 / 1000, 0.005 + 15 / 3000],  # 5 bits exactly fill the rest of block 0
        [0.0, 5 / 3000, 20 / 3000],  # mid block 1: 0.008 s * 3000 = 24 bits available, 20 fit
    ]
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_tau_through_a_dead_block():
    # 10 bits in block 0, nothing in block 1, remaining 20 bits at 2000 bit/s
    assert tau([1000, 0, 2000], [0.0], [30])[0, 0] == pytest.approx(0.01 + 0.01 + 20 / 2000, rel=1e-12)


def test_tau_far_from_time_origin():
    # 100000 blocks; start in the middle of block 50000 (t = 500.005 s); rates 1e6 / 2e6 alternating
    rates = np.where(np.arange(100_000) % 2 == 0, 1e6, 2e6)
    # 5000 bits at 1e6 (0.005 s), 20000 at 2e6 (0.01 s), 1000 at 1e6 (0.001 s)
    got = tau(rates, [500.005], [26_000])[0, 0]
    assert got == pytest.approx(0.005 + 0.01 + 0.001, rel=1e-9)


def test_trace_too_short_raises_with_missing_bits():
    # from t = 0.005 the trace still carries 5 + 30 = 35 bits; 41 requested -> 6 missing
    with pytest.raises(ValueError, match=r"too short: 6 of 41 bits"):
        tau(RATES, [0.005], [41])
    with pytest.raises(ValueError, match="too short"):
        tau(RATES, [0.025], [1])  # starts after the trace ends
    # exactly the bits left: completes at the end of the trace
    assert tau(RATES, [0.005], [35])[0, 0] == pytest.approx(0.015, rel=1e-12)


def test_transmission_energy_is_power_times_time():
    assert transmission_energy_j(0.01, 1e-3) == pytest.approx(1e-5, rel=1e-12)
    np.testing.assert_allclose(transmission_energy_j(np.array([0.0, 2.5]), 2e-3), [0.0, 5e-3], rtol=1e-12)


def test_payload_bits_include_cut_index():
    assert payload_bits(10, 32, n_cuts=14) == 10 * 32 + 4  # ceil(log2 14) = 4
    assert payload_bits(784, 32, n_cuts=14) == 784 * 32 + 4
    assert payload_bits(10, 32, n_cuts=1) == 320  # a single cut needs no index
    assert payload_bits(10, 32, n_cuts=2) == 321
    assert payload_bits(10, 32, n_cuts=16) == 324
    assert payload_bits(10, 32, n_cuts=17) == 325
    np.testing.assert_array_equal(payload_bits(np.array([0, 3]), 16, n_cuts=3), [0 + 2, 48 + 2])


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.0, 1e-3, 1e-9), r"channel.bandwidth_hz must be finite and > 0 \(got 0.0\)"),
        ((float("nan"), 1e-3, 1e-9), "channel.bandwidth_hz"),
        ((5e6, -1e-3, 1e-9), "channel.power_w"),
        ((5e6, float("inf"), 1e-9), "channel.power_w"),
        ((5e6, 1e-3, -1e-9), "channel.noise_psd_w_per_hz"),
        ((5e6, 1e-3, 0.0), "channel.noise_psd_w_per_hz"),
    ],
)
def test_bad_link_settings(args, match):
    with pytest.raises(ValueError, match=match):
        validate_link(*args)
    with pytest.raises(ValueError, match=match):
        rate_bps(1.0, *args)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="channel.power_w"):
        transmission_energy_j(0.1, -1.0)
    with pytest.raises(ValueError, match="channel.block_s"):
        cumulative_bits(RATES, 0.0)
    with pytest.raises(ValueError, match="gain"):
        rate_bps(-1.0, 1e3, 1e-3, 1e-9)
    with pytest.raises(ValueError, match="n_cuts"):
        payload_bits(10, 32, n_cuts=0)
    with pytest.raises(ValueError, match="channel.activation_bits"):
        payload_bits(10, 0, n_cuts=14)
