"""One radio, one deadline: the timing model, the deadline-aware choice, realisations and CIs."""
import numpy as np
import pytest

from pipeline.channel import block_index, cumulative_bits, payload_bits, transmission_time_s
from pipeline.evaluation import allowed_cuts, cut_table, run_methods, simulate, table_rows
from pipeline.selection import select_causal, select_min_energy
from pipeline.simulation import Link, Route, Scenario, Timing, mean_ci95, run_method, start_rates_bps

P_W = 1e-3


def test_block_index_on_float_block_edges():
    # 0.7 / 0.035 = 19.999999999999996 in floats, so 0.7 // 0.035 gives block 19; 0.7 s is block 20's start
    assert 0.7 // 0.035 == 19.0
    np.testing.assert_array_equal(block_index(np.array([0.0, 0.0349, 0.035, 0.7, 0.71]), 0.035), [0, 0, 1, 20, 20])
    # every inference start of the default trajectory (i / 10 Hz) sits in block floor(i*0.1/0.035 + 1e-9)
    times = np.arange(6069) / 10.0
    exact = np.array([(i * 100) // 35 for i in range(6069)])  # integer arithmetic: ms over 35 ms blocks
    np.testing.assert_array_equal(block_index(times, 0.035), exact)
    assert np.sum(times // 0.035 != exact) > 0  # the old floor division disagreed on some of them


def test_causal_rate_and_eq4_use_the_same_block_at_an_edge():
    # block 20 starts at 0.7 s: rate 1e3 in blocks 0..19, 1e6 from block 20 on
    rates = np.array([1e3] * 20 + [1e6] * 20)
    route = Route(np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros(2), 1.0, 10.0, 0.035, 0.0, 1.0, 1.0, 0)
    gain_per_rate = {1e3: None}
    link = Link(1e3, P_W, 1e-9)
    # gains giving exactly those rates at W = 1 kHz: R = W log2(1 + P g / (N0 W)) -> g = (2^(R/W) - 1) N0 W / P
    gains = (2.0 ** (rates / 1e3) - 1) * 1e-9 * 1e3 / P_W
    scenario = Scenario(route, np.array([0.7]), np.zeros((1, 2)), gains)
    np.testing.assert_allclose(start_rates_bps(scenario, link), [1e6], rtol=1e-9)
    # 1000 bits at 0.7 s: all inside block 20 at 1 Mbit/s -> 1 ms, not 1 s at the previous block's rate
    tau = transmission_time_s(cumulative_bits(rates, 0.035), rates, 0.035, np.array([0.7]), np.array([1000.0]))
    np.testing.assert_allclose(tau, [[1e-3]], rtol=1e-9)
    del gain_per_rate


def test_uploads_start_when_each_cut_is_computed():
    rates = np.array([100.0, 1000.0] + [1000.0] * 10)  # 1 s blocks
    cum = cumulative_bits(rates, 1.0)
    # cut 0 starts at 0 s: 100 bits in block 0 -> 1 s; cut 1 computes 0.5 s first: 50 bits left in
    # block 0 (0.5 s), the other 50 at 1000 bit/s in block 1 -> 0.5 + 0.05 s
    tau = transmission_time_s(cum, rates, 1.0, np.array([[0.0, 0.5]]), np.array([100.0, 100.0]))
    np.testing.assert_allclose(tau, [[1.0, 0.55]], rtol=1e-12)


def test_payload_input_width_and_index_bits():
    # 784 8-bit pixels, then 3136 and 10 fp32 elements; 15 candidates -> ceil(log2 15) = 4 index bits
    np.testing.assert_array_equal(payload_bits(np.array([784, 3136, 10]), 32, 15, input_bits_per_element=8),
                                  [784 * 8 + 4, 3136 * 32 + 4, 10 * 32 + 4])


def test_deadline_choice_skips_the_cheapest_cut_when_it_misses():
    # three cuts, E = E_p + P tau (eq. 6), deadline 0.1 s, no compute time
    processing_j = np.array([0.0, 2e-5, 5e-5])
    tau_s = np.array([
        [0.12, 0.20, 0.08],   # E = [1.2e-4, 2.2e-4, 1.3e-4]: cut 0 cheapest but late; cut 2 on time
        [0.02, 0.05, 0.001],  # E = [2e-5, 7e-5, 5.1e-5]: cut 0 cheapest and on time
        [0.20, 0.30, 0.40],   # E = [2e-4, 3.2e-4, 4.5e-4]: nothing on time -> the cheapest, a miss
    ])
    totals = processing_j + P_W * tau_s
    meets = tau_s <= 0.1
    np.testing.assert_array_equal(select_min_energy(totals), [0, 0, 0])
    np.testing.assert_array_equal(select_min_energy(totals, meets), [2, 0, 0])
    # without the raw input among the candidates: row 1 -> cut 2 (5.1e-5 < 7e-5), row 2 -> cut 1
    layers = allowed_cuts(["input", "a", "b"], "layers")
    np.testing.assert_array_equal(select_min_energy(totals, meets, layers), [2, 2, 1])


def test_run_method_charges_misses_by_late_upload_policy():
    processing_j = np.array([0.0, 1e-5])
    tau_s = np.array([[0.30, 0.02], [0.05, 0.50]])
    compute_s = np.array([0.0, 0.01])
    complete = Timing(deadline_s=0.1, period_s=0.1, late_upload="complete", enforce=False)
    # fixed cut 0: inference 0 late (0.3 > 0.1), inference 1 on time; full tau paid
    r = run_method(processing_j, tau_s, P_W, complete, compute_s, fixed_cut=0)
    np.testing.assert_allclose(r.transmission_j, [P_W * 0.30, P_W * 0.05])
    np.testing.assert_array_equal(r.missed, [True, False])
    m = r.means()
    assert m["deadline_miss_rate"] == 0.5
    assert m["duty_cycle"] == pytest.approx((0.30 + 0.05) / 2 / 0.1)  # 1.75: uploads overlap
    # abort: the radio stops at the deadline, 0.1 s minus compute time 0 for cut 0
    abort = Timing(0.1, 0.1, "abort", False)
    r = run_method(processing_j, tau_s, P_W, abort, compute_s, fixed_cut=0)
    np.testing.assert_allclose(r.transmission_j, [P_W * 0.10, P_W * 0.05])
    assert r.means()["duty_cycle"] == pytest.approx((0.10 + 0.05) / 2 / 0.1)
    # cut 1 computes 10 ms: it has 90 ms for its upload; inference 1 (0.5 s) is cut at 0.09 s
    r = run_method(processing_j, tau_s, P_W, abort, compute_s, fixed_cut=1)
    np.testing.assert_allclose(r.transmission_j, [P_W * 0.02, P_W * 0.09])
    np.testing.assert_allclose(r.latency_s, [0.03, 0.51])
    # PS enforcing the deadline: inference 0 -> cut 1 (cut 0 late), inference 1 -> cut 0 (cut 1 late)
    r = run_method(processing_j, tau_s, P_W, Timing(0.1, 0.1, "complete", True), compute_s)
    np.testing.assert_array_equal(r.choice, [1, 0])
    assert not r.missed.any()


def test_ps_blind_to_the_deadline_does_not_pick_an_upload_because_its_abort_is_cheap():
    """late_upload=abort with enforce_deadline off: PS plans whole uploads (eq. (6), full tau)."""
    processing_j = np.array([0.0, 1.5e-4])
    tau_s = np.array([[0.30, 0.02]])
    abort = Timing(deadline_s=0.1, period_s=0.1, late_upload="abort", enforce=False)
    # cut 0: P * 0.30 = 3e-4 J to send, but aborted at the deadline it is charged P * 0.10 = 1e-4 J
    # and the inference is lost; cut 1: 1.5e-4 + P * 0.02 = 1.7e-4 J, on time
    assert P_W * 0.10 < 1.5e-4 + P_W * 0.02 < P_W * 0.30
    r = run_method(processing_j, tau_s, P_W, abort, np.zeros(2))
    np.testing.assert_array_equal(r.choice, [1])
    np.testing.assert_allclose(r.processing_j + r.transmission_j, [1.7e-4])
    assert not r.missed.any()


def test_causal_choice_with_a_deadline_budget():
    # rate 1e4 bit/s seen at the start; bits [2000, 500, 10] -> tau_hat [0.2, 0.05, 0.001] s
    # E_hat = [0 + 1e-3*0.2, 1e-6 + 1e-3*0.05, 6e-5 + 1e-6] = [2e-4, 5.1e-5, 6.1e-5]: cut 1 best
    processing_j, bits = np.array([0.0, 1e-6, 6e-5]), np.array([2000.0, 500.0, 10.0])
    assert select_causal(processing_j, bits, np.array([1e4]), P_W)[0] == 1
    # a budget of 0.04 s for every cut rules cut 1 (0.05 s) out -> cut 2
    assert select_causal(processing_j, bits, np.array([1e4]), P_W, budget_s=np.full(3, 0.04))[0] == 2


def _tables(processing_c, processing_u, elements, send_index=False):
    kw = dict(bits_per_element=32, input_bits_per_element=8, candidates="layers+input",
              fixed_cuts_send_index=send_index, client_macs_per_s=None)
    names = ["input", "pool1", "fc5"]
    macs = np.zeros(3)
    return (cut_table(names, processing_c, elements, macs, {}, **kw),
            cut_table(names, processing_u, elements, macs, {}, **kw))


def _flat(gain, n=3, block_s=1.0):
    route = Route(np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros(2), 1.0, 1.0, block_s, 0.0, 1.0, 1.0, 0)
    return Scenario(route, np.arange(n, dtype=float), np.zeros((n, 2)), np.full(1000, gain))


def test_methods_on_a_hand_checked_channel_with_different_tables():
    # compressed: pool1 costs 1 uJ, fc5 2 uJ; uncompressed: 10 uJ and 50 uJ; pool1 sends 100 elements
    compressed, uncompressed = _tables([0.0, 1e-6, 2e-6], [0.0, 1e-5, 5e-5], [784, 100, 10])
    # PS names 1 of 3 cuts with ceil(log2 3) = 2 bits; fixed cuts send none here
    np.testing.assert_array_equal(compressed.bits, [784 * 8 + 2, 100 * 32 + 2, 10 * 32 + 2])
    np.testing.assert_array_equal(compressed.bits_fixed, [784 * 8, 100 * 32, 10 * 32])
    link = Link(1e3, P_W, 1e-9)
    rate = 1e3 * np.log2(1 + 1e-3 / (1e-9 * 1e3))  # gain 1, W = 1 kHz: log2(1001) kbit/s
    timing = Timing(10.0, 10.0, "complete", False)
    _, res = run_methods(compressed, uncompressed, _flat(1.0), link, timing, methods=("ps", "psnc", "offload"))
    assert res["offload"].transmission_j[0] == pytest.approx(P_W * 784 * 8 / rate)
    e_ps = np.min(np.array([0.0, 1e-6, 2e-6]) + P_W * compressed.bits / rate)
    e_psnc = np.min(np.array([0.0, 1e-5, 5e-5]) + P_W * uncompressed.bits / rate)
    assert res["ps"].total_j[0] == pytest.approx(e_ps)  # fc5: 2e-6 + 1e-3 * 322 / 9967 = 3.43e-5 J
    assert res["psnc"].total_j[0] == pytest.approx(e_psnc)  # fc5: 5e-5 + 3.23e-5 = 8.23e-5 J
    assert e_ps < e_psnc
    assert np.all(res["ps"].total_j < res["psnc"].total_j)


def test_mean_ci95_student_t():
    # R = 3 samples 1, 2, 3: mean 2, s = 1, t_0.975,2 = 4.3027 -> 4.3027 / sqrt(3) = 2.4841
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert np.isnan(mean_ci95([5.0])[1])


def test_realisations_share_fading_across_methods_and_give_ci():
    # fixed cuts pay the index bits too, so PS's choice set contains each of them exactly
    compressed, uncompressed = _tables([0.0, 1e-6, 2e-6], [0.0, 1e-5, 5e-5], [784, 100, 10], send_index=True)
    route = Route(np.array([[10.0, 0.0], [40.0, 0.0]]), np.zeros(2), 1.5, 10.0, 0.035, 3.0, 20.0, 1.0, 7,
                  duration_s=5.0)
    timing = Timing(0.1, 0.1, "complete", False)
    scenario, results = simulate(compressed, uncompressed, route, [Link(15e3, P_W, 1e-9)], timing, 4)
    runs = results[15e3]
    assert len(runs["ps"]) == 4 and len(scenario.times_s) == 50
    # common random numbers: in every realisation PS is at most each fixed cut, inference by inference
    for r in range(4):
        for m in ("pool1", "softmax", "offload"):
            assert np.all(runs["ps"][r].total_j <= runs[m][r].total_j + 1e-18)
    rows = {row["method"]: row for row in table_rows(15e3, runs, 0.275)}
    per_real = [run.means()["energy_total_j"] for run in runs["ps"]]
    assert rows["ps"]["energy_total_j"] == pytest.approx(np.mean(per_real))
    assert rows["ps"]["energy_total_j_ci95"] == pytest.approx(3.182446 * np.std(per_real, ddof=1) / 2, rel=1e-6)
    assert len(set(per_real)) == 4  # the realisations differ


def test_versus_paper_cell_by_cell():
    from pipeline.evaluation import versus_paper
    row = {"bandwidth_hz": 15e3, "method": "pool1", "energy_total_j": 1.0e-3, "energy_total_j_ci95": 1e-6,
           "energy_processing_j": 5.7e-5, "energy_processing_j_ci95": 0.0,
           "energy_transmission_j": 9.43e-4, "energy_transmission_j_ci95": 1e-6}
    cells = versus_paper([row, {**row, "method": "offload"}])  # the paper has no offload column
    assert [c["quantity"] for c in cells] == ["energy_total_j", "energy_processing_j", "energy_transmission_j"]
    # Table III, 15 kHz, Pool-1: E = 8.66e-4, E_p = 0.66e-4, E_tr = 7.98e-4 J
    assert [c["paper_j"] for c in cells] == [8.66e-4, 0.66e-4, 7.98e-4]
    assert cells[1]["ours_over_paper"] == pytest.approx(5.7e-5 / 6.6e-5)
