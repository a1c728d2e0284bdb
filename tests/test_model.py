import pytest
import torch

from pipeline.model import SplitCNN, UnknownCutError, count_parameters, load_checkpoint, save_checkpoint


def test_paper_cnn_parameter_count_and_shapes():
    model = SplitCNN()
    # conv: (in*25 + 1) * out;  fc: (in + 1) * out
    conv = (1 * 25 + 1) * 16 + (16 * 25 + 1) * 32 + (32 * 25 + 1) * 48 + (48 * 25 + 1) * 64
    fc = (256 + 1) * 512 + (512 + 1) * 256 + (256 + 1) * 128 + (128 + 1) * 64 + (64 + 1) * 10
    assert conv + fc == 433_274
    assert count_parameters(model) == 433_274
    fc12 = (256 + 1) * 512 + (512 + 1) * 256
    assert round(fc12 / 433_274, 3) == 0.607  # the paper's "around 60%"
    shapes = {i.name: i.out_shape for i in model.infos}
    assert shapes["conv1"] == (16, 28, 28) and shapes["pool1"] == (16, 14, 14)
    assert shapes["pool2"] == (32, 7, 7) and shapes["pool3"] == (48, 4, 4) and shapes["pool4"] == (64, 2, 2)
    assert [model.infos[i].out_shape for i in range(8, 13)] == [(512,), (256,), (128,), (64,), (10,)]


def test_every_cut_splits_exactly():
    torch.manual_seed(0)
    model = SplitCNN().eval()
    x = torch.randn(5, 1, 28, 28)
    full = model(x)
    assert model.cut_names[0] == "input" and model.cut_names[-1] == "fc5" and len(model.cut_names) == 14
    for cut in model.cut_names + ["softmax"]:
        z = model.client(x, cut)
        assert torch.equal(model.server(z, cut), full), cut
    assert model.client(x, "input") is x
    assert model.client(x, "pool1").shape == (5, 16, 14, 14)


def test_unknown_cut_is_rejected_with_the_valid_names():
    with pytest.raises(UnknownCutError, match="unknown cut point 'pool9'.*pool4"):
        SplitCNN().client(torch.zeros(1, 1, 28, 28), "pool9")


def test_checkpoint_round_trip_keeps_widths(tmp_path):
    model = SplitCNN((3, 4, 5, 6), (7, 6, 5, 4, 10))
    save_checkpoint(model, tmp_path / "m.pt")
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.widths() == {"conv_channels": [3, 4, 5, 6], "fc_units": [7, 6, 5, 4, 10]}
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(back(x), model(x))
