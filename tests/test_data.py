import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, write_idx
from pipeline import stages
from pipeline.data import MNIST_MEAN, MNIST_STD, DataUnavailableError, load_mnist, read_idx


def test_loads_idx_files_into_normalised_tensors(fake_mnist):
    splits = load_mnist(fake_mnist, val_fraction=0.25, split_seed=0, download=False)
    assert len(splits.train) == 150 and len(splits.val) == 50 and len(splits.test) == 100
    assert splits.train.images.shape == (150, 1, 28, 28) and splits.train.images.dtype == torch.float32
    # a 250 pixel normalises to (250/255 - mean) / std
    assert float(splits.test.images.max()) == pytest.approx((250 / 255 - MNIST_MEAN) / MNIST_STD, rel=1e-6)
    batches = list(splits.train.batches(64))
    assert [len(y) for _, y in batches] == [64, 64, 22]


def test_validation_split_is_seeded_and_disjoint(fake_mnist):
    a = load_mnist(fake_mnist, 0.2, 7, False)
    b = load_mnist(fake_mnist, 0.2, 7, False)
    c = load_mnist(fake_mnist, 0.2, 8, False)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    train_rows = {t.numpy().tobytes() for t in a.train.images}
    assert not any(v.numpy().tobytes() in train_rows for v in a.val.images)


def test_subsets_keep_the_first_samples(fake_mnist):
    s = load_mnist(fake_mnist, 0.5, 0, False, train_subset=40, test_subset=10)
    assert len(s.train) + len(s.val) == 40 and len(s.test) == 10


def test_missing_files_give_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError) as info:
        load_mnist(tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "data.root" in message and "MNIST_ROOT" in message


def test_failed_download_gives_one_clear_message(tmp_path, monkeypatch):
    import urllib.error

    from torchvision.datasets import MNIST

    def offline(self):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(DataUnavailableError) as info:
        load_mnist(tmp_path / "empty", download=True)
    message = str(info.value)
    assert "data.root" in message and "MNIST_ROOT" in message and "downloading failed (URLError" in message
    assert info.value.__cause__ is None  # one message, not a chain of urllib errors


def test_train_repeat_tiles_the_training_split_only(fake_mnist):
    """200 training images, val_fraction 0.25: 150 train + 50 val; train_repeat=3 -> 450 training
    rows, each of the 150 exactly 3 times, the same validation set, and no validation image among them."""
    once = load_mnist(fake_mnist, 0.25, 0, False)
    tiled = load_mnist(fake_mnist, 0.25, 0, False, train_repeat=3)
    assert len(tiled.train) == 450 and torch.equal(tiled.val.images, once.val.images)
    assert torch.equal(tiled.train.images[300:], once.train.images)
    assert torch.equal(tiled.train.labels, once.train.labels.repeat(3))
    train_rows = {t.numpy().tobytes() for t in tiled.train.images}
    assert not any(v.numpy().tobytes() in train_rows for v in tiled.val.images)


def test_train_per_class_draws_a_seeded_class_balanced_subset():
    from pipeline.data import TensorSplit
    # 10 images: labels 0,0,0,0,1,1,1,2,2,2; image i is filled with the value i (to identify it)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    split = TensorSplit(torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous(), labels)
    a, b, c = split.per_class(2, seed=0), split.per_class(2, seed=0), split.per_class(2, seed=1)
    assert sorted(a.labels.tolist()) == [0, 0, 1, 1, 2, 2]  # 2 of every digit
    ids = a.images[:, 0, 0, 0].long()
    assert torch.equal(labels[ids], a.labels)  # each image keeps its own label
    assert len(set(ids.tolist())) == 6
    assert torch.equal(a.images, b.images)  # seeded
    assert not torch.equal(a.images, c.images)
    # 3 is the smallest class's size: 4 per class is refused with the valid range
    with pytest.raises(DataUnavailableError, match=r"data.train_per_class=4 exceeds the 3 training images of digit 1: must be in \[1, 3\]"):
        split.per_class(4, seed=0)


def test_train_per_class_comes_before_the_validation_split(fake_mnist):
    s = load_mnist(fake_mnist, 0.5, 0, False, train_per_class=4)
    assert len(s.train) + len(s.val) == 40
    assert sorted(torch.cat([s.train.labels, s.val.labels]).tolist()) == sorted(list(range(10)) * 4)


def test_the_idx_reader_gives_what_torchvision_gives(fake_mnist):
    from torchvision.datasets import MNIST

    for train in (True, False):
        theirs = MNIST(str(fake_mnist), train=train, download=False)
        prefix = "train" if train else "t10k"
        images = read_idx(fake_mnist / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(fake_mnist / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte").long()
        assert images.dtype == theirs.data.dtype == torch.uint8 and torch.equal(images, theirs.data)
        assert labels.dtype == theirs.targets.dtype == torch.int64 and torch.equal(labels, theirs.targets)


def test_idx_header_gives_shape_and_big_endian_values(tmp_path):
    """A 2 x 3 int32 file (type 0x0C): 1, 2, 3, 256, 65536, -1 written big-endian read back as such."""
    path = tmp_path / "x-idx2-int"
    path.write_bytes(bytes([0, 0, 0x0C, 2, 0, 0, 0, 2, 0, 0, 0, 3])
                     + np.array([1, 2, 3, 256, 65536, -1], dtype=">i4").tobytes())
    assert read_idx(path).tolist() == [[1, 2, 3], [256, 65536, -1]]
    path.write_bytes(b"PK\x03\x04" + bytes(8))  # e.g. a zip where the IDX file should be
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_reading_the_files_does_not_import_torchvision(fake_mnist):
    """Only a download needs torchvision."""
    code = ("import sys; from pipeline.data import load_mnist; "
            f"s = load_mnist({str(fake_mnist)!r}, download=True); "
            "print(len(s.train), [m for m in sys.modules if m.startswith('torchvision')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["180", "[]"]


def test_a_process_loads_the_same_selection_once(fake_mnist, tmp_path):
    """Sweep trials share the loaded data; another selection, or a changed file, is loaded anew."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(fake_mnist, root)
    cfg = OmegaConf.create({"data": {"root": str(root), "val_fraction": 0.25, "split_seed": 0, "download": False,
                                     "train_subset": None, "test_subset": None}, "train": {"device": "cpu"}})
    first = stages.load_data(cfg)
    assert stages.load_data(cfg) is first
    other = OmegaConf.merge(cfg, {"data": {"split_seed": 1}})
    assert stages.load_data(other) is not first
    again = stages.load_data(cfg)
    assert again is not first and torch.equal(again.val.images, first.val.images)
    images = np.zeros((200, 28, 28), np.uint8)  # same name and size, other content
    write_idx(root / "MNIST" / "raw" / "train-images-idx3-ubyte", images)
    os.utime(root / "MNIST" / "raw" / "train-images-idx3-ubyte", ns=(1, 1))  # a new modification time for sure
    changed = stages.load_data(cfg)
    assert changed is not again and changed.train.images.unique().tolist() == [pytest.approx(-MNIST_MEAN / MNIST_STD)]
