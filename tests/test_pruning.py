import math

import pytest
import torch

from pipeline.model import SplitCNN, build_model, count_nonzero
from pipeline.pruning import (
    apply_masks, compression_ratio, layer_table, layer_thresholds, magnitude_masks, prune, remove_dead_units,
)
from pipeline.stages import prune_only
from tests.conftest import compose_cfg


def small_model(seed=0):
    torch.manual_seed(seed)
    return SplitCNN((4, 5, 6, 7), (12, 10, 9, 8, 10))


def test_masks_keep_exactly_the_large_parameters():
    model = small_model()
    with torch.no_grad():
        model.layers.fc5.weight.copy_(torch.tensor([[0.5, -0.01, 0.2, -0.3, 0.0, 0.05, 0.1, -0.09]] * 10))
    masks = magnitude_masks(model, 0.1)
    # |w| >= 0.1 keeps 0.5, 0.2, -0.3, 0.1 -> [1, 0, 1, 1, 0, 0, 1, 0]
    assert masks["layers.fc5.weight"][0].tolist() == [1, 0, 1, 1, 0, 0, 1, 0]
    per_layer = magnitude_masks(model, 0.1, {"fc5": 0.25})
    assert per_layer["layers.fc5.weight"][0].tolist() == [1, 0, 0, 1, 0, 0, 0, 0]


