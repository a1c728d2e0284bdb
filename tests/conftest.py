"""Shared fixtures: synthetic MNIST in IDX format and small Hydra configs composed like the app's."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as in LeCun's MNIST files: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def make_fake_mnist(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """A learnable toy MNIST: each digit is a bright square whose position encodes the label."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            r, c = 2 + 2 * (y // 5) * 6, 2 + (y % 5) * 5
            images[i, r : r + 6, c : c + 4] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    return make_fake_mnist(tmp_path_factory.mktemp("mnist"))


def compose_cfg(config_name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture
def small_train_cfg(fake_mnist, tmp_path):
    """train.yaml shrunk for speed: toy data, one epoch, a throwaway MLflow store."""
    return compose_cfg(
        "train",
        [
            f"data.root={fake_mnist}",
            "data.download=false",
            "train.epochs=1",
            "train.batch_size=32",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.artifact_location={tmp_path}/artifacts",
        ],
    )
