"""The link, realistically: the finite-blocklength rate, retransmissions, and (P / eta + P_c) tau.

Every expected value is worked out by hand in the comments: log2 e = 1.4426950, so
(log2 e)^2 = 2.0813690, and Q^-1(1e-3) = 3.0902323 (the standard normal's 99.9% quantile).
"""
import numpy as np
import pytest

from pipeline.channel import (cumulative_bits, dispersion_penalty, expected_transmissions, finite_blocklength_bits,
                              finite_blocklength_rate, q_inverse, radio_power_w, rate_bps, time_for_bits_s,
                              transmission_energy_j, transmission_time_s)
from pipeline.config import ConfigError, link_from_config, validate_evaluation
from pipeline.selection import select_causal
from pipeline.simulation import Link, Route, Scenario, Timing, run_method, transmission_times_s
from tests.conftest import compose_cfg

Q_1E3 = 3.0902323  # Q^-1(1e-3)
LOG2E_SQ = 2.0813690  # (log2 e)^2


def test_q_inverse_is_the_gaussian_tail_quantile():
    assert q_inverse(1e-3) == pytest.approx(Q_1E3, abs=1e-7)
    assert q_inverse(0.5 - 1e-12) == pytest.approx(0.0, abs=1e-9)


def test_finite_blocklength_rate_by_hand():
    # SNR 1 (0 dB), n = 1000, eps = 1e-3:
    #   C = log2(1 + 1) = 1 bit per channel use
    #   V = (1 - 1/(1 + 1)^2) (log2 e)^2 = 0.75 x 2.0813690 = 1.5610267 bits^2
    #   sqrt(V / n) = sqrt(0.0015610267) = 0.0395098
    #   R = C - sqrt(V / n) Q^-1(eps) = 1 - 0.0395098 x 3.0902323 = 1 - 0.1220946 = 0.8779054
    assert finite_blocklength_rate(1.0, 1000, 1e-3) == pytest.approx(0.8779054, abs=1e-7)
    # SNR 3, n = 100: C = log2 4 = 2; V = (1 - 1/16) x 2.0813690 = 1.9512834;
    #   sqrt(V / 100) = 0.1396883; R = 2 - 0.1396883 x 3.0902323 = 2 - 0.4316694 = 1.5683306
    assert finite_blocklength_rate(3.0, 100, 1e-3) == pytest.approx(1.5683306, abs=1e-7)
    # ... and the bits of that codeword: k = n R = 156.83306
    assert finite_blocklength_bits(100, 3.0, 1e-3) == pytest.approx(156.83306, abs=1e-5)
    # the penalty shrinks as the codeword grows, towards C
    rates = finite_blocklength_rate(1.0, np.array([100, 1000, 10_000, 1_000_000]), 1e-3)
    assert np.all(np.diff(rates) > 0) and rates[-1] < 1.0


def test_finite_blocklength_rate_is_zero_not_negative_at_low_snr_and_short_n():
    # SNR 0.01, n = 10: C = log2 1.01 = 0.0143553; V = (1 - 1/1.0201) x 2.0813690 = 0.0410112;
    #   sqrt(V / 10) x 3.0902323 = 0.0640400 x 3.0902323 = 0.1978984 > C: R would be -0.1835 -> 0
    assert finite_blocklength_rate(0.01, 10, 1e-3) == 0.0
    assert finite_blocklength_bits(np.array([0.0, 10.0]), np.array([0.0, 0.01]), 1e-3).tolist() == [0.0, 0.0]
    # a dead block (gain 0) carries nothing and the time for 0 bits is 0, never NaN
    assert time_for_bits_s(np.array([0.0, 5.0]), np.array([0.0, 0.0]), np.array([0.0, 0.0])).tolist() == [0.0, 0.0]


