import numpy as np
import pytest

from pipeline.energy import (
    FP32_ADD_J,
    FP32_MUL_J,
    EnergyCosts,
    LayerCounts,
    LayerShape,
    choose_storage,
    computation_energy_j,
    conv_mac_count,
    csr_entries,
    cut_names,
    cut_out_elements,
    cut_processing_j,
    element_access_energy_j,
    layer_energies,
    layer_energies_j,
    memory_energy_j,
    op_counts,
    pool_counts,
    processing_energy_per_cut_j,
    smallest_level,
    storage_bits,
)

E_ADD_J = 0.9e-12  # Table I, fp32 add
E_MUL_J = 3.7e-12  # Table I, fp32 multiply


def small_conv():
    # 1 input channel 6x6 -> 2 output channels 4x4 (3x3 kernel), pruned to 3 weights and 2 biases
    return LayerShape("conv1", "conv", in_elements=36, out_elements=32, out_positions=16,
                      nnz_weights=3, nnz_biases=2, relu=True)


def small_fc(relu=False):
    # 32 -> 4 neurons, pruned to 5 weights and 1 bias
    return LayerShape("fc1", "fc", in_elements=32, out_elements=4, out_positions=1,
                      nnz_weights=5, nnz_biases=1, relu=relu)


def test_table_one_constants():
    assert FP32_ADD_J == 0.9e-12
    assert FP32_MUL_J == 3.7e-12


def test_op_counts_pruned_conv():
    # M = 3 weights * 16 positions; A = 3*16 (accumulate) + 2*16 (bias) + 32 (ReLU per output element)
    assert op_counts(small_conv()) == (48, 48 + 32 + 32)


def test_op_counts_pruned_fc_with_and_without_relu():
    assert op_counts(small_fc(relu=False)) == (5, 5 + 1)
    assert op_counts(small_fc(relu=True)) == (5, 5 + 1 + 4)


def test_op_counts_pool_comparisons():
    # 2x2 max-pool of 2 channels 4x4 -> 2x2x2 = 8 outputs, 3 comparisons each
    pool = LayerShape("pool1", "pool", in_elements=32, out_elements=8, out_positions=4,
                      nnz_weights=0, nnz_biases=0, relu=False, pool_window=4)
    assert op_counts(pool) == (0, 3 * 8)


def test_computation_energy_eq1():
    assert computation_energy_j(48, 112, E_MUL_J, E_ADD_J) == pytest.approx(48 * 3.7e-12 + 112 * 0.9e-12, rel=1e-12)
    got = computation_energy_j(np.array([0, 10]), np.array([4, 0]), E_MUL_J, E_ADD_J)
    np.testing.assert_allclose(got, [4 * 0.9e-12, 10 * 3.7e-12], rtol=1e-12)


def test_memory_energy_eq2_and_table_two_per_element():
    assert memory_energy_j(6, 50e-12) == pytest.approx(300e-12, rel=1e-12)
    assert element_access_energy_j(2.6e-9, 32) == pytest.approx(1.3e-9, rel=1e-12)  # DRAM, fp32
    assert element_access_energy_j(20e-12, 16) == pytest.approx(5e-12, rel=1e-12)  # 32 KB cache, fp16


def test_processing_energy_per_cut_two_layer_toy():
    e_m = 100e-12 * 32 / 64  # Table II 1 MB cache per 64-bit access, fp32 elements -> 50 pJ
    conv_j = 48 * 3.7e-12 + 112 * 0.9e-12 + (3 + 2) * 50e-12
    fc_j = 5 * 3.7e-12 + 6 * 0.9e-12 + (5 + 1) * 50e-12
    layers = [small_conv(), small_fc()]

    got = processing_energy_per_cut_j(layers, E_MUL_J, E_ADD_J, e_m)
    np.testing.assert_allclose(got, [0.0, conv_j, conv_j + fc_j], rtol=1e-12)
    assert got[0] == 0.0  # cut "input": nothing runs on the client

    parts = layer_energies_j(layers, E_MUL_J, E_ADD_J, e_m)
    np.testing.assert_array_equal(parts["mults"], [48, 5])
    np.testing.assert_array_equal(parts["adds"], [112, 6])
    np.testing.assert_allclose(parts["computation_j"], [48 * 3.7e-12 + 112 * 0.9e-12, 5 * 3.7e-12 + 6 * 0.9e-12],
                               rtol=1e-12)
    np.testing.assert_allclose(parts["memory_j"], [5 * 50e-12, 6 * 50e-12], rtol=1e-12)
    np.testing.assert_allclose(parts["processing_j"], [conv_j, fc_j], rtol=1e-12)


