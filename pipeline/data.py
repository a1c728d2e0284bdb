"""MNIST as normalised tensors in memory, a seeded validation split, and batches from memory.

The IDX files are read here as torchvision's MNIST reads them (``read_idx``); torchvision is
imported only to download missing files (~0.15 s of CPU less per process; the torch compiler
its datasets import, ~1.3 s more, is imported by the first ``torch.optim`` optimizer anyway).
After that every sample lives in one float tensor, so a batch is a single index operation
instead of 64 PIL conversions (benchmarks/bench_data.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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


IDX_DTYPES = {8: np.uint8, 9: np.int8, 11: np.dtype(">i2"), 12: np.dtype(">i4"), 13: np.dtype(">f4"), 14: np.dtype(">f8")}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file ("Pascal Vincent" format: 2 zero bytes, the type code, the number of dimensions,
    one big-endian uint32 per dimension, then the values, big-endian) as a tensor of its shape:
    what torchvision's MNIST gives as ``data`` (uint8 images) and, after ``.long()``, ``targets``."""
    raw = path.read_bytes()
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or type_code not in IDX_DTYPES or not 1 <= ndim <= 3:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()})")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    values = np.frombuffer(raw, IDX_DTYPES[type_code], offset=4 + 4 * ndim)
    return torch.from_numpy(values.astype(values.dtype.newbyteorder("="))).view(*shape)


@dataclass
class _Split:
    """What torchvision's MNIST dataset gives: uint8 images (N, 28, 28) and int64 labels (N,)."""
    data: torch.Tensor
    targets: torch.Tensor


def _read_split(root: Path, train: bool) -> _Split | None:
    """The split from ``root/MNIST/raw`` as torchvision's MNIST reads it; None when a file is missing
    or torchvision would read something else (its legacy ``processed/*.pt`` files)."""
    mnist = root / "MNIST"
    if (mnist / "processed" / "training.pt").is_file() and (mnist / "processed" / "test.pt").is_file():
        return None
    prefix = "train" if train else "t10k"
    images, labels = mnist / "raw" / f"{prefix}-images-idx3-ubyte", mnist / "raw" / f"{prefix}-labels-idx1-ubyte"
    if not (images.is_file() and labels.is_file()):
        return None
    try:
        data, targets = read_idx(images), read_idx(labels)
    except (RuntimeError, ValueError, IndexError) as exc:  # a truncated or foreign file
        raise DataUnavailableError(f"{mnist / 'raw'}: {images.name} or {labels.name} is not a whole MNIST file "
                                   f"({type(exc).__name__}: {exc}); set data.root to a folder with intact files, or "
                                   "delete them to download them again") from None
    if (data.dtype != torch.uint8 or data.dim() != 3 or targets.dtype != torch.uint8 or targets.dim() != 1
            or len(data) != len(targets)):
        raise DataUnavailableError(f"{mnist / 'raw'}: expected uint8 images (N, H, W) and as many uint8 labels (N,) "
                                   "(set data.root to a folder with MNIST's files)")
    return _Split(data, targets.long())


def _mnist(root: Path, train: bool, download: bool):
    split = _read_split(root, train)
    if split is not None:
        return split
    from torchvision.datasets import MNIST  # downloads, and reads legacy processed/*.pt files

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
        from .config import ConfigError
        raise ConfigError(f"data.val_fraction={val_fraction} leaves no training samples out of {n}")
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
