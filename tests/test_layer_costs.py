"""The bridge from the torch model and the energy config to per-cut E_p: pinned on the real paper CNN."""
import copy
from functools import lru_cache

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from pipeline.config import ConfigError
from pipeline.config import validate_energy
from pipeline.layer_costs import layer_counts, processing_table
from pipeline.model import SplitCNN, count_nonzero
from tests.conftest import compose_cfg

REALISTIC = ["energy.memory_model=weights", "energy.weight_memory=auto", "energy.conv_macs=exact",
             "energy.pool_windows=exact", "energy.weight_storage=auto"]


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    model = SplitCNN()
    assert count_nonzero(model) == 433_274  # random init: every weight and bias non-zero
    return model


@lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]):
    return compose_cfg("evaluate", list(overrides))


def energy_cfg(overrides=()):
    cfg = _composed(tuple(overrides))
    validate_energy(cfg)
    return cfg.energy


def _with(overrides):
    """The default evaluate config with key=value overrides applied (values parsed as YAML)."""
    cfg = copy.deepcopy(_composed(()))
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)
    return cfg


def test_pool1_per_mac_matches_the_papers_66_uj(dense):
    """Paper scenario (memory_model=per_mac, padded MACs): Pool-1 E_p = conv1 + pool1."""
    table = processing_table(dense, energy_cfg())
    conv1_macs = 16 * 25 * 28 * 28  # 313,600: 16 filters x 25 taps x 784 positions, padding included
    conv1_pj = (conv1_macs * (3.7 + 0.9 + 2 * 100)  # fp32 mul + add + 2 operand fetches at 1 MB (Table II)
                + 16 * 784 * 0.9  # bias adds, 12,544
                + 16 * 784 * 0.9)  # ReLU, one comparison per output element
    pool1_pj = 16 * 28 * 28 * 100 + 16 * 14 * 14 * 3 * 0.9  # each window element read once + 3 comparisons
    assert conv1_pj + pool1_pj == pytest.approx(65_448_006.4)  # 65.4 uJ vs the paper's 66 uJ
    assert table.processing_j[table.index("pool1")] == pytest.approx((conv1_pj + pool1_pj) * 1e-12, rel=1e-12)
    assert table.processing_j[0] == 0.0 and table.out_elements[0] == 784
    assert table.macs[table.index("pool1")] == conv1_macs
    assert list(table.layers["memory_level"]) == ["1MB"] * 13


@pytest.mark.parametrize("pool, comparisons", [
    ("padded", 3 * (3136 + 1568 + 768 + 256)),  # 17,184: 3 per pooled output
    ("exact", 3 * 3136 + 3 * 1568 + 48 * 33 + 3 * 256),  # 16,464: pool3's 7x7 -> 4x4 has 33 per channel
])
def test_dense_full_pass_exact_macs_dram_weights(dense, pool, comparisons):
    """Issue 9: "with exact MACs and DRAM weights the dense full pass is 302.76 uJ" (both pool rules)."""
    table = processing_table(dense, energy_cfg(["energy.memory_model=weights", "energy.weight_memory=DRAM",
                                                "energy.conv_macs=exact", f"energy.pool_windows={pool}"]))
    # exact conv MACs = c_in * c_out * (sum of real taps per axis)^2, taps of a 5x5 'same' conv on H:
    # H=28: 26+27+28+27+26 = 134; H=14: 64; H=7: 29; H=4: 14
    conv_macs = 1 * 16 * 134**2 + 16 * 32 * 64**2 + 32 * 48 * 29**2 + 48 * 64 * 14**2  # 4,278,336
    fc_macs = 256 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 10  # 303,744
    bias_adds = (16 * 784 + 32 * 196 + 48 * 49 + 64 * 16) + (512 + 256 + 128 + 64 + 10)  # 23,162
    relu = (16 * 784 + 32 * 196 + 48 * 49 + 64 * 16) + (512 + 256 + 128 + 64)  # 23,152
    macs = conv_macs + fc_macs
    memory_pj = 433_274 * 1300 * 32 / 64  # every weight and bias once from DRAM, 0.65 nJ per fp32 element
    expected_pj = macs * 3.7 + (macs + bias_adds + relu + comparisons) * 0.9 + memory_pj
    assert expected_pj == pytest.approx({"padded": 302_762_816.2, "exact": 302_762_168.2}[pool])
    assert table.processing_j[-1] == pytest.approx(expected_pj * 1e-12, rel=1e-12)
    assert table.layers["processing_j"].sum() == pytest.approx(table.processing_j[-1], rel=1e-12)
    assert table.macs[-1] == macs


def test_exact_conv_macs_of_the_paper_cnn(dense):
    """1.39x fewer conv MACs overall, conv4 2.04x (issue 9, item 5)."""
    padded = processing_table(dense, energy_cfg())
    exact = processing_table(dense, energy_cfg(["energy.conv_macs=exact"]))
    conv = [padded.names.index(f"conv{i}") - 1 for i in range(1, 5)]
    np.testing.assert_array_equal(padded.layers["macs"][conv], [16 * 25 * 784, 512 * 25 * 196, 1536 * 25 * 49,
                                                                3072 * 25 * 16])
    np.testing.assert_array_equal(exact.layers["macs"][conv], [16 * 134**2, 512 * 64**2, 1536 * 29**2,
                                                               3072 * 14**2])
    assert padded.layers["macs"][conv].sum() / exact.layers["macs"][conv].sum() == pytest.approx(5_932_800 / 4_278_336)
    assert round(5_932_800 / 4_278_336, 2) == 1.39
    assert padded.layers["macs"][conv[3]] / exact.layers["macs"][conv[3]] == pytest.approx(400 / 196)  # 2.04


