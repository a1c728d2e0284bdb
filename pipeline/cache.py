"""Reuse of trained dense models between trials, processes and machines.

Training is the only expensive stage. A model is keyed by a hash of everything that determines
its weights (data selection and content, model widths, the train section, the seed) and kept
(1) in a local folder, guarded by a file lock so concurrent processes train it once, and
(2) as an MLflow run's artifact, so workers sharing a tracking server share the model too.

The MLflow runs of the cache (role ``trained-model``) live in their own experiment,
``cache.experiment`` (``cache_experiment_id``), on the same tracking URI as the sweep: the sweep's
experiment holds only the sweep and its trials, and a shared tracking server still shares the
models.

Workers on other machines (other local folders) coordinate through the tracking server with a
claim: a worker without the model opens a RUNNING ``trained-model`` run for the key and keeps it
alive with a beat (a metric bumped every CLAIM_BEAT_S); then one search of the key's runs says
whether the model is published (FINISHED: download it, delete the claim) and whether another live
claim is training it (tag TRAINING_TAG: wait for its model). A claim is made with that tag, and
the worker trains only if the search after it finds no other live claim tagged; otherwise it
removes its tag and waits (when both saw each other, both try again after a random pause). Tag
first, then read: of two workers at least one sees the other's tag, so two never both train,
whatever the order their claims became visible in (ordering claims by start time did not do that: a start time is stamped
by the client before the server stores the run, and under load an older claim showed up after a
younger one had started training). A claim whose beat has not moved for CLAIM_STALE_S (its
process died) is marked KILLED and the next worker takes over; a worker that finds its own claim
KILLED so claims again. Only a trainer whose beats did not reach the server for that long can be
taken over while it trains: then two train, and only the taker's run publishes the model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import optuna
from filelock import FileLock
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ecosplit_optuna_sweeper import _interrupt as interrupts

from . import tracking
from .config import inactive_sparsity_keys
from .data import MnistSplits, TensorSplit, resolve_root
from .model import SplitCNN, load_checkpoint, save_checkpoint
from .training import resolve_device

log = logging.getLogger(__name__)

# data settings that do not change the samples: where the files are and whether to fetch them
DATA_KEYS_IGNORED = ("root", "download")

ROLE = "trained-model"
CLAIM_BEAT_S = 2.0     # a claim's beat metric moves this often (waiting or training)
CLAIM_STALE_S = 15.0   # a claim whose beat did not move for this long is dead
CLAIM_POLL_S = 1.0     # how often a waiting worker looks again
BEAT_METRIC = "claim_beat"
TRAINING_TAG = "ecosplit.claim_training"  # on the claim that trains (see the module docstring)


def cache_experiment_id(cfg: DictConfig) -> str:
    """The id of the MLflow experiment holding the cache's trained-model runs, ``cache.experiment``
    in the store at ``tracking.uri`` (created if missing; looked up once per process)."""
    return tracking.configure(cfg.tracking.uri, cfg.cache.experiment, cfg.tracking.artifact_location,
                              cfg.tracking.sqlite_wal, setting="cache.experiment")


def _sha256(splits: list[TensorSplit]) -> str:
    h = hashlib.sha256()
    for split in splits:
        h.update(split.images.cpu().numpy().tobytes())
        h.update(split.labels.cpu().numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(data: MnistSplits) -> str:
    """sha256 of the training data: the train and validation images and labels."""
    return _sha256([data.train, data.val])


def data_selection(cfg: DictConfig) -> dict:
    """The data settings that choose the samples (not where the files are)."""
    return {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in DATA_KEYS_IGNORED}


_DIGESTS: dict[tuple, tuple[str, str]] = {}  # data selection -> (data_fingerprint, test split sha256)


def data_key(cfg: DictConfig) -> tuple:
    """What identifies the samples ``cfg.data`` loads within a process: the selection settings, the
    folder and its MNIST files' names, sizes and modification times."""
    root = resolve_root(cfg.data.root)
    raw = root / "MNIST" / "raw"
    stats = [(e.name, e.stat()) for e in os.scandir(raw)] if raw.is_dir() else []
    files = tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    return str(root), json.dumps(data_selection(cfg), sort_keys=True), files


