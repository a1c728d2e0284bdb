import numpy as np
import pytest

from pipeline.energy import (
    FP32_ADD_J,
    FP32_MUL_J,
    LayerShape,
    computation_energy_j,
    cut_names,
    cut_out_elements,
    element_access_energy_j,
    layer_energies_j,
    memory_energy_j,
    op_counts,
    processing_energy_per_cut_j,
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