def _tiny_sparse_fc1():
    model = SplitCNN((2, 2, 2, 2), (3, 3, 3, 3, 10))  # fc1: 8 inputs -> 3 units, mask 3 x (8 + bias)
    with torch.no_grad():
        model.layers.fc1.weight.zero_()
        model.layers.fc1.bias.zero_()
        model.layers.fc1.weight[0, 0] = 1.0  # row 0: col 0, gap 0
        model.layers.fc1.bias[1] = 1.0  # row 1: the bias column 8, gap 8
        model.layers.fc1.weight[2, 7] = 1.0  # row 2: col 7, gap 7
    return model


def test_weight_storage_of_a_pruned_layer():
    counts = {c.name: c for c in layer_counts(_tiny_sparse_fc1(), energy_cfg(["energy.weight_storage=auto"]))}
    fc1 = counts["fc1"]
    # csr, 5-bit fc index (gaps <= 31, no fillers): 3 x (32 + 5) + 4 pointers x ceil(log2(3 + 1)) = 2 bits
    # bitmask: 27 + 3 x 32 = 123; dense 27 x 32 = 864
    assert (fc1.params, fc1.nnz_params, fc1.storage_format, fc1.stored_bits) == (27, 3, "csr", 3 * 37 + 4 * 2)
    assert counts["conv1"].storage_format == "dense"  # all non-zero: the values alone are cheapest
    # a 2-bit index needs fillers: gap 8 -> 2, gap 7 -> 1: 6 x 34 + 4 x ceil(log2 7) = 216 > bitmask 123
    two_bit = layer_counts(_tiny_sparse_fc1(), energy_cfg(["energy.weight_storage=auto", "energy.csr_index_bits.fc=2"]))
    assert [(c.storage_format, c.stored_bits) for c in two_bit if c.name == "fc1"] == [("bitmask", 123)]
    nonzero = layer_counts(_tiny_sparse_fc1(), energy_cfg())  # paper: eq. (2) as written
    assert [(c.storage_format, c.stored_bits) for c in nonzero if c.name == "fc1"] == [("nonzero", 3 * 32)]


def test_weight_memory_auto_per_cut(dense):
    table = processing_table(dense, energy_cfg(REALISTIC))
    # stored bytes up to each cut (fp32, dense format): conv1 416 x 4 = 1,664 -> 8KB; + conv2 -> 52,992 -> 1MB;
    # up to fc1 260,144 x 4 = 1,040,576 <= 1,048,576 -> 1MB; + fc2 -> DRAM
    assert table.weight_level == ["", "8KB", "8KB", *["1MB"] * 7, *["DRAM"] * 4]
    assert table.processing_j[1] == pytest.approx(
        (16 * 134**2 * 4.6 + 2 * 12_544 * 0.9 + 416 * 32 / 64 * 10) * 1e-12, rel=1e-12)  # conv1 from 8 KB SRAM
    assert table.layers["processing_j"].sum() == pytest.approx(table.processing_j[-1], rel=1e-12)
    pruned = SplitCNN()
    with torch.no_grad():
        for p in pruned.parameters():
            p.mul_(torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) >= 0.92)
    assert processing_table(pruned, energy_cfg(REALISTIC)).weight_level[-1] == "1MB"


def test_activation_preset_adds_input_and_output_traffic(dense):
    base = processing_table(dense, energy_cfg())
    act = processing_table(dense, energy_cfg(["energy=with_activations"]))
    # conv1 reads 784 pixels and writes 12,544 outputs at 1 MB SRAM: 100 pJ x 32/64 per element
    assert act.layers["processing_j"][0] - base.layers["processing_j"][0] == pytest.approx((784 + 12_544) * 50e-12)


@pytest.mark.parametrize("override, match", [
    ("energy.memory_model=cache", "energy.memory_model must be one of per_mac, weights"),
    ("energy.weight_memory=L3", "energy.weight_memory must be one of 8KB, 32KB, 1MB, DRAM, auto"),
    ("energy.per_mac.level=auto", "energy.per_mac.level must be one of"),
    ("energy.per_mac.operand_fetches=-1", r"energy.per_mac.operand_fetches must be in \[0, inf\)"),
    ("energy.conv_macs=same", "energy.conv_macs must be one of padded, exact"),
    ("energy.pool_windows=null", "energy.pool_windows must be one of padded, exact"),
    ("energy.weight_storage=csr", "energy.weight_storage must be one of nonzero, dense, auto"),
    ("energy.csr_index_bits.fc=0", r"energy.csr_index_bits.fc must be in \[1, 32\]"),
    ("energy.csr_index_bits.conv=4.5", "energy.csr_index_bits.conv must be an integer"),
    ("energy.memory_capacity_bytes.1MB=0", r"energy.memory_capacity_bytes.1MB must be in \(0, inf\)"),
    ("energy.precision=fp64", "energy.precision must be one of int8, fp16, int32, fp32"),
    ("energy.memory_pj_per_64bit.DRAM=-1", "energy.memory_pj_per_64bit.DRAM must be in"),
    ("energy.activation_memory=L2", "energy.activation_memory must be one of"),
])
def test_validate_energy_names_the_setting(override, match):
    with pytest.raises(ConfigError, match=match):
        validate_energy(_with([override]))


def test_validate_energy_auto_needs_an_unbounded_level():
    with pytest.raises(ConfigError, match="unbounded level"):
        validate_energy(_with(["energy.weight_memory=auto", "energy.memory_capacity_bytes.DRAM=1000000000"]))
    with pytest.raises(ConfigError, match="must name every level"):
        validate_energy(_with(["energy.memory_capacity_bytes.L3=1"]))
    validate_energy(_with(REALISTIC))  # the realistic settings pass
