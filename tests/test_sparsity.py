"""Compression beyond the paper's procedure (pipeline.sparsity): proximal L1, group L1, gradual
magnitude pruning, dead channels leaving the cut, their settings and the reuse cache's key."""
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from pipeline.config import ConfigError, validate_training
from pipeline.layer_costs import processing_table
from pipeline.model import SplitCNN
from pipeline.pruning import apply_masks, magnitude_masks, prune, remove_dead_units
from pipeline.sparsity import (
    GradualPruning, cubic_sparsity, group_norm_sum, group_shrink, keep_largest, proximal_step, soft_threshold,
)
from pipeline.training import fit, seed_everything, sparse_loss
from tests.conftest import compose_cfg
from tests.test_training import _toy_split


def test_soft_threshold_on_a_hand_made_vector():
    w = torch.tensor([0.5, -0.2, 0.05, -0.01, 0.0, 0.1])
    # sign(w) max(|w| - 0.1, 0): 0.4, -0.1, then everything within 0.1 of zero is exactly 0
    assert soft_threshold(w, 0.1).tolist() == pytest.approx([0.4, -0.1, 0.0, 0.0, 0.0, 0.0])
    assert (soft_threshold(w, 0.1)[2:] == 0).all()


def test_proximal_step_thresholds_each_weight_by_its_adam_step():
    """One Adam step (lr 0.01, bias-corrected: v_hat = g^2, so Adam moves each weight by
    lr g / (|g| + eps) = 0.01 sign(g)), then the prox with 1 - mu = 0.01:
    tau_i = lr (1 - mu) / (|g_i| + eps) = 1e-4 / |g_i|.

        w0    = [ 0.5,  -0.3,   0.02,  0.2 ]
        g     = [ 0.1,  -0.2,   0.5,   0   ]
        Adam  = [ 0.49, -0.29,  0.01,  0.2 ]
        tau   = [ 1e-3,  5e-4,  2e-4,  1e-4 / 1e-8 = 1e4 ]
        prox  = [ 0.489, -0.2895, 0.0098, 0 ]

    The weight the loss does not pull (g = 0) goes to exactly 0; a plain SGD-sized threshold
    lr (1 - mu) = 1e-4 would have left it at 0.1999."""
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.3, 0.02, 0.2]]))
    optimiser = torch.optim.Adam(layer.parameters(), lr=0.01)
    layer.weight.grad = torch.tensor([[0.1, -0.2, 0.5, 0.0]])
    optimiser.step()
    assert layer.weight[0].tolist() == pytest.approx([0.49, -0.29, 0.01, 0.2], abs=1e-6)
    proximal_step(layer, optimiser, l1=0.01, group_l1=0.0)
    assert layer.weight[0].tolist() == pytest.approx([0.489, -0.2895, 0.0098, 0.0], abs=1e-6)
    assert layer.weight[0, 3] == 0.0


def test_group_shrink_by_hand():
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    # norms 5, 0.5, 0; tau 1: factors 1 - 1/5 = 0.8, max(0, 1 - 1/0.5) = 0, and a zero row stays zero
    out = group_shrink(rows, torch.tensor([1.0, 1.0, 1.0]))
    assert out.flatten().tolist() == pytest.approx([2.4, 3.2, 0.0, 0.0, 0.0, 0.0])
    assert (out[1:] == 0).all()


