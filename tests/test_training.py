import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pipeline import stages
from pipeline.data import MnistSplits, TensorSplit
from pipeline.model import SplitCNN
from pipeline.pruning import nonzero_masks, prune
from pipeline.training import fit, l1_norm, seed_everything, sparse_loss
from tests.conftest import compose_cfg


def test_l1_term_on_a_hand_built_model():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        model.bias.copy_(torch.tensor([-0.25, 3.0]))
    # |1| + |-2| + |0.5| + |0| + |-0.25| + |3| = 6.75
    assert float(l1_norm(model)) == pytest.approx(6.75)
    logits = torch.tensor([[2.0, 0.0]])
    labels = torch.tensor([0])
    ce = torch.log(1 + torch.exp(torch.tensor(-2.0)))  # -log softmax of the true class
    expected = 0.9 * float(ce) + 0.1 * 6.75
    assert float(sparse_loss(logits, labels, model, mu=0.9)) == pytest.approx(expected, rel=1e-6)
    assert float(sparse_loss(logits, labels, model, mu=1.0)) == pytest.approx(float(F.cross_entropy(logits, labels)))


def test_ce_reduction_mean_and_sum_on_a_hand_made_batch():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    l1 = 2.0  # |1| + |0| + |0| + |1| + biases 0
    # identity layer: the inputs are the logits. Both samples are class 0:
    # [0, 0]     -> p0 = 1/2, CE = ln 2
    # [ln 3, 0]  -> p0 = 3/(3+1) = 3/4, CE = ln(4/3)
    x = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 0])
    ce_sum = math.log(2) + math.log(4 / 3)  # = ln(8/3) = 0.98083
    ce_mean = ce_sum / 2
    mu = 0.9
    mean = float(sparse_loss(model(x), labels, model, mu, "mean"))
    total = float(sparse_loss(model(x), labels, model, mu, "sum"))
    assert mean == pytest.approx(0.9 * 0.490415 + 0.1 * 2.0, rel=1e-5)  # 0.641373
    assert total == pytest.approx(0.9 * 0.980829 + 0.1 * 2.0, rel=1e-5)  # 1.082746
    # sum over a batch of B = 2 is B * CE_mean * mu + (1 - mu) * L1
    assert total == pytest.approx(2 * ce_mean * mu + (1 - mu) * l1, rel=1e-6)
    with pytest.raises(ValueError, match="ce_reduction"):
        sparse_loss(model(x), labels, model, mu, "avg")


def test_stages_pass_ce_reduction_to_training_and_fine_tuning(monkeypatch):
    seen = []
    monkeypatch.setattr(stages, "fit", lambda *a, **kw: seen.append(kw["ce_reduction"]))
    cfg = compose_cfg("train", ["train.ce_reduction=sum", "prune.finetune_epochs=1",
                                "model.conv_channels=[4,4,4,4]", "model.fc_units=[16,8,8,8,10]"])
    split = _toy_split(8)
    data = MnistSplits(split, split, split)
    stages.prune_model(cfg, stages.train_dense(cfg, data), data)
    assert seen == ["sum", "sum"]


def test_fine_tuning_epochs_are_capped_at_finetune_epoch_steps(monkeypatch):
    seen = []
    monkeypatch.setattr(stages, "fit", lambda *a, **kw: seen.append((kw["epochs"], kw["max_steps"])))
    split = _toy_split(8)
    data = MnistSplits(split, split, split)
    for steps in ("null", "71"):
        cfg = compose_cfg("train", ["prune.finetune_epochs=2", f"prune.finetune_epoch_steps={steps}",
                                    "model.conv_channels=[4,4,4,4]", "model.fc_units=[16,8,8,8,10]"])
        stages.prune_model(cfg, stages.build_model(cfg.model.conv_channels, cfg.model.fc_units), data)
    assert seen == [(2, None), (2, 2 * 71)]  # 2 epochs of at most 71 steps each


