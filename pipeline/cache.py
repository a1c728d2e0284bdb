"""Reuse of trained dense models between trials, processes and machines.

Training is the only expensive stage. A model is keyed by a hash of everything that determines
its weights (data selection and content, model widths, the train section, the seed) and kept
(1) in a local folder, guarded by a file lock so concurrent processes train it once, and
(2) as an MLflow run's artifact, so workers sharing a tracking server share the model too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable

from filelock import FileLock
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from . import tracking
from .data import MnistSplits
from .model import SplitCNN, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

# data settings that do not change the samples: where the files are and whether to fetch them
_DATA_KEYS_IGNORED = ("root", "download")


def data_fingerprint(data: MnistSplits) -> str:
    h = hashlib.sha256()
    for split in (data.train, data.val):
        h.update(split.images.numpy().tobytes())
        h.update(split.labels.numpy().tobytes())
    return h.hexdigest()


def training_key(cfg: DictConfig, data: MnistSplits) -> str:
    """sha256 of the resolved training config and the training data's content."""
    data_cfg = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in _DATA_KEYS_IGNORED}
    blob = {
        "data": data_cfg,
        "data_sha256": data_fingerprint(data),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


class ModelCache:
    """get_or_train(key, train_fn): local file, else MLflow artifact, else train and store both."""

    def __init__(self, local_dir: str | Path, experiment_id: str | None = None):
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.experiment_id = experiment_id  # None: local only

    def _path(self, key: str) -> Path:
        return self.local_dir / f"{key}.pt"

    def _from_mlflow(self, key: str) -> Path | None:
        if self.experiment_id is None:
            return None
        runs = MlflowClient().search_runs(
            [self.experiment_id],
            filter_string=f"tags.`ecosplit.cache_key` = '{key}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        if not runs:
            return None
        folder = tracking.download(runs[0].info.run_id, "dense.pt", tempfile.mkdtemp(prefix="ecosplit-cache-"))
        return folder

    def _to_mlflow(self, key: str, model: SplitCNN, cfg: DictConfig) -> None:
        if self.experiment_id is None:
            return
        client = MlflowClient()
        run = client.create_run(self.experiment_id, run_name=f"trained-{key[:12]}",
                                tags={"ecosplit.cache_key": key, "ecosplit.role": "trained-model"})
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(model, Path(tmp) / "dense.pt")
            client.log_artifact(run.info.run_id, str(Path(tmp) / "dense.pt"))
        client.log_text(run.info.run_id, tracking.mask_secrets(OmegaConf.to_yaml(cfg, resolve=True)), "config.yaml")
        client.set_terminated(run.info.run_id, "FINISHED")

    def get_or_train(self, key: str, train_fn: Callable[[], SplitCNN], cfg: DictConfig) -> tuple[SplitCNN, str]:
        """The dense model and where it came from: "local", "mlflow" or "trained"."""
        path = self._path(key)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                return load_checkpoint(path), "local"
            remote = self._from_mlflow(key)
            if remote is not None:
                model = load_checkpoint(remote)
                save_checkpoint(model, path)
                return model, "mlflow"
            model = train_fn()
            tmp = path.with_suffix(".tmp")
            save_checkpoint(model, tmp)
            tmp.replace(path)  # atomic: a reader never sees half a file
            self._to_mlflow(key, model, cfg)
            return model, "trained"