def test_codeword_time_inverts_the_finite_blocklength_bits():
    # W = 1 kHz, SNR 3: R = 1e3 x log2 4 = 2000 bit/s; D = Q^-1 sqrt(W V) = 3.0902323 x sqrt(1951.2834)
    #   = 3.0902323 x 44.173333 = 136.50586 bit/s^0.5; in t = 0.1 s (n = 100 channel uses) a codeword
    #   carries 2000 x 0.1 - 136.50586 x sqrt(0.1) = 200 - 43.16694 = 156.83306 bits (= n R above)
    gain = 3.0 * 1e-9 * 1e3 / 1e-3  # SNR = P g / (N0 W) = 3
    penalty = dispersion_penalty(gain, 1e3, 1e-3, 1e-9, 1e-3)
    assert penalty == pytest.approx(136.50586, rel=1e-7)
    assert time_for_bits_s(156.83306, 2000.0, penalty) == pytest.approx(0.1, rel=1e-6)
    assert time_for_bits_s(156.83306, 2000.0) == pytest.approx(156.83306 / 2000, rel=1e-12)  # Shannon


def test_upload_over_two_blocks_one_codeword_each():
    # W = 10 kHz, N0 W = 1e-3 W so SNR = gain: block 0 at SNR 3, block 1 at SNR 1, 10 ms blocks (n = 100 each)
    rates = rate_bps(np.array([3.0, 1.0]), 1e4, 1e-3, 1e-7)  # [2e4, 1e4] bit/s
    penalty = dispersion_penalty(np.array([3.0, 1.0]), 1e4, 1e-3, 1e-7, 1e-3)
    cum = cumulative_bits(rates, 0.01, penalty)
    # block 0 whole: 156.83306 bits (as above, n = 100 at SNR 3)
    assert cum[1] == pytest.approx(156.83306, abs=1e-5)
    # 200 bits from t = 0: 43.16694 bits left for block 1 at SNR 1, where k(n) = n - sqrt(1.5610267 n) x 3.0902323
    #   = n - 3.8609689 sqrt(n); x = sqrt(n) = (3.8609689 + sqrt(3.8609689^2 + 4 x 43.16694)) / 2 = 8.778383,
    #   n = 77.06001 channel uses = 7.706001 ms; tau = 10 ms + 7.706001 ms
    tau = transmission_time_s(cum, rates, 0.01, np.array([0.0]), np.array([200.0]), penalty)
    assert tau[0, 0] == pytest.approx(0.017706001, rel=1e-7)
    # Shannon: block 0 carries 2e4 x 0.01 = 200 bits, exactly the upload -> 10 ms
    tau_shannon = transmission_time_s(cumulative_bits(rates, 0.01), rates, 0.01, np.array([0.0]), np.array([200.0]))
    assert tau_shannon[0, 0] == pytest.approx(0.01, rel=1e-12)


def test_a_block_too_weak_for_a_codeword_is_waited_through():
    # SNR [3, 1e-6, 3] with 100 uses per block: the middle block's C = 1.44e-6 bits per use is below
    # its dispersion back-off sqrt(V / 100) x 3.0902323 = 6.3e-4 bits per use -> it carries 0 bits.
    # 200 bits = 156.83306 in block 0 (as above), then 43.16694 in block 2 at SNR 3:
    #   k(n) = 2 n - sqrt(1.9512834 n) x 3.0902323 = 2 n - 4.3166944 sqrt(n) = 43.16694
    #   -> sqrt(n) = (4.3166944 + sqrt(4.3166944^2 + 8 x 43.16694)) / 4 = 5.8486691, n = 34.20693 -> 3.420693 ms
    gains = np.array([3.0, 1e-6, 3.0])
    rates = rate_bps(gains, 1e4, 1e-3, 1e-7)
    penalty = dispersion_penalty(gains, 1e4, 1e-3, 1e-7, 1e-3)
    cum = cumulative_bits(rates, 0.01, penalty)
    assert cum[2] == cum[1]
    tau = transmission_time_s(cum, rates, 0.01, np.array([0.0]), np.array([200.0]), penalty)
    assert np.isfinite(tau).all() and tau[0, 0] == pytest.approx(0.02 + 0.003420693, rel=1e-6)