def _toy_split(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def _train(seed):
    seed_everything(seed, 1)
    model = SplitCNN((4, 4, 4, 4), (16, 8, 8, 8, 10))
    result = fit(model, _toy_split(), _toy_split(32, 1), epochs=2, mu=0.999, lr=1e-3, batch_size=16, seed=seed)
    return model, result


def test_same_seed_same_weights_and_metrics():
    (m1, r1), (m2, r2) = _train(3), _train(3)
    assert r1.history == r2.history
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, r3 = _train(4)
    assert r3.history != r1.history


def test_masked_finetuning_keeps_pruned_weights_at_zero():
    model, _ = _train(0)
    pruned = prune(model, 0.02)
    zeros_before = {k: (v == 0) for k, v in pruned.state_dict().items()}
    fit(pruned, _toy_split(), _toy_split(32, 1), epochs=1, mu=0.999, lr=1e-2, batch_size=16, seed=0,
        masks=nonzero_masks(pruned))
    for k, v in pruned.state_dict().items():
        assert bool((v[zeros_before[k]] == 0).all()), k
    assert any(bool((v != 0).any()) for v in pruned.state_dict().values())


def test_cosine_learning_rate_factor_by_hand():
    from pipeline.training import lr_factor
    # (1 + cos(pi s / S)) / 2 with S = 8: s = 0 -> 1; s = 2 -> (1 + cos(pi/4)) / 2 = (1 + 0.70711) / 2 = 0.85355;
    # s = 4 -> (1 + 0) / 2 = 0.5; s = 6 -> (1 - 0.70711) / 2 = 0.14645; s = 8 -> 0
    assert [round(lr_factor("cosine", s, 8), 5) for s in (0, 2, 4, 6, 8)] == [1.0, 0.85355, 0.5, 0.14645, 0.0]
    assert lr_factor("constant", 5, 8) == 1.0


def test_max_steps_stops_training_mid_epoch():
    """96 samples in batches of 16: 6 steps per epoch. epochs=3 with max_steps=8 runs 8 steps:
    one full epoch (6) and 2 of the second, so two epoch records; the learning rate the cosine
    schedule leaves behind is the factor at step 8 of 8 (0)."""
    steps = []
    seed_everything(0, 1)
    model = SplitCNN((4, 4, 4, 4), (16, 8, 8, 8, 10))
    model.register_forward_hook(lambda m, i, o: steps.append(len(i[0])) if m.training else None)
    result = fit(model, _toy_split(), _toy_split(32, 1), epochs=3, mu=0.999, lr=1e-3, batch_size=16, seed=0,
                 max_steps=8, lr_schedule="cosine")
    assert steps == [16] * 8
    assert [r.epoch for r in result.history] == [1, 2]
    # without the cap: 3 epochs x 6 steps
    steps.clear()
    fit(model, _toy_split(), _toy_split(32, 1), epochs=3, mu=0.999, lr=1e-3, batch_size=16, seed=0)
    assert len(steps) == 18


def test_cosine_schedule_changes_training_and_constant_matches_the_paper_default():
    def weights(**kw):
        seed_everything(0, 1)
        model = SplitCNN((4, 4, 4, 4), (16, 8, 8, 8, 10))
        fit(model, _toy_split(), _toy_split(32, 1), epochs=1, mu=0.999, lr=1e-2, batch_size=16, seed=0, **kw)
        return torch.cat([p.detach().flatten() for p in model.parameters()])
    paper = weights()
    assert torch.equal(weights(lr_schedule="constant", max_steps=None), paper)
    assert not torch.allclose(weights(lr_schedule="cosine"), paper)


def test_device_setting_resolves_and_refuses_a_gpu_that_is_not_there(monkeypatch):
    from pipeline.training import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for bad, line in [("cuda", "train.device=cuda: CUDA is not available"), ("gpu", "must be one of auto | cpu"),
                      ("cuda:x", "must be one of auto | cpu")]:
        with pytest.raises(ValueError, match=line):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\), cuda:0..cuda:1"):
        resolve_device("cuda:2")


def test_bad_device_is_a_config_error_naming_the_setting():
    from pipeline.config import ConfigError, validate_training
    cfg = compose_cfg("train", ["train.device=tpu"])
    with pytest.raises(ConfigError, match="train.device must be one of auto"):
        validate_training(cfg)
    with pytest.raises(ConfigError, match=r"train.max_steps must be in \[1, inf\)"):
        validate_training(compose_cfg("train", ["train.max_steps=0"]))
    with pytest.raises(ConfigError, match="train.lr_schedule must be one of constant, cosine"):
        validate_training(compose_cfg("train", ["train.lr_schedule=step"]))
