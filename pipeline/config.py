"""Checks of user settings before anything runs or is recorded.

Each bad value gets one message naming the setting, its valid range and the value given; entry
scripts print it and exit with status 2 (pipeline.cli).
"""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .model import CUT_ALIASES, SplitCNN


class ConfigError(ValueError):
    pass


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _number(cfg, key) -> float | None:
    value = _get(cfg, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number (got {value!r})")
    return value


def check_range(cfg, key: str, low=None, high=None, low_open=False, high_open=False, integer=False) -> None:
    """Raise ConfigError unless ``key`` (if present) lies in the given range."""
    value = _number(cfg, key)
    if value is None:
        return
    if integer and int(value) != value:
        raise ConfigError(f"{key} must be an integer (got {value!r})")
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{key} must be in {interval} (got {value!r})")


def check_layer_names(cfg, key: str, allow_input: bool = True) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    names = list(value.keys()) if isinstance(value, DictConfig) else ([value] if isinstance(value, str) else list(value))
    valid = SplitCNN().cut_names[(0 if allow_input else 1) :]
    for name in names:
        if CUT_ALIASES.get(name, name) not in valid:
            raise ConfigError(f"{key}: unknown cut point {name!r}; valid: {', '.join(valid)}")


def check_choice(cfg, key: str, valid: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``key`` (if present) is one of ``valid``."""
    value = _get(cfg, key)
    if value is not None and value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)} (got {value!r})")


def validate_training(cfg: DictConfig) -> None:
    from .pruning import PRUNE_MODES
    from .training import CE_REDUCTIONS

    check_range(cfg, "train.mu", 0, 1, low_open=True)
    check_choice(cfg, "train.ce_reduction", CE_REDUCTIONS)
    check_range(cfg, "train.epochs", 1, integer=True)
    check_range(cfg, "train.batch_size", 1, integer=True)
    check_range(cfg, "train.lr", 0, low_open=True)
    check_range(cfg, "data.val_fraction", 0, 1, low_open=True, high_open=True)
    check_range(cfg, "data.train_subset", 2, integer=True)
    check_range(cfg, "data.test_subset", 1, integer=True)
    check_choice(cfg, "prune.mode", PRUNE_MODES)
    check_range(cfg, "prune.threshold", 0)
    check_range(cfg, "prune.finetune_epochs", 0, integer=True)
    check_layer_names(cfg, "prune.per_layer", allow_input=False)
    per_layer = _get(cfg, "prune.per_layer") or {}
    for name in per_layer:
        check_range(cfg, f"prune.per_layer.{name}", 0)  # null (= global threshold) passes