def test_expected_retransmissions():
    # a codeword fails with probability eps and is resent until decoded: geometric, mean 1 / (1 - eps)
    assert expected_transmissions(1e-3) == pytest.approx(1 / 0.999, rel=1e-15)  # 1.001001
    assert expected_transmissions(0.2) == pytest.approx(1.25, rel=1e-15)
    # the upload time the simulation charges is the single-send time x 1 / (1 - eps): 1.25 at eps = 0.2
    scenario, link = _two_blocks(), Link(1e4, 1e-3, 1e-7, "finite_blocklength", 0.2)
    _, tau = transmission_times_s(scenario, link, np.array([200.0]))
    np.testing.assert_allclose(tau, _one_send_s(scenario, link, 200.0) * 1.25, rtol=1e-12)
    # Shannon's rate is error-free in its limit: no resends
    assert Link(1e4, 1e-3, 1e-7).expected_transmissions == 1.0


def test_a_retransmission_that_overruns_the_deadline_is_a_miss():
    # a deadline between one send of the upload (tau x (1 - eps)) and the expected time with resends
    # (tau) makes the upload late: the resends overrun it
    scenario = _two_blocks()
    link = Link(1e4, 1e-3, 1e-7, "finite_blocklength", 0.2)
    _, tau = transmission_times_s(scenario, link, np.array([200.0]))
    once_s = _one_send_s(scenario, link, 200.0)[0, 0]
    assert tau[0, 0] == pytest.approx(once_s / 0.8, rel=1e-12)
    deadline_s = (once_s + tau[0, 0]) / 2
    r = run_method(np.zeros(1), tau, link.radio_power_w, Timing(deadline_s, 1.0, "abort"), np.zeros(1), fixed_cut=0)
    assert r.missed.tolist() == [True]
    assert r.transmission_j[0] == pytest.approx(1e-3 * deadline_s)  # aborted at the deadline
    r = run_method(np.zeros(1), tau, link.radio_power_w, Timing(deadline_s, 1.0, "complete"), np.zeros(1), fixed_cut=0)
    assert r.transmission_j[0] == pytest.approx(1e-3 * tau[0, 0])  # completed, every resend paid


def test_transmit_energy_with_pa_efficiency_and_circuit_power():
    # (P / eta + P_c) tau = (1 mW / 0.5 + 30 mW) x 20 ms = 32 mW x 0.02 s = 6.4e-4 J
    assert radio_power_w(1e-3, 0.5, 0.03) == pytest.approx(0.032, rel=1e-15)
    assert transmission_energy_j(0.02, 1e-3, 0.5, 0.03) == pytest.approx(6.4e-4, rel=1e-12)
    np.testing.assert_allclose(transmission_energy_j(np.array([0.0, 0.01]), 2e-3, 1.0, 0.05), [0.0, 5.2e-4])
    # the paper's eq. (5), eta = 1 and P_c = 0: exactly P tau, bit for bit
    assert radio_power_w(1e-3) == 1e-3 and transmission_energy_j(0.0123, 1e-3) == 1e-3 * 0.0123
    assert Link(5e6, 1e-3, 1e-9, pa_efficiency=0.25, circuit_power_w=0.01).radio_power_w == pytest.approx(0.014)


def test_finite_blocklength_costs_more_than_shannon_for_the_same_upload():
    # the same scenario and payloads: every upload takes longer and costs more, by more than the
    # 1 / (1 - eps) of the resends (the dispersion back-off); 0 bits cost nothing either way
    scenario = Scenario(_route(0.035), np.arange(20) * 0.1, np.zeros((20, 2)),
                        np.random.default_rng(0).exponential(size=400))
    bits = np.array([0.0, 324.0, 6276.0, 100_356.0])
    shannon, fbl = Link(5e6, 1e-3, 1e-9), Link(5e6, 1e-3, 1e-9, "finite_blocklength")
    _, tau_s = transmission_times_s(scenario, shannon, bits)
    _, tau_f = transmission_times_s(scenario, fbl, bits)
    assert np.all(tau_f[:, 1:] > tau_s[:, 1:] / 0.999) and np.all(tau_f[:, 0] == 0) and np.all(tau_s[:, 0] == 0)
    timing = Timing(10.0, 10.0)
    for cut in range(1, 4):
        e_s = run_method(np.zeros(4), tau_s, shannon.radio_power_w, timing, np.zeros(4), fixed_cut=cut).transmission_j
        e_f = run_method(np.zeros(4), tau_f, fbl.radio_power_w, timing, np.zeros(4), fixed_cut=cut).transmission_j
        assert np.all(e_f > e_s)