def _zeroed_cnn():
    model = SplitCNN((2, 2, 2, 2), (3, 3, 3, 3, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_group_penalty_of_a_tiny_conv_by_hand():
    """Groups = a conv output channel (its 1x5x5 weights and bias) or an fc neuron (row + bias),
    every layer but fc5:
        conv1 channel 0: weights 3 and 4      -> sqrt(9 + 16) = 5
        conv1 channel 1: bias -2              -> 2
        fc1 neuron 0:    row [1, 2], bias 2   -> sqrt(1 + 4 + 4) = 3
        fc5:             a weight 7           -> not a group
    sum = 10; the L1 sum is 3 + 4 + 2 + 1 + 2 + 2 + 7 = 21."""
    model = _zeroed_cnn()
    with torch.no_grad():
        model.layers.conv1.weight[0, 0, 0, 0], model.layers.conv1.weight[0, 0, 2, 3] = 3.0, 4.0
        model.layers.conv1.bias[1] = -2.0
        model.layers.fc1.weight[0, :2] = torch.tensor([1.0, 2.0])
        model.layers.fc1.bias[0] = 2.0
        model.layers.fc5.weight[4, 1] = 7.0
    assert float(group_norm_sum(model)) == pytest.approx(10.0)
    # gamma per layer: 2 x conv1's (5 + 2) + 0.5 x fc1's 3; a layer not named weighs 0
    assert float(group_norm_sum(model, {"conv1": 2.0, "fc1": 0.5})) == pytest.approx(15.5)
    assert float(group_norm_sum(model, {"conv2": 1.0})) == 0.0
    logits, labels = torch.zeros(1, 10), torch.tensor([0])
    ce = math.log(10)  # uniform logits
    mu, gamma = 0.9, 0.01
    # penalty mode: mu CE + (1 - mu) L1 + gamma * groups
    assert float(sparse_loss(logits, labels, model, mu, group_l1=gamma)) == pytest.approx(
        mu * ce + (1 - mu) * 21 + gamma * 10, rel=1e-6)
    # proximal mode: the penalties leave the loss
    assert float(sparse_loss(logits, labels, model, mu, l1_mode="proximal", group_l1=gamma)) == pytest.approx(
        mu * ce, rel=1e-6)
    with pytest.raises(ValueError, match="train.l1_mode"):
        sparse_loss(logits, labels, model, mu, l1_mode="prox")


def test_gradual_schedule_sparsity_at_given_steps():
    """t0 = 100, n dt = 200 (dt = 50), s_i = 0, s_f = 0.8: s_t = 0.8 - 0.8 (1 - (t - 100) / 200)^3
        t = 150: 0.8 - 0.8 x 0.75^3 = 0.8 - 0.3375 = 0.4625
        t = 200: 0.8 - 0.8 x 0.5^3  = 0.7
        t = 250: 0.8 - 0.8 x 0.25^3 = 0.7875
    """
    schedule = GradualPruning(initial=0.0, final=0.8, start_step=100, end_step=320, frequency=50)
    assert schedule.end_step == 300  # n dt rounded down to a multiple of dt
    expected = {99: 0.0, 100: 0.0, 150: 0.4625, 200: 0.7, 250: 0.7875, 300: 0.8, 1000: 0.8}
    assert {t: schedule.sparsity(t) for t in expected} == pytest.approx(expected)
    assert [t for t in range(0, 400) if schedule.is_update(t)] == [100, 150, 200, 250, 300]
    assert cubic_sparsity(150, 0.5, 0.9, 100, 200) == pytest.approx(0.9 - 0.4 * 0.125)  # s_i = 0.5: 0.85
    # a layer with its own target follows its own curve, 0 keeps it dense
    per_layer = GradualPruning(0.0, 0.8, 100, 300, 50, per_layer={"conv1": 0.0, "fc5": 0.4})
    assert per_layer.sparsity(200, "conv1") == 0.0 and per_layer.sparsity(200, "fc5") == pytest.approx(0.35)


def test_gradual_masks_per_layer_and_global():
    torch.manual_seed(0)
    model = SplitCNN((4, 5, 6, 7), (12, 10, 9, 8, 10))
    schedule = GradualPruning(0.0, 0.8, 100, 300, 50, per_layer={"conv1": 0.0})
    masks = schedule.masks(model, 200)  # s = 0.7
    zeros = {name: int((m == 0).sum()) for name, m in masks.items()}
    # floor(0.7 n): conv2 5x4x25 = 500 -> 350, fc1 12x28 = 336 -> 235, fc3 9x10 = 90 -> 63, fc5 10x8 = 80 -> 56
    assert (zeros["layers.conv2.weight"], zeros["layers.fc1.weight"], zeros["layers.fc3.weight"],
            zeros["layers.fc5.weight"], zeros["layers.conv1.weight"]) == (350, 235, 63, 56, 0)
    for name, layer in model.weighted_layers():
        n = layer.weight.numel()
        assert zeros[f"layers.{name}.weight"] == (0 if name == "conv1" else math.floor(0.7 * n + 1e-6)), name
    pooled = GradualPruning(0.0, 0.8, 100, 300, 50, scope="global", per_layer={"conv1": 0.0})
    masks = pooled.masks(model, 300)
    others = [n for n, _ in model.weighted_layers() if n != "conv1"]
    total = sum(model.layers[n].weight.numel() for n in others)
    assert sum(int((masks[f"layers.{n}.weight"] == 0).sum()) for n in others) == math.floor(0.8 * total)
    assert bool(masks["layers.conv1.weight"].all())
    # the smallest go first, over all pooled layers at once
    magnitudes = torch.cat([model.layers[n].weight.detach().abs().flatten() for n in others])
    kept = torch.cat([masks[f"layers.{n}.weight"].flatten() for n in others]).bool()
    assert float(magnitudes[~kept].max()) <= float(magnitudes[kept].min())
    assert keep_largest(torch.tensor([0.3, 0.1, 0.2, 0.0]), 0.5).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_gradual_pruning_in_training_holds_the_masks_between_updates():
    """96 samples, batches of 16: 6 steps per epoch, 3 epochs. Updates at steps 2, 4, 6 to 50%:
    the last mask is held for the 12 steps after it, so exactly floor(0.5 n) weights of every
    layer are still zero at the end (Adam would regrow them otherwise; the L1 penalty makes no
    exact zeros of its own)."""
    seed_everything(0, 1)
    model = SplitCNN((4, 4, 4, 4), (16, 8, 8, 8, 10))
    schedule = GradualPruning(0.0, 0.5, start_step=2, end_step=6, frequency=2)
    fit(model, _toy_split(), _toy_split(32, 1), epochs=3, mu=0.999, lr=1e-2, batch_size=16, seed=0, gradual=schedule)
    for name, layer in model.weighted_layers():
        assert int((layer.weight == 0).sum()) == math.floor(0.5 * layer.weight.numel()), name
    # a schedule shorter than its frequency updates once, at t0; at t0 = 0 it masks the initial weights
    once = GradualPruning(0.0, 0.5, start_step=0, end_step=3, frequency=50)
    assert once.end_step == 0 and [t for t in range(100) if once.is_update(t)] == [0]
    seed_everything(0, 1)
    model = SplitCNN((4, 4, 4, 4), (16, 8, 8, 8, 10))
    fit(model, _toy_split(), _toy_split(32, 1), epochs=1, mu=0.999, lr=1e-2, batch_size=16, seed=0, gradual=once)
    assert int((model.layers.fc1.weight == 0).sum()) == 16 * 16 // 2


def test_proximal_training_gives_exact_zeros_and_penalty_training_none():
    def zeros(mode):
        seed_everything(0, 1)
        model = SplitCNN((4, 4, 4, 4), (16, 8, 8, 8, 10))
        fit(model, _toy_split(), _toy_split(32, 1), epochs=1, mu=0.999, lr=1e-2, batch_size=16, seed=0, l1_mode=mode)
        return sum(int((p == 0).sum()) for p in model.parameters())
    assert zeros("penalty") == 0
    assert zeros("proximal") > 100


def test_structured_pruning_removes_the_channel_from_the_cut_and_the_split_model_equals_the_masked_one():
    """A conv1 channel and two conv2 channels whose groups (weights and bias) are zero, as the
    group prox leaves them: pruning drops them, so the cuts conv1/pool1 carry 3 of 4 channels and
    conv2/pool2 3 of 5; what the energy model counts as sent falls accordingly, and the split
    model computes the masked model's logits at every cut."""
    torch.manual_seed(0)
    masked = SplitCNN((4, 5, 6, 7), (12, 10, 9, 8, 10))
    with torch.no_grad():
        for layer, channel in (("conv1", 1), ("conv2", 0), ("conv2", 3)):
            masked.layers[layer].weight[channel].zero_()
            masked.layers[layer].bias[channel] = 0.0
    pruned = prune(masked, 0.0)  # threshold 0: only the dead units go
    assert pruned.conv_channels == (3, 3, 6, 7)
    cfg = compose_cfg("train", [])
    energy_cfg = compose_cfg("evaluate", []).energy
    sent = dict(zip(processing_table(pruned, energy_cfg).names, processing_table(pruned, energy_cfg).out_elements))
    before = dict(zip(processing_table(masked, energy_cfg).names, processing_table(masked, energy_cfg).out_elements))
    assert (sent["conv1"], sent["pool1"], sent["conv2"], sent["pool2"]) == (3 * 28 * 28, 3 * 14 * 14, 3 * 14 * 14, 3 * 7 * 7)
    assert (before["conv1"], before["pool1"], before["conv2"], before["pool2"]) == (4 * 784, 4 * 196, 5 * 196, 5 * 49)
    x = torch.randn(5, 1, 28, 28)
    expected = masked(x)
    for cut in pruned.cut_names:
        z = pruned.client(x, cut)
        assert z.shape[1:] == next((i.out_shape for i in pruned.infos if i.name == cut), (1, 28, 28))
        assert torch.equal(pruned.server(z, cut), pruned(x)), cut
    assert torch.allclose(pruned(x), expected, atol=1e-6, rtol=0)
    assert cfg.train.l1_mode == "penalty" and cfg.train.group_l1 == 0.0 and cfg.prune.schedule == "oneshot"


def test_proximal_group_l1_kills_whole_units_that_pruning_removes():
    """Training with the group prox zeroes whole groups (weights and bias together), so the units
    die without any threshold and the cleaned model gives the trained model's logits."""
    def trained(group_l1):
        seed_everything(0, 1)
        model = SplitCNN((4, 6, 6, 6), (16, 8, 8, 8, 10))
        fit(model, _toy_split(), _toy_split(32, 1), epochs=1, mu=1.0, lr=1e-2, batch_size=16, seed=0,
            l1_mode="proximal", group_l1=group_l1)
        dead = {name: int((torch.cat([l.weight.reshape(len(l.weight), -1), l.bias[:, None]], 1) == 0).all(1).sum())
                for name, l in model.weighted_layers()}
        return model, dead
    assert sum(trained(0.0)[1].values()) == 0  # mu = 1: no L1 prox, so only the group prox makes zeros
    model, dead = trained(3e-4)
    assert dead["conv2"] > 0 and dead["fc1"] > 0, dead
    apply_masks(model, magnitude_masks(model, 0.0))
    cleaned = remove_dead_units(model)
    assert cleaned.conv_channels[1] == 6 - dead["conv2"]
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(cleaned(x), model(x), atol=1e-6, rtol=0)


# -- settings -------------------------------------------------------------------------------
def _cfg(*overrides):
    return compose_cfg("train", list(overrides))


@pytest.mark.parametrize("overrides,message", [
    (["train.l1_mode=lasso"], r"train.l1_mode must be one of penalty, proximal \(got 'lasso'\)"),
    (["train.group_l1=-1"], r"train.group_l1 must be in \[0, inf\) \(got -1\)"),
    (["+train.group_l1_per_layer.fc5=0.1"],
     r"train.group_l1_per_layer: unknown grouped layer 'fc5'; valid: conv1, conv2, conv3, conv4, fc1, fc2, fc3, fc4"),
    (["train.group_l1_per_layer.conv1=-0.1"], r"train.group_l1_per_layer.conv1 must be in \[0, inf\) \(got -0.1\)"),
    (["prune.schedule=cubic"], r"prune.schedule must be one of oneshot, gradual \(got 'cubic'\)"),
    (["prune.schedule=gradual", "prune.gradual.final_sparsity=1"],
     r"prune.gradual.final_sparsity must be in \[0, 1\) \(got 1\)"),
    (["prune.schedule=gradual", "prune.gradual.initial_sparsity=0.99"],
     r"prune.gradual.initial_sparsity must be in \[0, 0.95\] \(got 0.99\)"),
    (["prune.schedule=gradual", "prune.gradual.end_epoch=31"], r"prune.gradual.end_epoch must be in \[2, 30\] \(got 31\)"),
    (["prune.schedule=gradual", "prune.gradual.start_epoch=25"], r"prune.gradual.end_epoch must be in \[25, 30\] \(got 20\)"),
    (["prune.schedule=gradual", "prune.gradual.frequency_steps=0"], r"prune.gradual.frequency_steps must be in \[1, inf\)"),
    (["prune.schedule=gradual", "prune.gradual.scope=net"], r"prune.gradual.scope must be one of layer, global"),
    (["prune.schedule=gradual", "prune.gradual.per_layer.fc1=1.5"], r"prune.gradual.per_layer.fc1 must be in \[0, 1\)"),
    (["prune.schedule=gradual", "+prune.gradual.per_layer.pool1=0.5"],
     r"prune.gradual.per_layer: unknown weighted layer 'pool1'; valid: conv1, conv2"),
    (["prune.schedule=gradual", "prune.gradual.units.conv1=1"], r"prune.gradual.units.conv1 must be in \[0, 1\) \(got 1\)"),
    (["prune.schedule=gradual", "+prune.gradual.units.fc5=0.5"], r"prune.gradual.units: unknown grouped layer 'fc5'"),
    (["prune.schedule=gradual", "prune.gradual.final_sparsity=null"],
     r"prune.gradual.final_sparsity must be set when prune.schedule=gradual \(got None\)"),
])
def test_bad_sparsity_settings_are_refused_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_training(_cfg(*overrides))


def test_an_unused_gradual_block_is_not_checked():
    validate_training(_cfg("train.epochs=1"))  # end_epoch 20 > 1 epoch, but oneshot never reads it


def test_a_bad_sparsity_value_drawn_in_a_sweep_trial_is_refused_before_its_run():
    from pipeline.sweep import run_trial
    with pytest.raises(ConfigError, match=r"prune.gradual.final_sparsity must be in \[0, 1\) \(got 1.2\)"):
        run_trial(compose_cfg("sweep", ["experiment=smoke", "prune.schedule=gradual", "prune.gradual.end_epoch=1",
                                        "prune.gradual.start_epoch=0", "prune.gradual.final_sparsity=1.2"]))


def test_the_cache_key_follows_every_setting_that_changes_the_trained_model(small_train_cfg):
    from pipeline.cache import training_key
    from pipeline.stages import load_data
    cfg = small_train_cfg
    data = load_data(cfg)
    key = training_key(cfg, data)
    # the paper's procedure keeps the key it had before these settings existed
    older = OmegaConf.to_container(cfg)
    for section, name in (("train", "l1_mode"), ("train", "group_l1"), ("train", "group_l1_per_layer"),
                          ("prune", "schedule"), ("prune", "gradual")):
        del older[section][name]
    assert training_key(OmegaConf.create(older), data) == key
    gradual = ["prune.schedule=gradual", "prune.gradual.start_epoch=0", "prune.gradual.end_epoch=1"]
    changed = [["train.l1_mode=proximal"], ["train.group_l1=1e-4"], ["train.group_l1_per_layer.conv1=1e-3"], gradual,
               gradual + ["prune.gradual.final_sparsity=0.9"], gradual + ["prune.gradual.scope=global"],
               gradual + ["prune.gradual.frequency_steps=7"], gradual + ["prune.gradual.per_layer.conv1=0"],
               gradual + ["prune.gradual.units.conv2=0.5"]]
    keys = {training_key(OmegaConf.merge(cfg, OmegaConf.from_dotlist(o)), data) for o in changed}
    assert len(keys) == len(changed) and key not in keys
    # gradual settings do not matter while the schedule is oneshot; fine-tuning is not cached
    assert training_key(OmegaConf.merge(cfg, OmegaConf.from_dotlist(["prune.gradual.final_sparsity=0.5"])), data) == key


def test_stages_train_with_the_configured_sparsity_and_take_c_r_against_the_parameters():
    """train.py's stages: gradual pruning reaches training (epochs -> steps: 96 samples in batches
    of 16 = 6 steps an epoch; updates from step 0 to 12, so the 50% masks of step 12 are held
    over the third epoch), l1_mode and group_l1 reach training but not fine-tuning, and C_r
    divides the parameter count once training has sparsified."""
    from pipeline import stages
    from pipeline.data import MnistSplits
    from pipeline.model import count_parameters
    small = ["model.conv_channels=[4,4,4,4]", "model.fc_units=[16,8,8,8,10]", "train.batch_size=16",
             "train.epochs=3", "train.num_threads=1"]
    data = MnistSplits(_toy_split(), _toy_split(32, 1), _toy_split(32, 2))
    cfg = _cfg(*small, "prune.schedule=gradual", "prune.gradual.start_epoch=0", "prune.gradual.end_epoch=2",
               "prune.gradual.frequency_steps=3", "prune.gradual.final_sparsity=0.5", "prune.gradual.per_layer.conv1=0",
               "prune.gradual.units.conv2=0.5")
    model = stages.train_dense(cfg, data)
    for name, layer in model.weighted_layers():
        expected = 0 if name == "conv1" else math.floor(0.5 * layer.weight.numel())
        assert int((layer.weight == 0).sum()) == expected, name
    # conv2's 50% are two whole channels of its 4 (4 inputs x 25 weights each) and their biases
    conv2 = model.layers.conv2
    dead = (conv2.weight.reshape(4, -1) == 0).all(dim=1)
    assert int(dead.sum()) == 2 and bool((conv2.bias[dead] == 0).all())
    assert stages.c_r_reference(cfg) == "parameters" and stages.c_r_reference(_cfg()) == "trained"
    pruned = stages.prune_only(_cfg(*small, "prune.mode=absolute", "prune.threshold=0", "prune.per_layer.conv1=null",
                                    "prune.per_layer.fc5=null"), model)
    metrics = stages.measure(model, pruned, data, reference="parameters")
    assert metrics["nnz_dense"] == count_parameters(model)
    assert metrics["compression_ratio"] == count_parameters(model) / metrics["nnz_params"]
    assert metrics["nnz_trained"] == sum(int((p != 0).sum()) for p in model.parameters())

    seen = []
    original = stages.fit

    def spy(*args, **kwargs):
        seen.append((kwargs.get("l1_mode", "penalty"), kwargs.get("group_l1", 0.0), kwargs.get("gradual") is not None))
        return original(*args, **kwargs)
    try:
        stages.fit = spy
        cfg = _cfg(*small, "train.epochs=1", "train.l1_mode=proximal", "train.group_l1=1e-4", "prune.finetune_epochs=1")
        stages.prune_model(cfg, stages.train_dense(cfg, data), data)
    finally:
        stages.fit = original
    # training with the prox and the group term; fine-tuning on eq. (10) as the paper writes it
    assert seen == [("proximal", 1e-4, False), ("penalty", 0.0, False)]
    # gamma per layer: the global value for every grouped layer not named
    gammas = stages._objective(_cfg(*small, "train.group_l1=1e-4", "train.group_l1_per_layer.conv1=1e-2"))["group_l1"]
    assert gammas == {"conv1": 1e-2, "conv2": 1e-4, "conv3": 1e-4, "conv4": 1e-4,
                      "fc1": 1e-4, "fc2": 1e-4, "fc3": 1e-4, "fc4": 1e-4}


def test_gradual_unit_masks_remove_the_weakest_channels_whole():
    """units conv1 = 0.5 of 4 channels: at step 200 the curve is 0.5 - 0.5 x 0.5^3 = 0.4375, so
    floor(0.4375 x 4) = 1 channel goes, at the end 2; the smallest ||(weights, bias)|| first, bias included, and the
    layer's weight target (0.5 of 100 weights) counts their 50 zeros first."""
    torch.manual_seed(0)
    model = SplitCNN((4, 5, 6, 7), (12, 10, 9, 8, 10))
    with torch.no_grad():
        scale = torch.tensor([1.0, 0.1, 2.0, 0.2])  # channel norms in this order: 1 < 3 < 0 < 2
        model.layers.conv1.weight.mul_(scale[:, None, None, None])
        model.layers.conv1.bias.copy_(torch.tensor([0.01, 0.01, 0.01, 0.01]))
    schedule = GradualPruning(0.0, 0.5, 100, 300, 50, units={"conv1": 0.5})
    assert schedule.unit_sparsity(200, "conv1") == pytest.approx(0.4375) and schedule.unit_sparsity(200, "conv2") == 0.0
    mid, end = schedule.masks(model, 200), schedule.masks(model, 300)
    assert mid["layers.conv1.bias"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert end["layers.conv1.bias"].tolist() == [1.0, 0.0, 1.0, 0.0]
    weights = end["layers.conv1.weight"].reshape(4, -1)
    assert weights[[1, 3]].sum() == 0 and weights[[0, 2]].sum() == 50  # exactly 50% of 100 weights pruned
    assert "layers.conv2.bias" not in end
    # applied and cleaned: two channels fewer at conv1 and pool1, the same logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(end.get(name, 1.0))
    cleaned = remove_dead_units(model)
    assert cleaned.conv_channels[0] == 2 and cleaned.client(torch.zeros(1, 1, 28, 28), "pool1").shape == (1, 2, 14, 14)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(cleaned(x), model(x), atol=1e-6, rtol=0)


def test_max_compression_preset_records_c_r_and_accuracies_in_mlflow(fake_mnist, tmp_path):
    """train.py's run with experiment=max_compression (shrunk to two epochs of toy data, the
    schedule over them): C_r against the 433,274 parameters, the accuracies and the trained
    model's own non-zeros in MLflow; 4 of conv1's 16 and 8 of conv2's 32 channels are left, so
    pool1 sends 4 x 14 x 14 = 784 elements (3,136 before) and pool2 8 x 7 x 7 = 392 (1,568)."""
    from mlflow.tracking import MlflowClient

    from pipeline.model import load_checkpoint
    from pipeline.stages import run_train
    cfg = compose_cfg("train", [
        "experiment=max_compression", f"data.root={fake_mnist}", "data.download=false", "train.epochs=2",
        "prune.gradual.start_epoch=0", "prune.gradual.end_epoch=1", "prune.gradual.frequency_steps=1",
        "prune.finetune_epochs=1",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/art"])
    assert (cfg.train.mu, cfg.prune.schedule, cfg.prune.gradual.units.conv1, cfg.prune.per_layer.fc5) == (1.0, "gradual", 0.75, None)
    result = run_train(cfg)
    run = MlflowClient(cfg.tracking.uri).get_run(result["run_id"])
    metrics = run.data.metrics
    assert {"compression_ratio", "test_accuracy", "val_accuracy", "dense_test_accuracy", "nnz_params",
            "nnz_trained"} <= set(metrics)
    assert metrics["nnz_dense"] == 433_274
    assert metrics["compression_ratio"] == pytest.approx(433_274 / metrics["nnz_params"])
    assert metrics["compression_ratio"] > 50  # 99% of most layers' weights masked
    path = MlflowClient(cfg.tracking.uri).download_artifacts(run.info.run_id, "checkpoints/pruned.pt", str(tmp_path))
    pruned = load_checkpoint(path)
    assert pruned.conv_channels[:2] == (4, 8)
    assert (pruned.infos[1].out_elements, pruned.infos[3].out_elements) == (784, 392)


def test_the_uncompressed_reference_of_a_model_trained_sparse_stores_every_parameter():
    """PSNC's model when training zeroed parameters: eqs. (1)-(2) count every parameter (the
    processing table equals that of the same widths with no zero at all), the outputs are the
    trained model's, and a model without zeros is used as it is."""
    from pipeline.model import count_nonzero, count_parameters, uncompressed_reference
    torch.manual_seed(0)
    full = SplitCNN()
    masked = SplitCNN()
    masked.load_state_dict(full.state_dict())
    with torch.no_grad():
        masked.layers["conv1"].weight[:12] = 0  # 12 of conv1's 16 channels dead, 99% of fc1 zero
        masked.layers["conv1"].bias[:12] = 0
        masked.layers["fc1"].weight.mul_((torch.rand_like(masked.layers["fc1"].weight) < 0.01).float())
    assert count_nonzero(masked) < count_parameters(masked)
    reference = uncompressed_reference(masked)
    assert count_nonzero(reference) == count_parameters(masked) == 433_274
    energy_cfg = compose_cfg("evaluate", ["scenario=realistic"]).energy
    ours, theirs = processing_table(reference, energy_cfg), processing_table(full, energy_cfg)
    assert list(ours.processing_j) == list(theirs.processing_j) and list(ours.out_elements) == list(theirs.out_elements)
    assert processing_table(masked, energy_cfg).processing_j[-1] < ours.processing_j[-1]  # the zeros were cheaper
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(reference(x), masked.eval()(x))
    assert uncompressed_reference(full) is full


def test_evaluate_on_a_model_trained_sparse_reports_train_c_r_and_the_uncompressed_psnc(fake_mnist, tmp_path, monkeypatch):
    """evaluate.py on a gradual-pruning run (its dense model holds the training's zeros): C_r is
    train.py's (against all 433,274 parameters, not the trained model's own non-zeros) and PSNC is
    costed on every parameter, i.e. equals the PSNC of the same network with no zero."""
    from pipeline.reporting import evaluate_models, run_evaluate
    from pipeline.stages import run_train
    common = [f"data.root={fake_mnist}", "data.download=false",
              f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/art"]
    trained = run_train(compose_cfg("train", [
        "experiment=max_compression", "train.epochs=2", "prune.gradual.start_epoch=0", "prune.gradual.end_epoch=1",
        "prune.gradual.frequency_steps=1", "prune.finetune_epochs=0", *common]))
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg("evaluate", [
        f"train_run_id={trained['run_id']}", "scenario=realistic", "trajectory.duration_s=20", "fig5_thresholds=[0.0]",
        "evaluation.realisations=1", "evaluation.sensitivity.path_loss_exponents=[3.0]",
        "evaluation.sensitivity.reference_distances_m=[100.0]", *common])
    metrics = run_evaluate(cfg)
    assert trained["compression_ratio"] > 50
    assert metrics["compression_ratio"] == pytest.approx(trained["compression_ratio"])
    torch.manual_seed(0)
    full = SplitCNN()
    unpruned = evaluate_models(cfg, full, full, [float(cfg.channel.bandwidth_hz)], methods=("psnc",), realisations=1)
    assert metrics["energy_total_j_psnc"] == pytest.approx(
        unpruned.results[float(cfg.channel.bandwidth_hz)]["psnc"][0].means()["energy_total_j"], rel=1e-12)
    # deployed at fp16 (which rounds the stand-ins for zeros back to 0) and int8, PSNC still costs
    # every parameter: each layer's non-zeros are all its parameters (conv1: 16 x 25 + 16 = 416, ...)
    from pipeline.front import run_models
    dense, pruned = run_models(trained["run_id"], None)
    for precision in ("fp16", "int8"):
        deployed_cfg = compose_cfg("evaluate", [f"energy.precision={precision}", "scenario=realistic", *common])
        ours = evaluate_models(deployed_cfg, dense, pruned, [5e6], methods=("psnc",), realisations=1).uncompressed
        assert list(ours.layers["nnz_params"]) == list(ours.layers["params"]), precision
        assert list(ours.layers["nnz_params"])[:3] == [16 * 25 + 16, 0, 32 * 16 * 25 + 32], precision


def test_a_gradual_schedule_that_ends_after_train_max_steps_is_refused_before_any_run(fake_mnist, tmp_path):
    """At 54k-image epochs the sweep's 7000-step cap would stop experiment=max_compression at 35% of
    its schedule (73% of the target sparsity): one error naming both settings, nothing recorded."""
    from pipeline.config import ConfigError
    from pipeline.stages import run_train
    cfg = compose_cfg("train", [
        "experiment=max_compression", f"data.root={fake_mnist}", "data.download=false", "train.epochs=2",
        "prune.gradual.start_epoch=0", "prune.gradual.end_epoch=2", "train.max_steps=3",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/art"])
    with pytest.raises(ConfigError, match=r"prune.gradual.end_epoch=2 ends at step \d+ .*after train.max_steps=3"):
        run_train(cfg)
    assert not (tmp_path / "mlflow.db").exists()