def test_activation_charging():
    e_m, e_act = 50e-12, 2e-12
    conv_j = 48 * 3.7e-12 + 112 * 0.9e-12 + 5 * 50e-12 + (36 + 32) * 2e-12
    fc_j = 5 * 3.7e-12 + 6 * 0.9e-12 + 6 * 50e-12 + (32 + 4) * 2e-12
    got = processing_energy_per_cut_j([small_conv(), small_fc()], E_MUL_J, E_ADD_J, e_m, e_activation_j=e_act)
    np.testing.assert_allclose(got, [0.0, conv_j, conv_j + fc_j], rtol=1e-12)


def test_cut_names_and_elements():
    layers = [small_conv(), small_fc()]
    assert cut_names(layers) == ["input", "conv1", "fc1"]
    np.testing.assert_array_equal(cut_out_elements(layers), [36, 32, 4])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="relu"), "kind must be one of"),
        (dict(nnz_weights=-1), "nnz_weights must be an integer >= 0"),
        (dict(out_positions=0), "out_positions must be an integer >= 1"),
        (dict(out_elements=2.5), "out_elements must be an integer"),
        (dict(kind="pool"), "pool layer has no parameters"),
    ],
)
def test_layer_shape_rejects_bad_fields(kwargs, match):
    base = dict(name="conv1", kind="conv", in_elements=36, out_elements=32, out_positions=16,
                nnz_weights=3, nnz_biases=2, relu=True)
    with pytest.raises(ValueError, match=match):
        LayerShape(**{**base, **kwargs})


@pytest.mark.parametrize("bad", [-1e-12, float("nan"), float("inf")])
def test_energy_costs_rejected(bad):
    with pytest.raises(ValueError, match="energy.e_mul_j"):
        computation_energy_j(1, 1, bad, E_ADD_J)
    with pytest.raises(ValueError, match="energy.e_weight_j"):
        layer_energies_j([small_fc()], E_MUL_J, E_ADD_J, bad)
    with pytest.raises(ValueError, match="energy.e_activation_j"):
        layer_energies_j([small_fc()], E_MUL_J, E_ADD_J, 1e-12, e_activation_j=bad)
    with pytest.raises(ValueError, match="energy.access_64bit_j"):
        element_access_energy_j(bad, 32)


def test_bits_per_element_rejected():
    with pytest.raises(ValueError, match="energy.bits_per_element"):
        element_access_energy_j(10e-12, 0)


# -- counting rules, storage and memory models (issue 9, items 3 and 5) ----------------------------
TABLE_II_J = {"8KB": 10e-12, "32KB": 20e-12, "1MB": 100e-12, "DRAM": 1300e-12}  # per 64-bit access
CAPACITY_BYTES = {"8KB": 8192, "32KB": 32768, "1MB": 1048576, "DRAM": None}


def test_conv_macs_padded_and_exact_3x3():
    # one 3x3 kernel, all 9 weights non-zero, on a 4x4 image padded by 1 (output 4x4).
    # padded: 9 weights x 16 positions = 144.
    # exact: corner taps reach 3x3 outputs (9 each, 4 corners = 36), edge taps 3x4 (12 each, 4 edges = 48),
    # the centre tap all 16: 36 + 48 + 16 = 100.
    ones = np.ones((3, 3), dtype=int)
    assert conv_mac_count(ones, 4, 4, padding=1, exact=False) == 144
    assert conv_mac_count(ones, 4, 4, padding=1, exact=True) == 100
    # only the top-left tap, non-zero in 2 (in, out) channel pairs: 2 x 3 rows x 3 cols = 18
    corner = np.zeros((3, 3), dtype=int)
    corner[0, 0] = 2
    assert conv_mac_count(corner, 4, 4, padding=1, exact=True) == 18
    assert conv_mac_count(corner, 4, 4, padding=1, exact=False) == 2 * 16


