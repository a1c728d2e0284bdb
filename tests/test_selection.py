import numpy as np
import pytest

from pipeline.channel import cumulative_bits, transmission_time_s
from pipeline.selection import (
    co2_kg,
    gather,
    select_causal,
    select_fixed,
    select_min_energy,
    total_energy_j,
    validate_carbon_index,
)


def test_total_energy_eq6_broadcasts_processing():
    got = total_energy_j(np.array([1.0, 2.0, 3.0]), np.array([[0.5, 0.0, 1.0], [2.0, 0.25, 0.0]]))
    np.testing.assert_allclose(got, [[1.5, 2.0, 4.0], [3.0, 2.25, 3.0]], rtol=1e-12)


def test_select_min_energy_three_cuts():
    totals = np.array([
        [3.0, 2.0, 5.0],  # middle cut
        [1.0, 4.0, 4.0],  # first cut
        [6.0, 6.0, 2.0],  # last cut
    ])
    np.testing.assert_array_equal(select_min_energy(totals), [1, 0, 2])


def test_ties_go_to_the_earliest_cut():
    np.testing.assert_array_equal(select_min_energy(np.array([[2.0, 2.0, 3.0], [5.0, 1.0, 1.0]])), [0, 1])


def test_gather():
    values = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    np.testing.assert_array_equal(gather(values, np.array([2, 0])), [30.0, 40.0])
    with pytest.raises(ValueError, match="choice"):
        gather(values, np.array([3, 0]))


def test_causal_choice_differs_from_oracle():
    processing_j = np.array([0.0, 1e-6, 3e-6])
    bits = np.array([1000.0, 200.0, 10.0])
    power_w = 1e-3
    # At the start the rate is 1e5 bit/s, so E_hat = E_p + P * bits / 1e5:
    # [1e-5, 1e-6 + 2e-6, 3e-6 + 1e-7] -> cut 1 looks best.
    np.testing.assert_array_equal(select_causal(processing_j, bits, np.array([1e5]), power_w), [1])
    # But the rate falls to 1e3 bit/s after 1 ms: only cut 2 (10 bits, 0.1 ms) finishes before.
    # true tau: cut 0 1 ms + 900/1e3 s; cut 1 1 ms + 100/1e3 s; cut 2 10/1e5 s
    true_tau_s = np.array([0.001 + 0.9, 0.001 + 0.1, 1e-4])
    rates = np.array([1e5] + [1e3] * 1000)  # 1 ms blocks
    np.testing.assert_allclose(
        transmission_time_s(cumulative_bits(rates, 1e-3), rates, 1e-3, np.array([0.0]), bits), [true_tau_s], rtol=1e-9
    )
    true_total_j = np.array([[0.0 + 1e-3 * 0.901, 1e-6 + 1e-3 * 0.101, 3e-6 + 1e-3 * 1e-4]])
    np.testing.assert_allclose(total_energy_j(processing_j, power_w * true_tau_s[None, :]), true_total_j, rtol=1e-12)
    np.testing.assert_array_equal(select_min_energy(true_total_j), [2])


def test_causal_with_dead_channel_sends_fewest_bits():
    np.testing.assert_array_equal(
        select_causal(np.array([0.0, 1e-6, 3e-6]), np.array([1000.0, 200.0, 10.0]), np.array([0.0, 1e5]), 1e-3),
        [2, 1],
    )
    # equal bits: less processing wins
    np.testing.assert_array_equal(
        select_causal(np.array([3e-6, 1e-6, 0.0]), np.array([10.0, 10.0, 200.0]), np.array([0.0]), 1e-3), [1]
    )


def test_select_fixed():
    np.testing.assert_array_equal(select_fixed(3, 2, 14), [2, 2, 2])
    with pytest.raises(ValueError, match="cut index"):
        select_fixed(3, 14, 14)


def test_co2():
    assert co2_kg(3.6e6, 0.275) == pytest.approx(0.275, rel=1e-12)
    assert co2_kg(1e-4, 0.275) == pytest.approx(1e-4 / 3.6e6 * 0.275, rel=1e-12)
    # Table III, W = 15 kHz, PS: 1.69e-4 J at the EU average -> 0.13e-10 kg (as printed, 2 digits)
    assert co2_kg(1.69e-4, 0.275) == pytest.approx(0.13e-10, abs=0.005e-10)
    assert co2_kg(0.0, 0.0) == 0.0


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_carbon_index(bad):
    with pytest.raises(ValueError, match="co2.carbon_kg_per_kwh"):
        validate_carbon_index(bad)
    with pytest.raises(ValueError, match="co2.carbon_kg_per_kwh"):
        co2_kg(1.0, bad)


def test_shape_and_value_errors():
    with pytest.raises(ValueError, match="processing_j"):
        total_energy_j(np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        select_min_energy(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="channel.power_w"):
        select_causal(np.zeros(2), np.ones(2), np.ones(1), 0.0)
