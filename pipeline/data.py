"""MNIST as normalised tensors in memory, a seeded validation split, and batches from memory.

torchvision reads the IDX files; after that every sample lives in one float tensor, so a batch
is a single index operation instead of 64 PIL conversions (benchmarks/bench_data.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import MNIST

# Mean and std of the MNIST training pixels (the values torchvision's MNIST examples use).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
ROOT_ENV_VAR = "MNIST_ROOT"


class DataUnavailableError(RuntimeError):
    pass


@dataclass
class TensorSplit:
    images: torch.Tensor  # (N, 1, 28, 28) float32, normalised
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield (images, labels) batches; shuffled when a generator is given."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.images[idx], self.labels[idx]

    def subset(self, n: int) -> "TensorSplit":
        return TensorSplit(self.images[:n], self.labels[:n])

    def per_class(self, n_per_class: int, seed: int) -> "TensorSplit":
        """A seeded class-balanced selection: ``n_per_class`` images of every label drawn at random,
        in a seeded random order (how the offline 5k subset was built: 500 per digit, shuffled)."""
        gen = torch.Generator().manual_seed(seed)
        picked = []
        for label in torch.unique(self.labels).tolist():
            idx = torch.nonzero(self.labels == label).flatten()
            if len(idx) < n_per_class:
                raise DataUnavailableError(f"data.train_per_class={n_per_class} exceeds the {len(idx)} training images "
                                 f"of digit {label}: must be in [1, {int(torch.bincount(self.labels).min())}]")
            picked.append(idx[torch.randperm(len(idx), generator=gen)[:n_per_class]])
        order = torch.cat(picked)
        order = order[torch.randperm(len(order), generator=gen)]
        return TensorSplit(self.images[order], self.labels[order])

    def to(self, device) -> "TensorSplit":
        return TensorSplit(self.images.to(device), self.labels.to(device))


@dataclass
class MnistSplits:
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit

    def to(self, device) -> "MnistSplits":
        """All three splits on ``device`` (once: batches are then index operations there)."""
        return MnistSplits(self.train.to(device), self.val.to(device), self.test.to(device))


def _mnist(root: Path, train: bool, download: bool) -> MNIST:
    try:
        return MNIST(str(root), train=train, download=False)
    except RuntimeError:
        pass  # files missing: fall through to the download, if allowed
    hint = (
        f"MNIST files not found under {root}/MNIST/raw. Set data.root=<dir> "
        f"(or the {ROOT_ENV_VAR} environment variable) to a folder holding MNIST/raw/*-ubyte"
    )
    if not download:
        raise DataUnavailableError(hint + ", or allow data.download=true.")
    try:
        return MNIST(str(root), train=train, download=True)
    except Exception as exc:  # urllib/HTTP errors come in many types; one message is enough
        raise DataUnavailableError(f"{hint}; downloading failed ({type(exc).__name__}: {exc}).") from None


def to_tensor_split(raw_images: torch.Tensor, raw_labels: torch.Tensor) -> TensorSplit:
    """uint8 (N, 28, 28) -> normalised float (N, 1, 28, 28), as ToTensor+Normalize would give."""
    images = (raw_images.float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)).unsqueeze(1)
    return TensorSplit(images.contiguous(), raw_labels.long())


def split_train_val(split: TensorSplit, val_fraction: float, seed: int) -> tuple[TensorSplit, TensorSplit]:
    """Seeded random split of the training set; the test set is never used for selection."""
    n = len(split)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise ValueError(f"data.val_fraction={val_fraction} leaves no training samples out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return (
        TensorSplit(split.images[train_idx], split.labels[train_idx]),
        TensorSplit(split.images[val_idx], split.labels[val_idx]),
    )


def resolve_root(root: str | os.PathLike | None) -> Path:
    if root in (None, ""):
        root = os.environ.get(ROOT_ENV_VAR, "data")
    return Path(root).expanduser().resolve()


def load_mnist(
    root=None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    download: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    train_repeat: int = 1,
    train_per_class: int | None = None,
) -> MnistSplits:
    """Train/val/test tensors. ``train_per_class`` first draws that many training images of every
    digit (seeded by ``split_seed``); ``train_subset``/``test_subset`` then keep the first n.
    ``train_repeat`` tiles the training split (after the validation split, so no validation image
    is trained on): benchmarks time a 60k-image epoch on the offline 5k subset."""
    root = resolve_root(root)
    train_ds = _mnist(root, True, download)
    test_ds = _mnist(root, False, download)
    train = to_tensor_split(train_ds.data, train_ds.targets)
    test = to_tensor_split(test_ds.data, test_ds.targets)
    if train_per_class:
        train = train.per_class(train_per_class, split_seed)
    if train_subset:
        train = train.subset(train_subset)
    if test_subset:
        test = test.subset(test_subset)
    train, val = split_train_val(train, val_fraction, split_seed)
    if train_repeat > 1:
        train = TensorSplit(train.images.repeat(train_repeat, 1, 1, 1), train.labels.repeat(train_repeat))
    return MnistSplits(train, val, test)
