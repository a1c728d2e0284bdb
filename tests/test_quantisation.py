"""What a cut sends and how the client computes (issue 11): quantisers, payload sizes, run-length,
post-training quantisation, and the payload/accuracy plumbing into the trajectory, by hand."""
import numpy as np
import pytest
import torch

from pipeline import quantisation as q
from pipeline.channel import cumulative_bits, transmission_time_s
from pipeline.energy import EnergyCosts, LayerCounts, layer_energies
from pipeline.evaluation import accurate_cuts, cut_table, restrict, route_images, run_methods
from pipeline.simulation import Link, Route, Scenario, Timing


def _quantiser(lo, hi, bits):
    return q.AffineQuantiser(torch.tensor([float(lo)]), torch.tensor([float(hi)]), bits)


def test_round_trip_on_a_hand_made_grid_at_every_width():
    # range [0, 1.5]; 4 bits: 15 steps of 0.1, so 0.26 -> code 3 -> 0.3; 0.5 -> 5; 1.5 -> 15; 2.0 clips to 15
    x = torch.tensor([[0.0, 0.26, 0.5, 1.5, 2.0]])
    four = _quantiser(0.0, 1.5, 4)
    assert four.quantise(x).tolist() == [[0, 3, 5, 15, 15]]
    np.testing.assert_allclose(four(x).numpy(), [[0.0, 0.3, 0.5, 1.5, 1.5]], rtol=1e-6)
    # 8 bits: step 1.5/255; 0.26 * 170 = 44.2 -> 44 -> 44 * 1.5 / 255 = 0.258824
    eight = _quantiser(0.0, 1.5, 8)
    assert eight.quantise(x).tolist() == [[0, 44, 85, 255, 255]]
    np.testing.assert_allclose(eight(x).numpy(), [[0.0, 44 * 1.5 / 255, 0.5, 1.5, 1.5]], rtol=1e-6)
    # 16 bits: 0.26 * 65535 / 1.5 = 11359.4 -> 11359
    assert _quantiser(0.0, 1.5, 16).quantise(x).tolist()[0][1] == 11359
    # inside the range the error is at most half a step, at every width
    inside = torch.linspace(0, 1.5, 97)[None]
    for bits in (4, 8, 16):
        assert float((_quantiser(0.0, 1.5, bits)(inside) - inside).abs().max()) <= 1.5 / (2**bits - 1) / 2 + 1e-6


def test_a_signed_range_keeps_zero_exact():
    # [-1, 3] at 2 bits: step 4/3, zero point round(0.75) = 1: the grid is -4/3, 0, 4/3, 8/3
    two = _quantiser(-1.0, 3.0, 2)
    x = torch.tensor([[-1.0, 0.0, 1.0, 3.0]])
    assert two.quantise(x).tolist() == [[0, 1, 2, 3]]
    np.testing.assert_allclose(two(x).numpy(), [[-4 / 3, 0.0, 4 / 3, 8 / 3]], rtol=1e-6)
    assert two.zero_codes(two.quantise(x)).tolist() == [[False, True, False, False]]


def test_ranges_per_tensor_and_per_channel_hold_zero():
    x = torch.tensor([[[1.0, 2.0], [-3.0, 0.5]], [[4.0, 0.0], [-1.0, -2.0]]])  # (N=2, C=2, 2)
    lo, hi = q.channel_range(x, "per_tensor")
    assert lo.tolist() == [-3.0] and hi.tolist() == [4.0]
    lo, hi = q.channel_range(x, "per_channel")
    assert lo.tolist() == [0.0, -3.0] and hi.tolist() == [4.0, 0.5]  # channel 0 never negative: lo = 0
    per_channel = q.AffineQuantiser(lo, hi, 8)
    # channel 0: step 4/255; channel 1: step 3.5/255 with zero point round(3 / (3.5/255)) = 219
    assert per_channel.zero_point.tolist() == [0.0, 219.0]
    with pytest.raises(ValueError, match="channel.activation_granularity must be one of per_tensor, per_channel"):
        q.channel_range(x, "per_pixel")


