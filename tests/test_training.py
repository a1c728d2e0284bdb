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