def test_causal_choice_uses_the_finite_blocklength_time():
    # rate 2000 bit/s, D = 136.50586 (W = 1 kHz, SNR 3); radio draw 1 W for round numbers.
    # cut 0: 156.83306 bits, no processing: Shannon tau_hat = 0.0784165 s, finite blocklength 0.1 s
    #   (one codeword of n = 100) x 1 / (1 - 1e-3) = 0.1001001 s; cut 1: no bits, E_p = 0.10005 J
    processing_j, bits = np.array([0.0, 0.10005]), np.array([156.83306, 0.0])
    rate, penalty = np.array([2000.0]), np.array([136.50586])
    assert select_causal(processing_j, bits, rate, 1.0)[0] == 0  # 0.0784 J < 0.10005 J
    assert select_causal(processing_j, bits, rate, 1.0, start_penalty=penalty,
                         expected_transmissions=1 / 0.999)[0] == 1  # 0.1001001 J > 0.10005 J
    # one send only would be 0.1 J < 0.10005 J: the resends decide it
    assert select_causal(processing_j, bits, rate, 1.0, start_penalty=penalty)[0] == 0


@pytest.mark.parametrize("override,message", [
    ("channel.rate_model=turbo", "channel.rate_model must be one of shannon, finite_blocklength (got 'turbo')"),
    ("channel.rate_model=null", "channel.rate_model must be one of shannon, finite_blocklength (got None)"),
    ("channel.block_error_rate=0", "channel.block_error_rate must be in (0, 0.5) (got 0)"),
    ("channel.block_error_rate=0.5", "channel.block_error_rate must be in (0, 0.5) (got 0.5)"),
    ("channel.block_error_rate=null", "channel.block_error_rate must be in (0, 0.5) (got None)"),
    ("channel.pa_efficiency=0", "channel.pa_efficiency must be in (0, 1] (got 0)"),
    ("channel.pa_efficiency=1.2", "channel.pa_efficiency must be in (0, 1] (got 1.2)"),
    ("channel.pa_efficiency=null", "channel.pa_efficiency must be in (0, 1] (got None)"),
    ("channel.circuit_power_w=-0.01", "channel.circuit_power_w must be in [0, inf) (got -0.01)"),
    ("channel.circuit_power_w=null", "channel.circuit_power_w must be in [0, inf) (got None)"),
    ("channel.circuit_power_w=inf", "channel.circuit_power_w must be a finite number (got inf)"),
])
def test_bad_link_settings_are_refused(override, message):
    with pytest.raises(ConfigError) as exc:
        validate_evaluation(compose_cfg("evaluate", [override]))
    assert str(exc.value) == message


@pytest.mark.parametrize("override,message", [
    ("channel.rate_model=turbo", "channel.rate_model must be one of shannon, finite_blocklength (got 'turbo')"),
    ("channel.pa_efficiency=1.2", "channel.pa_efficiency must be in (0, 1] (got 1.2)"),
])
def test_a_sweep_trial_refuses_bad_link_settings(override, message):
    # what every trial runs first (pipeline.sweep.run_trial), before any data, training or run
    from pipeline.sweep import validate_sweep
    with pytest.raises(ConfigError) as exc:
        validate_sweep(compose_cfg("sweep", ["experiment=smoke", override]))
    assert str(exc.value) == message


def test_link_from_config_reads_every_link_setting():
    cfg = compose_cfg("evaluate", ["channel.rate_model=finite_blocklength", "channel.block_error_rate=0.01",
                                   "channel.pa_efficiency=0.4", "channel.circuit_power_w=0.05"])
    link = link_from_config(cfg.channel, 15e3)
    assert (link.rate_model, link.block_error_rate, link.pa_efficiency, link.circuit_power_w) == (
        "finite_blocklength", 0.01, 0.4, 0.05)
    assert link.radio_power_w == pytest.approx(1e-3 / 0.4 + 0.05)
    default = link_from_config(compose_cfg("evaluate", []).channel, 5e6)  # the paper's link
    assert (default.rate_model, default.radio_power_w, default.expected_transmissions) == ("shannon", 1e-3, 1.0)
    for bad in ({"rate_model": "turbo"}, {"block_error_rate": 0.7}, {"pa_efficiency": 0.0}, {"circuit_power_w": -1.0}):
        with pytest.raises(ValueError, match="channel." + next(iter(bad))):
            Link(5e6, 1e-3, 1e-9, **bad)