def test_conv_macs_padded_and_exact_5x5():
    # 5x5 kernel, all non-zero, on 3x3 padded by 2 (output 3x3). padded: 25 x 9 = 225.
    # exact: every output position is within 2 pixels of all 9 real pixels -> 9 taps each: 9 x 9 = 81.
    ones = np.ones((5, 5), dtype=int)
    assert conv_mac_count(ones, 3, 3, padding=2, exact=False) == 225
    assert conv_mac_count(ones, 3, 3, padding=2, exact=True) == 81
    # 4x4 input (the paper's conv4): taps per axis 2, 3, 4, 3, 2 -> (2 + 3 + 4 + 3 + 2)^2 = 196 vs 25 x 16 = 400
    assert conv_mac_count(ones, 4, 4, padding=2, exact=True) == 196
    assert conv_mac_count(ones, 4, 4, padding=2, exact=False) == 400


def test_pool_counts_ceil_mode_edges():
    # 7x7 -> 4x4 with 2x2/2: nine 2x2 windows, three 2x1, three 1x2, one 1x1.
    # exact: reads 9*4 + 3*2 + 3*2 + 1 = 49; comparisons 9*3 + 3*1 + 3*1 + 0 = 33.
    assert pool_counts(7, 7, 2, 2, exact=True) == (49, 33)
    # padded: 16 windows x 4 reads, x 3 comparisons
    assert pool_counts(7, 7, 2, 2, exact=False) == (64, 48)
    # even sizes have no edge windows: 28x28 -> 14x14, 784 reads, 196 x 3 comparisons
    assert pool_counts(28, 28, 2, 2, exact=True) == pool_counts(28, 28, 2, 2, exact=False) == (784, 588)


def test_storage_bitmask_vs_csr_by_hand():
    # 2 x 10 mask, relative index b = 2 bits (gaps up to 3), 8-bit values.
    mask = np.zeros((2, 10), dtype=bool)
    mask[0, [0, 5, 9]] = True  # gaps 0, 4, 3 -> 4 // 4 = 1 filler zero
    mask[1, 8] = True  # gap 8 -> 8 // 4 = 2 fillers (at cols 3 and 7), then the value at gap 0
    assert csr_entries(mask, 2) == 4 + 3
    bits = storage_bits(mask, value_bits=8, index_bits=2)
    assert bits["nonzero"] == 4 * 8
    assert bits["dense"] == 20 * 8
    assert bits["bitmask"] == 20 + 4 * 8  # 1 bit per parameter + the 4 values
    # 7 entries x (8 + 2) bits + 3 row pointers of ceil(log2(7 + 1)) = 3 bits
    assert bits["csr"] == 7 * 10 + 3 * 3
    assert choose_storage(bits, "auto") == ("bitmask", 52)
    assert choose_storage(bits, "nonzero") == ("nonzero", 32)
    assert choose_storage(bits, "dense") == ("dense", 160)


def test_storage_csr_wins_when_very_sparse():
    mask = np.zeros((1, 64), dtype=bool)
    mask[0, 2] = True  # one entry, gap 2 < 2^5
    bits = storage_bits(mask, value_bits=32, index_bits=5)
    # csr: 1 x (32 + 5) + 2 pointers x ceil(log2 2) = 1 bit; bitmask 64 + 32; dense 64 x 32
    assert (bits["csr"], bits["bitmask"], bits["dense"]) == (39, 96, 2048)
    assert choose_storage(bits, "auto") == ("csr", 39)