def data_digests(cfg: DictConfig, data: MnistSplits) -> tuple[str, str]:
    """``data_fingerprint(data)`` and the sha256 of the test split. Hashing the images takes ~0.3 s
    for the full MNIST, so it is done once per process and ``data_key`` (``data`` must be what
    ``cfg.data`` loads)."""
    key = data_key(cfg)
    if key not in _DIGESTS:
        _DIGESTS[key] = (data_fingerprint(data), _sha256([data.test]))
    return _DIGESTS[key]


def path_start(cfg: DictConfig) -> DictConfig | None:
    """Training along the regularisation path of eq. (10) (``train.path``, a list of 1 - mu values):
    the config of the model a training of ``cfg`` starts from - the same config at the largest
    listed 1 - mu below ``cfg``'s - or None (from scratch: no list, or nothing listed below).

    The listed values need not include cfg's own 1 - mu (a continuous search starts from the
    nearest grid point below). Each model on the path is itself trained from its own start, so a
    model is a function of its config alone, whatever order a sweep asks for them in."""
    path = cfg.train.get("path") or []
    one_minus_mu = 1.0 - float(cfg.train.mu)
    below = [float(p) for p in path if float(p) < one_minus_mu * (1.0 - 1e-9)]
    if not below:
        return None
    # a frozen copy (train.mu is an interpolation in a sweep); hydra's node, if any, is not the job's
    start = OmegaConf.create({k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                              for k, v in cfg.items() if k != "hydra"})
    start.train.mu = 1.0 - max(below)
    return start


def training_key(cfg: DictConfig, data: MnistSplits) -> str:
    """sha256 of the resolved training config and the training data's content: the train section,
    and ``prune.schedule`` with ``prune.gradual`` under gradual pruning (which shapes the trained
    model). The sparsity settings at their paper values are left out (``config.inactive_sparsity_keys``),
    so the paper's procedure keeps the key it had before they existed. Along ``train.path``, the key
    of the model training starts from instead of the list (a model does not depend on the listed
    values above its own)."""
    inactive = inactive_sparsity_keys(cfg)
    train = {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items()
             if f"train.{k}" not in inactive and k != "path"}
    blob = {
        "data": data_selection(cfg),
        "data_sha256": data_digests(cfg, data)[0],
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        # the device actually used (auto differs per machine; CPU and GPU numerics differ)
        "train": {**train, "device": resolve_device(cfg.train.get("device", "cpu")).type},
        "seed": cfg.seed,
    }
    if "prune.gradual" not in inactive:
        blob["prune"] = {"schedule": cfg.prune.schedule, "gradual": OmegaConf.to_container(cfg.prune.gradual, resolve=True)}
    start = path_start(cfg)
    if start is not None:
        blob["start"] = training_key(start, data)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