def test_dense_payload_of_a_small_tensor_at_each_width():
    # 8 elements: the paper's 32 bits each, then 16, 8, 4
    assert [q.dense_body_bits(8, b) for b in q.ACTIVATION_BITS] == [256, 128, 64, 32]


def test_bitmask_beats_run_length_on_a_short_vector():
    # [0, v, 0, v, 0, 0, 0, 0]: d = 8, n = 2, zero runs [1, 1]
    nonzero = np.array([[0, 1, 0, 1, 0, 0, 0, 0]], bool)
    rows, gaps = q.zero_runs(nonzero)
    assert gaps.tolist() == [1, 1]
    # run-length: n in ceil(log2 9) = 4 bits + r - 1 in 4 bits; r = 1: each run is one escape
    # word and one word -> 4 bits; r = 2: one 2-bit word each -> 4 bits; best 4 + 8 = 12
    assert [q.run_length_position_bits(gaps, 8, r) for r in (1, 2, 3)] == [12, 12, 14]
    # bitmask: 8 position bits < 12; per width: 2-bit header + 8 + 2 values
    for bits in q.ACTIVATION_BITS:
        body, fmt = q.sparse_body_bits(nonzero, bits)
        assert body.tolist() == [2 + 8 + 2 * bits], bits
        assert q.CODING_FORMATS[fmt[0]] == "bitmask"


def test_run_length_beats_bitmask_on_a_long_sparse_vector():
    # d = 64, non-zeros at 10 and 40: zero runs [10, 29]; n in ceil(log2 65) = 7 bits, r - 1 in 4
    nonzero = np.zeros((1, 64), bool)
    nonzero[0, [10, 40]] = True
    _, gaps = q.zero_runs(nonzero)
    assert gaps.tolist() == [10, 29]
    # r = 3 (runs of 7): 10 -> 1 escape + 1 word, 29 -> 4 escapes + 1 word: 7 words x 3 = 21 -> 32
    # r = 5 (runs of 31): one word each, 2 x 5 = 10 -> 21 (the best); r = 6: 12 -> 23
    assert [q.run_length_position_bits(gaps, 64, r) for r in (3, 4, 5, 6)] == [32, 23, 21, 23]
    body, fmt = q.sparse_body_bits(nonzero, 8)
    assert body.tolist() == [2 + 21 + 2 * 8] and q.CODING_FORMATS[fmt[0]] == "run_length"  # bitmask: 64 + 16
    # a tensor with no zeros is sent dense (fc5's logits): 2 + 4 x 8
    body, fmt = q.sparse_body_bits(np.ones((1, 4), bool), 8)
    assert body.tolist() == [2 + 32] and q.CODING_FORMATS[fmt[0]] == "dense"


def test_rows_are_coded_independently():
    nonzero = np.zeros((3, 64), bool)
    nonzero[0, [10, 40]] = True
    nonzero[1, :] = True
    body, _ = q.sparse_body_bits(nonzero, 8)
    assert body.tolist() == [39, 2 + 64 * 8, 2 + 7 + 4 + 0]  # row 2: no non-zero, header only (r = 1)