def test_std_mode_threshold_is_q_times_the_layer_weight_std():
    model = small_model()
    with torch.no_grad():
        # in units of 0.05: [4, -2, -2, 2, -2, 0, 0, 0] -> mean 0, squares 16 + 4*4 = 32 over 8 values:
        # variance 4 units^2 = 0.01, std 0.1 (population std, the same for the ten identical rows)
        model.layers.fc5.weight.copy_(torch.tensor([[0.2, -0.1, -0.1, 0.1, -0.1, 0.0, 0.0, 0.0]] * 10))
        model.layers.fc5.bias.copy_(torch.tensor([0.16, -0.14, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    thresholds = layer_thresholds(model, 1.5, mode="std")
    assert thresholds["fc5"] == pytest.approx(1.5 * 0.1)  # 0.15
    masks = magnitude_masks(model, 1.5, mode="std")
    # |w| >= 0.15 keeps only 0.2; the bias uses its layer's weight-based threshold: 0.16 stays, -0.14 goes
    assert masks["layers.fc5.weight"][0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert masks["layers.fc5.bias"][:2].tolist() == [1, 0]
    # per-layer q overrides the global one: 0.9 * 0.1 = 0.09 keeps 0.2 and the four +-0.1
    per_layer = magnitude_masks(model, 1.5, {"fc5": 0.9, "fc4": None}, mode="std")
    assert per_layer["layers.fc5.weight"][0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    # the other layers: 1.5 * their own std
    fc4 = model.layers.fc4.weight.detach()
    assert thresholds["fc4"] == pytest.approx(1.5 * math.sqrt(float((fc4 - fc4.mean()).pow(2).mean())))
    # absolute mode is the value itself
    assert layer_thresholds(model, 0.15)["fc5"] == 0.15


def _kept_fraction(model: SplitCNN, pruned: SplitCNN) -> dict[str, float]:
    return {r.layer: r.nnz_pruned / r.params_dense for r in layer_table(model, pruned) if r.kind != "pool"}


@pytest.mark.parametrize("mode", ["default", "absolute"])
def test_default_pruning_keeps_part_of_every_layer_of_an_untrained_cnn(mode):
    """The 9.8% collapse of a 2-epoch training, caught without training.

    PyTorch initialises a layer as U(-b, b), b = 1/sqrt(fan_in): std = b / sqrt(3), so the
    default q = 1.6 keeps |w| >= q b / sqrt(3), a fraction 1 - q / sqrt(3) = 1 - 1.6 / 1.732 = 7.6%
    of every layer (71% for fc5's q = 0.5, all of conv1's q = 0). The paper-style absolute thresholds
    lie above the whole range of fc1 (0.08 > 1/sqrt(256) = 0.0625), fc2 (0.08 > 1/sqrt(512) =
    0.044) and conv4 (0.03 > 1/sqrt(48*25) = 0.029): nothing of them survives.
    """
    overrides = [] if mode == "default" else [
        "prune.mode=absolute", "prune.threshold=0.03", "prune.per_layer.fc1=0.08", "prune.per_layer.fc2=0.08",
        "prune.per_layer.conv1=null", "prune.per_layer.fc5=null"]
    cfg = compose_cfg("train", overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model.conv_channels, cfg.model.fc_units)
    kept = _kept_fraction(model, prune_only(cfg, model))
    if mode == "default":
        assert min(kept.values()) >= 0.06, kept
        assert kept["fc1"] == pytest.approx(1 - 1.6 / math.sqrt(3), abs=0.005)  # 131k weights: +-0.1%
    else:
        assert kept["fc1"] == kept["fc2"] == kept["conv4"] == 0.0, kept


def test_compression_ratio_on_a_hand_built_tensor():
    model = SplitCNN((1, 1, 1, 1), (1, 1, 1, 1, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    dense_nnz = count_nonzero(model)
    # conv1 25+1, conv2..4 25+1 each, fc1 4+1, fc2..fc5 1+1 each
    assert dense_nnz == 4 * 26 + 5 + 4 * 2
    with torch.no_grad():
        model.layers.fc1.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0]]))
        model.layers.conv1.weight.zero_()
    pruned_nnz = count_nonzero(model)
    assert pruned_nnz == dense_nnz - 2 - 25
    assert compression_ratio(dense_nnz, pruned_nnz) == 117 / 90


def test_dead_units_are_removed_and_logits_unchanged():
    model = small_model(1)
    with torch.no_grad():
        model.layers.conv2.weight[1].zero_(); model.layers.conv2.bias[1] = -0.3   # dead in, ReLU(b)=0
        model.layers.conv3.weight[:, 2].zero_()                                  # conv2 ch 2 unread
        model.layers.conv4.weight[3].zero_(); model.layers.conv4.bias[3] = 0.7   # constant into fc1: fold
        model.layers.conv3.weight[4].zero_(); model.layers.conv3.bias[4] = 0.4   # constant into a conv: keep
        model.layers.fc2.weight[5].zero_(); model.layers.fc2.bias[5] = 0.2       # constant neuron: fold
        model.layers.fc4.weight[:, 6].zero_()                                    # fc3 unit 6 unread
    x = torch.randn(4, 1, 28, 28)
    cleaned = remove_dead_units(model)
    assert cleaned.conv_channels == (4, 3, 6, 6)
    assert cleaned.fc_units == (12, 9, 8, 8, 10)
    assert torch.allclose(cleaned(x), model(x), atol=1e-5)
    # removing a unit shrinks what is sent at that cut
    assert cleaned.client(x, "pool2").shape[1] == 3


def test_prune_cascades_and_matches_masked_model():
    model = small_model(2)
    masked = small_model(2)
    apply_masks(masked, magnitude_masks(masked, 0.08))
    pruned = prune(model, 0.08)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(pruned(x), masked(x), atol=1e-5)
    assert count_nonzero(pruned) <= count_nonzero(masked) + sum(pruned.fc_units)  # folded biases only
    rows = layer_table(model, pruned)
    assert [r.layer for r in rows] == model.cut_names[1:]
    assert all(r.out_elements_pruned <= r.out_elements_dense for r in rows)
    fc1 = next(r for r in rows if r.layer == "fc1")
    assert fc1.params_dense == (7 * 4 + 1) * 12 and fc1.out_elements_dense == 12


def test_everything_pruned_keeps_one_unit_per_layer_and_terminates():
    model = small_model(3)
    pruned = prune(model, 1e9)  # every parameter is zeroed
    assert pruned.conv_channels == (1, 1, 1, 1) and pruned.fc_units == (1, 1, 1, 1, 10)
    assert count_nonzero(pruned) == 0
    assert torch.equal(pruned(torch.randn(2, 1, 28, 28)), torch.zeros(2, 10))