def test_smallest_level_holds_the_weights():
    assert smallest_level(8192, CAPACITY_BYTES) == "8KB"  # exactly full still fits
    assert smallest_level(8193, CAPACITY_BYTES) == "32KB"
    assert smallest_level(33_262 * 4, CAPACITY_BYTES) == "1MB"  # a pruned model, ~133 kB
    assert smallest_level(433_274 * 4, CAPACITY_BYTES) == "DRAM"  # the dense fp32 model, 1.73 MB
    with pytest.raises(ValueError, match="no memory level"):
        smallest_level(1e9, {"8KB": 8192})


def counts(name, kind="fc", macs=10, stored_bits=64, pool_reads=0, comparisons=0, in_elements=4, out_elements=2):
    pool = kind == "pool"  # no bias, no ReLU
    return LayerCounts(name, kind, in_elements, out_elements, macs=macs, bias_adds=0 if pool else 2,
                       relu_ops=0 if pool else out_elements,
                       pool_reads=pool_reads, pool_comparisons=comparisons, params=12, nnz_params=12,
                       stored_bits=stored_bits, storage_format="dense")


def test_per_mac_memory_model():
    costs = EnergyCosts(E_MUL_J, E_ADD_J, TABLE_II_J, memory_model="per_mac", operand_fetches=2, operand_level="1MB")
    layers = [counts("conv1", "conv", macs=10), counts("pool1", "pool", macs=0, pool_reads=8, comparisons=6)]
    got = layer_energies(layers, costs, "DRAM")  # the weight level is ignored: operands come from 1 MB
    # conv1: 10 MACs x (3.7 + 0.9 + 2 x 100) pJ + (2 bias adds + 2 ReLU) x 0.9 pJ
    # pool1: 8 reads x 100 pJ + 6 comparisons x 0.9 pJ
    np.testing.assert_allclose(got["processing_j"], [(10 * 204.6 + 4 * 0.9) * 1e-12, (800 + 6 * 0.9) * 1e-12],
                               rtol=1e-12)
    np.testing.assert_allclose(got["memory_j"], [2000e-12, 800e-12], rtol=1e-12)


def test_weights_memory_model_auto_level_per_cut():
    costs = EnergyCosts(E_MUL_J, E_ADD_J, TABLE_II_J, memory_model="weights", weight_memory="auto",
                        capacity_bytes=CAPACITY_BYTES)
    # 8 KB = 65,536 bits: layer a alone fits 8 KB, a + b needs 32 KB
    layers = [counts("a", stored_bits=60_000), counts("b", stored_bits=60_000)]
    comp_j = 10 * 3.7e-12 + (10 + 2 + 2) * 0.9e-12
    processing, levels = cut_processing_j(layers, costs)
    assert levels == ["", "8KB", "32KB"]
    # cut a: 60,000 bits / 64 x 10 pJ; cut b: both layers' bits at 32 KB's 20 pJ (not a running sum)
    np.testing.assert_allclose(processing, [0.0, comp_j + 60_000 / 64 * 10e-12,
                                            2 * comp_j + 120_000 / 64 * 20e-12], rtol=1e-12)
    fixed = EnergyCosts(E_MUL_J, E_ADD_J, TABLE_II_J, memory_model="weights", weight_memory="DRAM")
    processing, levels = cut_processing_j(layers, fixed)
    np.testing.assert_allclose(processing[1:], np.cumsum([comp_j + 60_000 / 64 * 1300e-12] * 2), rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(memory_model="cache"), "energy.memory_model"),
    (dict(operand_level="2MB"), "energy.per_mac.level"),
    (dict(weight_memory="L3"), "energy.weight_memory"),
    (dict(weight_memory="auto"), "energy.memory_capacity_bytes"),
    (dict(operand_fetches=-1), "energy.per_mac.operand_fetches"),
])
def test_energy_costs_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyCosts(E_MUL_J, E_ADD_J, TABLE_II_J, **kwargs)


def test_layer_counts_rejects_bad_fields():
    with pytest.raises(ValueError, match="macs must be an integer >= 0"):
        counts("a", macs=-1)
    with pytest.raises(ValueError, match="storage_format"):
        LayerCounts("a", "fc", 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, storage_format="zip")