def test_int8_weights_per_row_by_hand():
    w = torch.tensor([[0.5, -1.27, 0.001, 0.02], [0.0, 0.0, 0.0, 0.0]])
    # row 0: scale 1.27 / 127 = 0.01: 50, -127, 0 (0.1 rounds to 0: a new zero), 2
    weight, scale = q.symmetric_per_row(w, 8)
    np.testing.assert_allclose(weight.numpy(), [[0.5, -1.27, 0.0, 0.02], [0, 0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(scale.numpy(), [0.01, 1.0])


def test_int8_client_of_a_tiny_model_by_hand():
    from pipeline.deployment import cut_outputs, deploy
    from pipeline.model import SplitCNN
    torch.manual_seed(0)
    model = SplitCNN((2, 2, 2, 2), (3, 3, 3, 3, 10))
    calibration = torch.randn(20, 1, 28, 28)
    dep = deploy(model, "int8", 32, "per_tensor", calibration)
    # activation ranges: min/max (holding 0) of the fp32 model's tensors on the calibration images
    ref = cut_outputs(model, calibration)
    x_q = dep.activations[0]
    assert float(x_q.lo) == pytest.approx(float(calibration.min()))
    assert float(x_q.hi) == pytest.approx(float(calibration.max()))
    conv1_q = dep.activations[1]
    assert float(conv1_q.lo) == 0.0 and float(conv1_q.hi) == pytest.approx(float(ref[1].max()))
    assert set(dep.activations) == {0, 1, 3, 5, 7, 9, 10, 11, 12, 13}  # input, conv and fc outputs, not pools
    # conv1 as an int8 client computes it, by hand: quantised input, per-filter int8 weights,
    # bias on the accumulator grid s_w * s_x, ReLU, requantised to its output range
    conv = model.layers.conv1
    w = conv.weight.detach().double()
    s_w = w.reshape(2, -1).abs().amax(1) / 127
    w_q = (torch.round(w / s_w[:, None, None, None]) * s_w[:, None, None, None]).float()
    grid = s_w * float(x_q.scale)
    b_q = (torch.round(conv.bias.detach().double() / grid) * grid).float()
    x = torch.randn(3, 1, 28, 28)
    s_x, z_x = float(x_q.scale), float(x_q.zero_point)
    x_hat = ((torch.clamp(torch.round(x.double() / s_x) + z_x, 0, 255) - z_x) * s_x).float()
    y = torch.relu(torch.nn.functional.conv2d(x_hat, w_q, b_q, padding=2))
    s_y = float(conv1_q.hi) / 255
    expected = (torch.clamp(torch.round(y.double() / s_y), 0, 255) * s_y).float()
    got = dep.client_outputs(x)[1]
    assert torch.allclose(got, expected, atol=1e-6)
    assert len(torch.unique(got)) <= 256
    # the deployed client's weights are what the energy tables count: int8 rounding can add zeros
    assert torch.allclose(dep.client.layers.conv1.weight, w_q)
    assert dep.server is model and torch.equal(model.layers.conv1.weight, conv.weight)  # the server stays fp32


def test_fp16_client_rounds_weights_and_activations():
    from pipeline.deployment import deploy
    from pipeline.model import SplitCNN
    torch.manual_seed(0)
    model = SplitCNN((2, 2, 2, 2), (3, 3, 3, 3, 10))
    dep = deploy(model, "fp16", 32, "per_tensor", torch.randn(4, 1, 28, 28))
    assert torch.equal(dep.client.layers.fc1.weight, model.layers.fc1.weight.half().float())
    out = dep.client_outputs(torch.randn(2, 1, 28, 28))[1]
    assert torch.equal(out, out.half().float())


def test_int8_macs_accumulate_in_int32_and_fetch_a_quarter_word():
    # 10 MACs, 2 bias adds, 3 ReLU comparisons; int8: mul 0.2 pJ, int8 add 0.03 pJ, int32 add 0.1 pJ
    layer = LayerCounts("fc1", "fc", 4, 3, macs=10, bias_adds=2, relu_ops=3, pool_reads=0, pool_comparisons=0,
                        params=12, nnz_params=12, stored_bits=96, storage_format="nonzero")
    costs = EnergyCosts(0.2e-12, 0.03e-12, {"1MB": 100e-12}, memory_model="per_mac", operand_fetches=2.0,
                        operand_level="1MB", weight_memory="1MB", e_acc_add_j=0.1e-12, operand_bits=8)
    e = layer_energies([layer], costs, "1MB")
    # E_c = 10 x 0.2 + (10 + 2) x 0.1 + 3 x 0.03 = 3.29 pJ; E_m = 2 x 10 fetches x 100 pJ x 8/32 = 500 pJ
    assert e["computation_j"][0] == pytest.approx(3.29e-12, rel=1e-9, abs=0)
    assert e["memory_j"][0] == pytest.approx(500e-12, rel=1e-9, abs=0)
    fp32 = EnergyCosts(3.7e-12, 0.9e-12, {"1MB": 100e-12}, memory_model="per_mac", operand_level="1MB",
                       weight_memory="1MB")
    # the paper's fp32: one full access per operand
    assert layer_energies([layer], fp32, "1MB")["memory_j"][0] == pytest.approx(2000e-12, rel=1e-9, abs=0)


def test_payloads_per_inference_reach_eq4():
    # constant rate 1000 bit/s in 1 s blocks: tau = bits / 1000, row by row
    rates = np.full(20, 1000.0)
    tau = transmission_time_s(cumulative_bits(rates, 1.0), rates, 1.0, np.array([0.0, 1.0]),
                              np.array([[100.0, 500.0], [300.0, 0.0]]))
    np.testing.assert_allclose(tau, [[0.1, 0.5], [0.3, 0.0]])


def _scenario(n, gain=1.0):
    route = Route(np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros(2), 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0)
    return Scenario(route, np.arange(n, dtype=float), np.zeros((n, 2)), np.full(1000, gain))


def test_sparse_tables_and_the_accuracy_restriction_in_ps():
    names = ["input", "pool1", "fc5"]
    kw = dict(bits_per_element=8, input_bits_per_element=8, candidates="layers+input",
              fixed_cuts_send_index=False, client_macs_per_s=None)
    # per inference bodies (N = 2): the raw image 784 x 8; pool1 depends on the image; fc5 dense
    body = np.array([[6272, 40, 82], [6272, 4000, 82]])
    table = cut_table(names, [0.0, 1e-6, 2e-6], [784, 100, 10], np.zeros(3), {}, body_bits=body,
                      expected_body_bits=[6272, 2020, 82], **kw)
    np.testing.assert_array_equal(table.bits, body + 2)  # ceil(log2 3) = 2 index bits for PS
    np.testing.assert_array_equal(table.bits_fixed, body)
    np.testing.assert_array_equal(table.decision_bits, [6274, 2022, 84])
    link, timing = Link(1e3, 1e-3, 1e-9), Timing(100.0, 100.0, "complete", False)
    rate = 1e3 * np.log2(1 + 1e-3 / (1e-9 * 1e3))
    _, res = run_methods(table, table, _scenario(2), link, timing, methods=("ps",))
    # E = E_p + P bits / R: inference 0 -> pool1 (1e-6 + 1e-3 x 42 / 9967); 1 -> fc5 (2e-6 + 1e-3 x 84 / 9967)
    assert res["ps"].choice.tolist() == [1, 2]
    assert res["ps"].transmission_j[0] == pytest.approx(1e-3 * 42 / rate)
    # pool1 loses 0.6 pp against the unquantised model (cut input): out at max_accuracy_drop 0.005
    accuracy = np.array([0.97, 0.964, 0.969])
    accurate = accurate_cuts(accuracy, accuracy[0], 0.005)
    assert accurate.tolist() == [True, False, True]
    assert accurate_cuts(accuracy, accuracy[0], 0.006).tolist() == [True, True, True]
    restricted = cut_table(names, [0.0, 1e-6, 2e-6], [784, 100, 10], np.zeros(3), {}, body_bits=body,
                           accuracy=accuracy, accurate=accurate, **kw)
    _, res = run_methods(restricted, restricted, _scenario(2), link, timing, methods=("ps", "pool1"))
    assert res["ps"].choice.tolist() == [2, 2]
    assert res["pool1"].choice.tolist() == [1, 1]  # a fixed cut is sent whatever its accuracy
    # no candidate accurate enough: the most accurate candidates remain
    allowed = np.array([False, True, True])
    assert restrict(allowed, np.array([True, False, False]), accuracy).tolist() == [False, False, True]


def test_route_images_cycle_a_seeded_permutation():
    images = route_images(7, 3, seed=0)
    perm = np.random.default_rng(0).permutation(3)
    assert images.tolist() == [*perm, *perm, perm[0]]
    assert route_images(7, 3, seed=0).tolist() == images.tolist()