class _Beat:
    """Bump the claim run's beat metric every CLAIM_BEAT_S from a thread until stopped."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id
        self._last_ok = time.monotonic()  # the claim's creation counts as its first beat
        self.worst_gap_s = 0.0  # the longest time between two beats the server took
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecosplit-cache-claim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        step, failing = 0, False
        while not self._stop.wait(CLAIM_BEAT_S):  # a claim is fresh for CLAIM_STALE_S anyway
            try:
                self.client.log_metric(self.run_id, BEAT_METRIC, step, step=step)
                now = time.monotonic()
                self.worst_gap_s, self._last_ok, failing = max(self.worst_gap_s, now - self._last_ok), now, False
            except Exception as e:  # a hiccup of the server: the next beat may get through
                if not failing:  # once per streak: CLAIM_STALE_S without a beat and others take over
                    log.warning("cache claim %s: beat failed (%s); retrying", self.run_id, e)
                failing = True
            step += 1

    def may_be_taken_over(self) -> bool:
        """True if the server went long enough without a beat (a slow server, a paused process) that
        another worker may have found the claim stale; never, with every beat in time."""
        return max(self.worst_gap_s, time.monotonic() - self._last_ok) > CLAIM_STALE_S / 2

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class ModelCache:
    """get_or_train(key, train_fn): local file, else MLflow artifact, else train and store both."""

    def __init__(self, local_dir: str | Path, experiment_id: str | None = None, tags: dict | None = None):
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.experiment_id = experiment_id  # None: local only
        self.tags = {k: tracking.mask_secrets(str(v)) for k, v in (tags or {}).items()}  # on the claim run
        self._beats: dict[str, tuple[float, float]] = {}  # claim run id -> (beat seen, when it moved)
        self._artifact_uris: dict[str, str] = {}  # claim run id -> its artifact URI, from its creation

    def _path(self, key: str) -> Path:
        return self.local_dir / f"{key}.pt"

    def _runs(self, key: str):
        """The key's runs in the cache's experiment, any status (one query for what is published
        and who trains it)."""
        return MlflowClient().search_runs(
            [self.experiment_id],
            filter_string=f"tags.`ecosplit.cache_key` = '{key}' and tags.`ecosplit.role` = '{ROLE}'",
            max_results=1000,
        )

    def _claim(self, key: str, cfg: DictConfig) -> str:
        # train.mu as a tag: which model of a sweep's train.path a run holds, at a glance in the UI
        run = MlflowClient().create_run(self.experiment_id, run_name=f"trained-{key[:12]}",
                                        tags={**self.tags, "ecosplit.cache_key": key, "ecosplit.role": ROLE,
                                              "ecosplit.train_mu": repr(float(cfg.train.mu)),
                                              TRAINING_TAG: "true"})  # tagged, then the caller reads
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri  # for _publish: no look-up
        return run.info.run_id

    def _trainers(self, key: str, mine: str, runs) -> list[str]:
        """Other workers' live claims among the key's ``runs`` tagged as training, oldest first;
        claims whose beat stopped for CLAIM_STALE_S are KILLED."""
        client = MlflowClient()
        now = time.monotonic()
        live = []
        for run in sorted((r for r in runs if r.info.status == "RUNNING" and r.info.run_id != mine),
                          key=lambda r: (r.info.start_time, r.info.run_id)):
            run_id = run.info.run_id
            beat = run.data.metrics.get(BEAT_METRIC, -1.0)
            seen, moved = self._beats.get(run_id, (None, now))
            if beat != seen:
                self._beats[run_id] = (beat, now)
            elif now - moved > CLAIM_STALE_S:
                log.warning("cache claim %s for %s is stale (its worker died?): taking over", run_id, key[:12])
                client.set_tag(run_id, "failure_reason", f"claim stale: no beat for {CLAIM_STALE_S:.0f} s")
                client.set_terminated(run_id, "KILLED")
                continue
            if run.data.tags.get(TRAINING_TAG) == "true":
                live.append(run_id)
        return live

    def _save_local(self, path: Path, model: SplitCNN) -> None:
        tmp = path.with_suffix(".tmp")
        save_checkpoint(model, tmp)
        tmp.replace(path)  # atomic: a reader never sees half a file

    def _publish(self, run_id: str, beat: _Beat, model: SplitCNN, cfg: DictConfig) -> None:
        """The trained model and its config to the claim run, which then ends FINISHED; it beats
        until the upload is done (a slow upload must not look like a dead worker)."""
        client = MlflowClient()
        try:
            if beat.may_be_taken_over() and client.get_run(run_id).info.status != "RUNNING":
                # another worker found the claim stale and trains the model too: its run, not
                # this KILLED one made FINISHED again, publishes it; this copy stays local
                beat.stop()
                log.warning("cache claim %s was taken over as stale while this worker trained its model: "
                            "the model is kept in the local cache only", run_id)
                self._artifact_uris.pop(run_id, None)
                return
            with tempfile.TemporaryDirectory() as tmp:  # one upload call for both files
                save_checkpoint(model, Path(tmp) / "dense.pt")
                (Path(tmp) / "config.yaml").write_text(tracking.mask_secrets(OmegaConf.to_yaml(cfg, resolve=True)))
                tracking.log_artifacts(run_id, tmp, self._artifact_uris.pop(run_id, None))
            beat.stop()
            client.set_terminated(run_id, "FINISHED")
        except BaseException as exc:
            beat.stop()
            _end_claim(client, run_id, exc)
            raise

    def get_or_train(self, key: str, train_fn: Callable[[], SplitCNN], cfg: DictConfig,
                     background: Callable[..., object] | None = None) -> tuple[SplitCNN, str]:
        """The dense model and where it came from: "local", "mlflow" or "trained". With
        ``background`` (e.g. ``RunLog.in_background``) a model trained here is uploaded by it while
        the caller goes on; the local copy is saved first, so local reuse never waits."""
        path = self._path(key)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                return load_checkpoint(path), "local"
            if self.experiment_id is None:
                model = train_fn()
                self._save_local(path, model)
                return model, "trained"
            client = MlflowClient()
            claim: str | None = None
            beat: _Beat | None = None
            mark = interrupts.count()
            try:
                # claim first, then one query answers both "published already?" and "whose turn?"
                # (a model found published costs a claim made and deleted, next to its download)
                while True:
                    if claim is None:
                        with interrupts.deferred():  # a claim whose id is lost would wait to go stale
                            claim = self._claim(key, cfg)
                            beat = _Beat(client, claim)
                        tagged = True
                    runs = self._runs(key)
                    if any(r.info.run_id == claim and r.info.status != "RUNNING" for r in runs):
                        # found stale (the server missed its beats) and KILLED by another worker:
                        # that run stays as it ended; this worker claims again
                        beat.stop()
                        self._artifact_uris.pop(claim, None)
                        claim, beat = None, None
                        continue
                    published = [r for r in runs if r.info.status == "FINISHED"]
                    if published:
                        beat.stop()
                        beat = None
                        client.delete_run(claim)  # not needed: someone else trained it
                        self._artifact_uris.pop(claim, None)
                        claim = None
                        remote = tracking.download(published[0].info.run_id, "dense.pt",
                                                   tempfile.mkdtemp(prefix="ecosplit-cache-"))
                        model = load_checkpoint(remote)
                        shutil.rmtree(remote.parent, ignore_errors=True)  # the download's temp dir
                        self._save_local(path, model)
                        return model, "mlflow"
                    others = self._trainers(key, claim, runs)
                    if not others:
                        if tagged:  # tagged, then read: no other live claim is tagged
                            break
                        client.set_tag(claim, TRAINING_TAG, "true")
                        tagged = True
                        continue  # read again before training
                    if tagged:  # another claim trains (or was tagged at the same time): step back
                        client.delete_tag(claim, TRAINING_TAG)
                        tagged = False
                        time.sleep(random.uniform(0, CLAIM_POLL_S))
                    log.info("waiting for another worker to train %s (claim %s)", key[:12], others[0])
                    time.sleep(CLAIM_POLL_S)
                model = train_fn()
                self._save_local(path, model)
                claim, beat, publish = None, None, (claim, beat, model, cfg)  # _publish ends the claim
                if background is None:
                    self._publish(*publish)
                else:
                    background(self._publish, *publish)
                return model, "trained"
            except BaseException as exc:
                if beat is not None:
                    beat.stop()
                if claim is not None:
                    # a Ctrl-C behind another error (see _interrupt) is a Ctrl-C
                    _end_claim(client, claim, exc, interrupted=interrupts.interrupted_since(mark))
                raise


def _end_claim(client: MlflowClient, run_id: str, exc: BaseException, interrupted: bool = False) -> None:
    """End the claim of a training that did not finish, saying why: KILLED when it was stopped
    (Ctrl-C, or its trial pruned: a deliberate stop, not an error), FAILED otherwise."""
    stopped = interrupted or isinstance(exc, (KeyboardInterrupt, optuna.TrialPruned))
    reason = (f"training stopped: the trial was pruned ({exc})" if isinstance(exc, optuna.TrialPruned)
              else tracking.failure_reason(KeyboardInterrupt() if interrupted else exc))
    try:
        client.set_tag(run_id, "failure_reason", tracking.mask_secrets(reason)[:tracking.MAX_TAG_CHARS])
        client.set_terminated(run_id, "KILLED" if stopped else "FAILED")
    except Exception as e:
        log.warning("could not end cache claim %s: %s", run_id, e)