def _route(block_s):
    return Route(np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros(2), 1.0, 1.0, block_s, 0.0, 1.0, 1.0, 0)


def _two_blocks():
    """One inference at t = 0 over SNR 3 then SNR 1 at W = 10 kHz, N0 W = P (gain = SNR), 10 ms blocks."""
    return Scenario(_route(0.01), np.array([0.0]), np.zeros((1, 2)), np.array([3.0, 1.0] + [1.0] * 98))


def test_run_methods_charges_the_radio_draw_and_decides_causally_on_the_finite_blocklength_time():
    # cuts input / pool1 / fc5 on a flat channel at W = 1 kHz, gain 3 -> SNR 3 (N0 W = P): 2000 bit/s
    from pipeline.evaluation import cut_table, run_methods
    kw = dict(bits_per_element=32, input_bits_per_element=8, candidates="layers+input",
              fixed_cuts_send_index=False, client_macs_per_s=None)
    # E_p chosen so that the two estimates disagree: at 0.052 W, tau_hat x 0.052 is
    #   Shannon [6274, 3202, 322] bits / 2000 bit/s x 0.052 = [0.16312, 0.08325, 0.00837] J,
    #   finite blocklength (one codeword, x 1/0.999) = [0.16970, 0.08795, 0.00993] J; + E_p [1, 0, 0.076]:
    #   Shannon picks pool1 (0.08325 < 0.08437), finite blocklength fc5 (0.08593 < 0.08795)
    table = cut_table(["input", "pool1", "fc5"], [1.0, 0.0, 0.076], np.array([784, 100, 10]), np.zeros(3), {}, **kw)
    scenario = Scenario(_route(1.0), np.arange(3, dtype=float), np.zeros((3, 2)), np.full(1000, 3.0))
    link = Link(1e3, 1e-3, 1e-6, "finite_blocklength", 1e-3, pa_efficiency=0.5, circuit_power_w=0.05)
    _, res = run_methods(table, table, scenario, link, Timing(10.0, 10.0), causal=True, methods=("ps", "offload"))
    # offload: its true upload time (finite blocklength, x 1/(1 - eps)) at the radio's draw 1e-3/0.5 + 0.05 = 0.052 W
    _, tau = transmission_times_s(scenario, link, table.bits_fixed)
    np.testing.assert_allclose(res["offload"].transmission_j, 0.052 * tau[:, 0], rtol=1e-12)
    # PS decides on the finite-blocklength estimate: one codeword's time at the start rate x 1/(1 - eps)
    rate, penalty = link.rates(np.full(3, 3.0))
    expected = select_causal(table.processing_j, table.bits, rate, 0.052, start_penalty=penalty,
                             expected_transmissions=1 / 0.999)
    np.testing.assert_array_equal(res["ps"].choice, expected)
    assert expected.tolist() == [2, 2, 2]
    assert select_causal(table.processing_j, table.bits, rate, 0.052).tolist() == [1, 1, 1]


def test_cut_shares_count_every_realisation():
    # PS cut input, fc5, fc5 in one realisation and fc5, pool1 in the other: 1/5, 1/5, 3/5
    from pipeline.evaluation import cut_share_rows
    from pipeline.simulation import MethodResult

    def result(choice):
        zeros = np.zeros(len(choice))
        return MethodResult(np.array(choice), zeros, zeros, zeros, zeros, zeros.astype(bool), 0.1)

    rows = cut_share_rows(["input", "pool1", "fc5"], {5e6: {"ps": [result([0, 2, 2]), result([2, 1])],
                                                            "offload": [result([0, 0, 0])]}})
    assert rows == [{"bandwidth_hz": 5e6, "method": "ps", "input": 0.2, "pool1": 0.2, "fc5": 0.6}]


