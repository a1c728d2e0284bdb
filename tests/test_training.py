import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.data import TensorSplit
from pipeline.model import SplitCNN
from pipeline.pruning import nonzero_masks, prune
from pipeline.training import fit, l1_norm, seed_everything, sparse_loss


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