def _one_send_s(scenario, link, bits):
    """Eq. (4) at the finite-blocklength rate, every codeword sent once (no resends)."""
    rates, penalty = link.rates(scenario.gains)
    return transmission_time_s(cumulative_bits(rates, scenario.block_s, penalty), rates, scenario.block_s,
                               scenario.times_s, np.array([bits]), penalty)


def test_per_inference_payloads_under_finite_blocklength_row_by_row():
    # bits (N, C) (sparse coding: the payload depends on the image) give, row by row, what the
    # (C,) computation gives for that row alone; the trace of test_a_block_too_weak... (SNR 3, ~0, 3,
    # 1, 10 ms blocks at 10 kHz). Row 0 from t = 0: 200 bits -> 20 ms + 3.420693 ms (worked out
    # there), 100 bits fit in block 0, 0 bits take 0; the other rows start mid-block and spill.
    gains = np.array([3.0, 1e-6, 3.0, 1.0] + [3.0] * 6)
    rates = rate_bps(gains, 1e4, 1e-3, 1e-7)
    penalty = dispersion_penalty(gains, 1e4, 1e-3, 1e-7, 1e-3)
    cum = cumulative_bits(rates, 0.01, penalty)
    start = np.array([0.0, 0.004, 0.025])
    bits = np.array([[200.0, 100.0, 0.0], [50.0, 300.0, 120.0], [10.0, 0.0, 400.0]])
    tau = transmission_time_s(cum, rates, 0.01, start, bits, penalty)
    assert tau.shape == (3, 3)
    for i in range(3):
        row = transmission_time_s(cum, rates, 0.01, start[i:i + 1], bits[i], penalty)
        np.testing.assert_allclose(tau[i], row[0], rtol=1e-12)
    assert tau[0, 0] == pytest.approx(0.02 + 0.003420693, rel=1e-6)
    assert tau[0, 2] == 0.0 and tau[0, 1] < 0.01  # 100 bits fit in block 0 (156.8 bits whole)
    # a per-inference bits row differs from its neighbours': not one row broadcast over all
    assert tau[1, 1] != tau[0, 1] and tau[2, 2] > tau[1, 2]


def test_run_methods_with_per_inference_payloads_restricted_cuts_and_the_finite_blocklength_link():
    # both features together: PS charges each inference's own payload over the finite-blocklength
    # link (x 1/(1 - eps)) at the radio's draw, and never chooses the cut excluded for accuracy
    from pipeline.evaluation import cut_table, run_methods
    kw = dict(bits_per_element=32, input_bits_per_element=8, candidates="layers+input",
              fixed_cuts_send_index=False, client_macs_per_s=None)
    body = np.array([[6272.0, 900.0, 320.0], [6272.0, 1500.0, 320.0], [6272.0, 400.0, 320.0]])
    table = cut_table(["input", "pool1", "fc5"], [0.0, 0.0, 0.0], np.array([784, 100, 10]), np.zeros(3), {},
                      body_bits=body, expected_body_bits=body.mean(axis=0), accuracy=[0.97, 0.97, 0.5],
                      accurate=[True, True, False], **kw)
    scenario = Scenario(_route(1.0), np.arange(3, dtype=float), np.zeros((3, 2)), np.full(1000, 3.0))
    link = Link(1e3, 1e-3, 1e-6, "finite_blocklength", 1e-3, pa_efficiency=0.5, circuit_power_w=0.05)
    for causal in (False, True):
        _, res = run_methods(table, table, scenario, link, Timing(10.0, 10.0), causal=causal, methods=("ps",))
        # E_p = 0 everywhere: the fewest bits among the accurate cuts, pool1 (fc5 is smaller but excluded)
        assert res["ps"].choice.tolist() == [1, 1, 1]
        _, tau = transmission_times_s(scenario, link, table.bits)
        np.testing.assert_allclose(res["ps"].transmission_j, 0.052 * tau[:, 1], rtol=1e-12)
        assert len(set(res["ps"].transmission_j.tolist())) == 3  # each inference its own payload
