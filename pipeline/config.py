"""Checks of user settings before anything runs or is recorded, and the builders from config to
the domain objects of the numpy math (energy costs, route, link, timing, carbon index).

Each bad value gets one message naming the setting, its valid range and the value given; entry
scripts print it and exit with status 2 (pipeline.cli).
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from . import energy
from .channel import RATE_MODELS
from .deployment import arithmetic
from .evaluation import CANDIDATES
from .quantisation import ACTIVATION_BITS, ACTIVATION_CODINGS, GRANULARITIES
from .model import SplitCNN
from .simulation import LATE_UPLOADS, Link, Route, Timing


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


def check_range(cfg, key: str, low=None, high=None, low_open=False, high_open=False, integer=False,
                required=False) -> None:
    """Raise ConfigError unless ``key`` (if present, or always when ``required``) lies in the given range."""
    value = _number(cfg, key)
    if value is None and not required:
        return
    if integer and value is not None and not isinstance(value, int):  # 32.0 too: the code indexes with it
        raise ConfigError(f"{key} must be an integer (got {value!r})")
    ok = value is not None
    if ok and low is not None:
        ok &= value > low if low_open else value >= low
    if ok and high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ConfigError(f"{key} must be in {interval} (got {value!r})")


@functools.cache
def _layer_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The paper CNN's cut points and weighted layers, by name (the same for any widths): made
    once per process, not in every trial's validation (7.1 -> 4.7 ms a trial,
    ``benchmarks/bench_trial_tracking.py --breakdown`` at b950d62 and 0593a24)."""
    model = SplitCNN()
    return tuple(model.cut_names), tuple(name for name, _ in model.weighted_layers())


def check_choice(cfg, key: str, valid: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``key`` (if present) is one of ``valid``."""
    value = _get(cfg, key)
    if value is not None and value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)} (got {value!r})")


def validate_training(cfg: DictConfig) -> None:
    from .pruning import PRUNE_MODES
    from .training import CE_REDUCTIONS, LR_SCHEDULES, resolve_device

    validate_tracking(cfg)
    check_range(cfg, "train.mu", 0, 1, low_open=True)
    check_choice(cfg, "train.ce_reduction", CE_REDUCTIONS)
    check_range(cfg, "train.epochs", 1, integer=True)
    check_range(cfg, "train.max_steps", 1, integer=True)
    check_choice(cfg, "train.lr_schedule", LR_SCHEDULES)
    device = _get(cfg, "train.device")
    if device is not None:
        try:
            resolve_device(device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    check_range(cfg, "train.batch_size", 1, integer=True)
    check_range(cfg, "train.lr", 0, low_open=True)
    check_range(cfg, "train.num_threads", 1, integer=True)  # null: torch's default (results then vary by machine)
    check_range(cfg, "seed", 0, 2**32 - 1, integer=True)
    check_range(cfg, "data.split_seed", 0, 2**63 - 1, integer=True)
    _one_of(cfg, "data.download", [True, False])
    check_range(cfg, "prune.finetune_lr", 0, low_open=True)
    _check_widths(cfg)
    check_range(cfg, "data.val_fraction", 0, 1, low_open=True, high_open=True)
    check_range(cfg, "data.train_subset", 2, integer=True)
    check_range(cfg, "data.train_per_class", 1, integer=True)
    check_range(cfg, "data.train_repeat", 1, integer=True)
    check_range(cfg, "data.test_subset", 1, integer=True)
    check_choice(cfg, "prune.mode", PRUNE_MODES)
    check_range(cfg, "prune.threshold", 0)
    check_range(cfg, "prune.finetune_epochs", 0, integer=True)
    check_range(cfg, "prune.finetune_epoch_steps", 1, integer=True)
    path = _get(cfg, "train.path")
    if path is not None:
        bad = [path] if not isinstance(path, (list, ListConfig)) else [
            v for v in path if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1]
        if bad:
            raise ConfigError(f"train.path must be null or a list of 1 - mu values in (0, 1) (got {bad[0]!r})")
    per_layer = _get(cfg, "prune.per_layer") or {}
    weighted = _layer_names()[1]
    for name in per_layer:  # a cut name that holds no weights (pool1, softmax) would be ignored
        if name not in weighted:
            raise ConfigError(f"prune.per_layer: {name!r} is no layer with weights; valid: {', '.join(weighted)}")
    for name in per_layer:
        check_range(cfg, f"prune.per_layer.{name}", 0)  # null (= global threshold) passes
    validate_sparsity(cfg)


def _check_widths(cfg: DictConfig) -> None:
    """``model.conv_channels`` (4 convolutions) and ``model.fc_units`` (5 layers, the last MNIST's 10 classes)."""
    for key, n in (("model.conv_channels", 4), ("model.fc_units", 5)):
        widths = _get(cfg, key)
        if widths is None:
            continue
        if not isinstance(widths, (list, ListConfig)) or len(widths) != n:
            raise ConfigError(f"{key} must be a list of {n} layer widths (got {widths!r})")
        for i in range(n):
            check_range(cfg, f"{key}.{i}", 1, integer=True)
    if (fc := _get(cfg, "model.fc_units")) is not None and fc[-1] != 10:
        raise ConfigError(f"model.fc_units must end with 10, MNIST's classes (got {list(fc)!r})")


# Settings added after trained models were cached and studies were run, at the values that give the
# paper's procedure (pipeline.sparsity); the default of each new key is its paper value.
PAPER_SPARSITY = {"train.l1_mode": "penalty", "train.group_l1": 0.0, "prune.schedule": "oneshot"}
GROUPED_LAYERS = ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3", "fc4")  # pipeline.sparsity.unit_groups


def inactive_sparsity_keys(cfg: DictConfig) -> set[str]:
    """The keys of PAPER_SPARSITY at their paper value, ``train.group_l1_per_layer`` when all null
    and ``prune.gradual`` unless it is used: left out of the reuse cache's key and the sweep's
    definition, which therefore stay what they were before these settings existed (old cached
    models and studies are still found)."""
    keys = {key for key, paper in PAPER_SPARSITY.items() if _get(cfg, key) in (None, paper)}
    if all(v is None for v in (_get(cfg, "train.group_l1_per_layer") or {}).values()):
        keys.add("train.group_l1_per_layer")
    if _get(cfg, "prune.schedule") != "gradual":
        keys.add("prune.gradual")
    return keys


def validate_sparsity(cfg: DictConfig) -> None:
    """``train.l1_mode``, ``train.group_l1``, ``prune.schedule`` and, under ``gradual``, ``prune.gradual.*``
    (an unused gradual block is not checked: its end_epoch may exceed a short run's epochs)."""
    from .sparsity import GRADUAL_SCOPES, L1_MODES, PRUNE_SCHEDULES

    check_choice(cfg, "train.l1_mode", L1_MODES)
    check_range(cfg, "train.group_l1", 0)
    for name in _get(cfg, "train.group_l1_per_layer") or {}:
        if name not in GROUPED_LAYERS:
            raise ConfigError(f"train.group_l1_per_layer: unknown grouped layer {name!r}; valid: {', '.join(GROUPED_LAYERS)}")
        check_range(cfg, f"train.group_l1_per_layer.{name}", 0)  # null (= train.group_l1) passes
    check_choice(cfg, "prune.schedule", PRUNE_SCHEDULES)
    if _get(cfg, "prune.schedule") != "gradual":
        return
    g = "prune.gradual"
    for key in ("initial_sparsity", "final_sparsity", "start_epoch", "end_epoch", "frequency_steps", "scope"):
        if _get(cfg, f"{g}.{key}") is None:
            raise ConfigError(f"{g}.{key} must be set when prune.schedule=gradual (got None)")
    check_range(cfg, f"{g}.final_sparsity", 0, 1, high_open=True)
    check_range(cfg, f"{g}.initial_sparsity", 0, _get(cfg, f"{g}.final_sparsity"))
    epochs = _get(cfg, "train.epochs")
    check_range(cfg, f"{g}.start_epoch", 0, epochs, integer=True)
    check_range(cfg, f"{g}.end_epoch", _get(cfg, f"{g}.start_epoch"), epochs, integer=True)
    check_range(cfg, f"{g}.frequency_steps", 1, integer=True)
    check_choice(cfg, f"{g}.scope", GRADUAL_SCOPES)
    weighted = _layer_names()[1]
    for name in _get(cfg, f"{g}.per_layer") or {}:
        if name not in weighted:
            raise ConfigError(f"{g}.per_layer: unknown weighted layer {name!r}; valid: {', '.join(weighted)}")
        check_range(cfg, f"{g}.per_layer.{name}", 0, 1, high_open=True)  # null (= final_sparsity) passes
    for name in _get(cfg, f"{g}.units") or {}:
        if name not in GROUPED_LAYERS:
            raise ConfigError(f"{g}.units: unknown grouped layer {name!r}; valid: {', '.join(GROUPED_LAYERS)}")
        check_range(cfg, f"{g}.units.{name}", 0, 1, high_open=True)  # null (= no unit removed) passes


# -- energy (Tables I, II) -----------------------------------------------------------------
ENERGY_CHOICES = {
    "energy.memory_model": energy.MEMORY_MODELS,
    "energy.conv_macs": energy.CONV_MAC_RULES,
    "energy.pool_windows": energy.POOL_WINDOW_RULES,
    "energy.weight_storage": energy.WEIGHT_STORAGES,
}


def _required_range(cfg: DictConfig, key: str, low=None, high=None, integer=False) -> None:
    """check_range for a key that must be set: None is refused with the same message."""
    if OmegaConf.select(cfg, key) is None:
        lo, hi = "-inf" if low is None else low, "inf" if high is None else high
        raise ConfigError(f"{key} must be in [{lo}, {hi}{']' if high is not None else ')'} (got None)")
    check_range(cfg, key, low, high, integer=integer)


def _required_choice(cfg: DictConfig, key: str, valid) -> None:
    valid = tuple(map(str, valid))
    if OmegaConf.select(cfg, key) is None:
        raise ConfigError(f"{key} must be one of {', '.join(valid)} (got None)")
    check_choice(cfg, key, valid)


def validate_energy(cfg: DictConfig) -> None:
    """Every ``energy.*`` setting, before any work; raises ConfigError naming the setting."""
    e = cfg.energy
    levels = tuple(e.memory_pj_per_64bit)
    _required_choice(cfg, "energy.precision", [p for p in e.operations_pj if p in e.bits_per_element])
    for p in e.operations_pj:
        for op in ("add", "mul"):
            if OmegaConf.select(cfg, f"energy.operations_pj.{p}.{op}") is None:
                raise ConfigError(f"energy.operations_pj.{p}.{op} must be a number of pJ >= 0 (got None)")
            check_range(cfg, f"energy.operations_pj.{p}.{op}", 0)
    for p in e.bits_per_element:
        check_range(cfg, f"energy.bits_per_element.{p}", 1, integer=True)
    try:
        arithmetic(e.precision)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _required_choice(cfg, f"energy.accumulate.{e.precision}", list(e.operations_pj))
    for level in levels:
        check_range(cfg, f"energy.memory_pj_per_64bit.{level}", 0)
    for key, valid in ENERGY_CHOICES.items():
        _required_choice(cfg, key, valid)
    check_range(cfg, "energy.per_mac.operand_fetches", 0)
    _required_choice(cfg, "energy.per_mac.level", levels)
    _required_choice(cfg, "energy.weight_memory", (*levels, "auto"))
    if e.activation_memory is not None:
        check_choice(cfg, "energy.activation_memory", levels)
    for kind in ("conv", "fc"):
        if OmegaConf.select(cfg, f"energy.csr_index_bits.{kind}") is None:
            raise ConfigError(f"energy.csr_index_bits.{kind} must be an integer in [1, 32] (got None)")
        check_range(cfg, f"energy.csr_index_bits.{kind}", 1, 32, integer=True)
    capacities = e.memory_capacity_bytes
    if set(capacities) != set(levels):
        raise ConfigError(f"energy.memory_capacity_bytes must name every level of energy.memory_pj_per_64bit "
                          f"({', '.join(levels)}) (got {', '.join(capacities)})")
    for level in levels:
        check_range(cfg, f"energy.memory_capacity_bytes.{level}", 0, low_open=True)  # null = unbounded passes
    if e.weight_memory == "auto" and all(capacities[level] is not None for level in levels):
        raise ConfigError("energy.memory_capacity_bytes needs an unbounded level (null) when "
                          f"energy.weight_memory=auto (got {OmegaConf.to_container(capacities)})")


def energy_costs(energy_cfg: DictConfig) -> energy.EnergyCosts:
    """Tables I and II at the configured precision, memory model and levels (pJ -> J)."""
    bits = energy_cfg.bits_per_element[energy_cfg.precision]
    ops = energy_cfg.operations_pj[energy_cfg.precision]
    accumulator = energy_cfg.operations_pj[energy_cfg.accumulate[energy_cfg.precision]]
    access_j = {level: pj * 1e-12 for level, pj in energy_cfg.memory_pj_per_64bit.items()}
    activation_j = 0.0
    if energy_cfg.activation_memory:
        activation_j = energy.element_access_energy_j(access_j[energy_cfg.activation_memory], bits)
    return energy.EnergyCosts(
        e_mul_j=ops.mul * 1e-12, e_add_j=ops.add * 1e-12, access_64bit_j=access_j,
        memory_model=energy_cfg.memory_model, operand_fetches=energy_cfg.per_mac.operand_fetches,
        operand_level=energy_cfg.per_mac.level, weight_memory=energy_cfg.weight_memory,
        capacity_bytes=dict(energy_cfg.memory_capacity_bytes), activation_element_j=activation_j,
        e_acc_add_j=accumulator.add * 1e-12, operand_bits=int(bits),
    )


# -- evaluation: channel, timing, trajectory, statistics, CO2 -------------------------------
def _one_of(cfg, key: str, options) -> None:
    value = OmegaConf.select(cfg, key)
    if not any(value == o and type(value) is type(o) for o in options):  # 16.0 is no 16, 1 no True
        raise ConfigError(f"{key} must be one of {', '.join(map(str, options))} (got {value!r})")


# What MLflow 3.17 can track to: a database (SQLAlchemy's dialect, maybe "+driver") or a server;
# a plain folder (file store) only with MLFLOW_ALLOW_FILE_STORE=true, else MLflow refuses it
# after a traceback; a plugin's scheme (entry point group mlflow.tracking_store) too
TRACKING_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
TRACKING_SERVERS = ("http", "https", "databricks")


@functools.cache
def _plugin_tracking_schemes() -> frozenset[str]:
    """Schemes that installed MLflow plugins register, read once per process: the distributions'
    scan takes ~3 ms and the tracking settings are checked twice in every trial (validation 11.6 ms
    a trial at 5d5991d, 4.8 at 4af1da7: ``benchmarks/bench_trial_tracking.py --breakdown``)."""
    from importlib.metadata import entry_points
    return frozenset(e.name for e in entry_points(group="mlflow.tracking_store"))


def check_writable_folder(cfg: DictConfig, key: str) -> None:
    """``key`` names a folder this process can create or write in (checked without creating it):
    a file in its place, or in place of a parent, or a folder without write permission is one
    line naming the setting, not an OSError in every trial."""
    import os
    from pathlib import Path

    value = _get(cfg, key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a folder (created if missing), a non-empty text (got {value!r})")
    folder = Path(value).expanduser().absolute()
    try:  # a dangling link is in the way as a file is
        existing = next(p for p in (folder, *folder.parents) if p.exists() or p.is_symlink())
    except OSError as e:  # e.g. a parent this user may not enter
        raise ConfigError(f"{key}={value}: cannot be used ({e.strerror}: {e.filename}); set {key} to a folder "
                          "this user can write in") from None
    if not existing.is_dir():
        where = "it" if existing == folder else f"its parent {existing}"
        raise ConfigError(f"{key}={value}: {where} is a file, not a folder; set {key} to a folder "
                          "(created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" (the folder {existing}, where it would be created)"
        raise ConfigError(f"{key}={value}: not writable by this user{where}; set {key} to a folder "
                          "it can write in")


def validate_tracking(cfg: DictConfig) -> None:
    """The MLflow settings a value could be wrong in: the URI's kind (whether the store is there
    is checked as it is opened), the SQLite write-ahead-log switch and the wait for a server."""
    if OmegaConf.select(cfg, "tracking") is None:
        return
    _one_of(cfg, "tracking.sqlite_wal", [True, False])
    check_range(cfg, "tracking.server_wait_s", 0)
    cache = OmegaConf.select(cfg, "cache") or {}  # train.py has none, but a preset's cache.dir
    for key in ("enabled", "mlflow"):
        if key in cache:
            _one_of(cfg, f"cache.{key}", [True, False])
    if cache:
        folder = _get(cfg, "cache.dir")
        if folder is not None and (not isinstance(folder, str) or not folder.strip()):
            raise ConfigError(f"cache.dir must be a folder for the reuse cache's local copies (got {folder!r})")
    for key in ("tracking.experiment", "cache.experiment"):
        section, name = key.split(".")
        if name in (OmegaConf.select(cfg, section) or {}):
            value = _get(cfg, key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{key} must be an MLflow experiment's name, a non-empty text (got {value!r})")
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    from mlflow.utils.uri import get_uri_scheme  # as MLflow picks a store for a URI ("postgresql+psycopg" -> postgresql)

    uri = cfg.tracking.uri
    known = {*TRACKING_DATABASES, *TRACKING_SERVERS, *_plugin_tracking_schemes()}
    if MLFLOW_ALLOW_FILE_STORE.get():
        known |= {"", "file"}
    if not isinstance(uri, str) or (uri != "databricks" and get_uri_scheme(uri) not in known):
        from hydra_plugins.ecosplit_optuna_sweeper.masking import mask_secrets
        raise ConfigError(
            f"tracking.uri must be a database ({', '.join(d + '://' for d in TRACKING_DATABASES)}, e.g. "
            "sqlite:///mlflow.db) or a tracking server (http(s)://host:port, databricks); a plain folder only "
            f"with MLFLOW_ALLOW_FILE_STORE=true (got {mask_secrets(str(uri))!r})")


def registration_names(cfg: DictConfig) -> tuple[str | None, str]:
    """(selection.registered_model, or None: register nothing; selection.alias), as text: Hydra
    reads selection.alias=2024 as a number."""
    name, alias = OmegaConf.select(cfg, "selection.registered_model"), cfg.selection.alias
    return (str(name) if name not in (None, "") else None), str(alias)


def validate_registration(cfg: DictConfig, required: bool = False) -> None:
    """``selection.registered_model`` and ``selection.alias`` as MLflow's model registry accepts
    them (mlflow.utils.validation, 3.17), checked before a sweep trains or a promotion logs
    anything. A sweep without a name registers nothing; a promotion (``required``) needs one."""
    import posixpath

    name, alias = registration_names(cfg)
    if name is None:
        if required:
            raise ConfigError("selection.registered_model must name the registered model to promote to (got "
                              f"{OmegaConf.select(cfg, 'selection.registered_model')!r})")
        return
    if not name.strip() or "/" in name or ":" in name or posixpath.normpath(name) in (".", "..") or name.startswith(".."):
        raise ConfigError("selection.registered_model must be a name without '/' or ':', not '.' nor starting with "
                          f"'..' (got {name!r}); null registers nothing")
    if (isinstance(cfg.selection.alias, bool) or not re.fullmatch(r"[\w\-]{1,255}", alias) or alias.lower() == "latest"
            or re.fullmatch(r"[vV]\d+", alias)):
        raise ConfigError("selection.alias must be 1-255 letters, digits, '_' or '-', and neither 'latest' nor "
                          f"v<number>, which MLflow reserves (got {alias!r})")


def validate_evaluation(cfg: DictConfig) -> None:
    """Every energy, channel, timing, trajectory, statistics and CO2 setting, before any work or recording."""
    c, t = cfg.channel, cfg.trajectory
    validate_tracking(cfg)
    validate_energy(cfg)
    for key in ("channel.power_w", "channel.noise_psd_w_per_hz", "channel.bandwidth_hz"):
        check_range(cfg, key, 0, low_open=True)
    if not isinstance(c.bandwidths_hz, (list, ListConfig)) or not c.bandwidths_hz:
        raise ConfigError(f"channel.bandwidths_hz must be a list of one or more bandwidths in Hz (got {c.bandwidths_hz!r})")
    for i, _ in enumerate(c.bandwidths_hz):
        check_range(cfg, f"channel.bandwidths_hz.{i}", 0, low_open=True)
    _one_of(cfg, "channel.activation_bits", list(ACTIVATION_BITS))
    _one_of(cfg, "channel.activation_granularity", list(GRANULARITIES))
    _one_of(cfg, "channel.activation_coding", list(ACTIVATION_CODINGS))
    check_range(cfg, "channel.input_bits_per_element", 1, integer=True)
    _one_of(cfg, "channel.fixed_cuts_send_index", [True, False])
    _one_of(cfg, "channel.decision", ["oracle", "causal"])
    _one_of(cfg, "channel.late_upload", list(LATE_UPLOADS))
    check_range(cfg, "channel.client_macs_per_s", 0, low_open=True)
    # the link (README "The link, realistically"); each is read on every evaluation, so null is refused
    _one_of(cfg, "channel.rate_model", list(RATE_MODELS))
    check_range(cfg, "channel.block_error_rate", 0, 0.5, low_open=True, high_open=True, required=True)
    check_range(cfg, "channel.pa_efficiency", 0, 1, low_open=True, required=True)
    check_range(cfg, "channel.circuit_power_w", 0, required=True)
    for key in ("trajectory.speed_mps", "trajectory.inference_rate_hz", "trajectory.coherence_time_s",
                "trajectory.reference_distance_m", "trajectory.min_distance_m", "trajectory.location_radius_m",
                "trajectory.duration_s"):
        # null: only duration_s (one pass of the waypoints)
        check_range(cfg, key, 0, low_open=True, required=key != "trajectory.duration_s")
    # one radio: an upload that meets its deadline ends before the next inference starts
    check_range(cfg, "channel.deadline_s", 0, 1 / float(t.inference_rate_hz), low_open=True)
    check_range(cfg, "trajectory.path_loss_exponent", 0, required=True)
    _check_points(cfg, "trajectory.waypoints_m", many=True)
    _check_points(cfg, "trajectory.server_m")
    for name in t.get("locations") or {}:
        _check_points(cfg, f"trajectory.locations.{name}")
    if len(t.waypoints_m) < 2:
        raise ConfigError(f"trajectory.waypoints_m needs at least 2 points (got {len(t.waypoints_m)})")
    check_range(cfg, "trajectory.seed", 0, integer=True)
    _check_route_size(t)
    _one_of(cfg, "selection.candidates", list(CANDIDATES))
    _one_of(cfg, "selection.enforce_deadline", [True, False])
    _required_range(cfg, "selection.max_accuracy_drop", 0, 1)
    _required_range(cfg, "evaluation.image_seed", 0, integer=True)
    check_range(cfg, "evaluation.realisations", 1, integer=True)
    check_range(cfg, "evaluation.objective_realisations", 1, integer=True)
    for key in ("path_loss_exponents", "reference_distances_m"):
        for i, _ in enumerate(OmegaConf.select(cfg, f"evaluation.sensitivity.{key}") or []):
            check_range(cfg, f"evaluation.sensitivity.{key}.{i}", 0, low_open=key != "path_loss_exponents")
    _one_of(cfg, "co2.region", list(cfg.co2.carbon_kg_per_kwh))
    check_range(cfg, f"co2.carbon_kg_per_kwh.{cfg.co2.region}", 0)
    for i, _ in enumerate(cfg.get("fig5_thresholds") or []):
        check_range(cfg, f"fig5_thresholds.{i}", 0)


def _check_points(cfg: DictConfig, key: str, many: bool = False) -> None:
    """``key`` is an [x, y] point in metres, or with ``many`` a list of them."""
    value = _get(cfg, key)
    points = value if many and isinstance(value, (list, ListConfig)) else [value]
    for p in points:
        if (not isinstance(p, (list, ListConfig)) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)):
            what = "a list of [x, y] points in metres" if many else "an [x, y] point in metres"
            raise ConfigError(f"{key} must be {what} (got {OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value!r})")


MAX_INFERENCES = 10**7  # per realisation: ~100 MB per array of them; 11.6 days at 10 Hz
MAX_FADING_BLOCKS = 10**8


def _check_route_size(t: DictConfig) -> None:
    """At least one inference along the route and no more than memory holds: its duration
    (``trajectory.duration_s``, or one pass of the waypoints at ``speed_mps``) against
    ``inference_rate_hz`` and ``coherence_time_s``, before arrays of that size are made."""
    from .trajectory import route_length_m
    duration_s = t.duration_s or route_length_m(np.asarray(t.waypoints_m, float)) / t.speed_mps
    source = "trajectory.duration_s" if t.duration_s else "the route's length / trajectory.speed_mps"
    inferences = duration_s * t.inference_rate_hz
    if not 1 - 1e-9 <= inferences <= MAX_INFERENCES:
        raise ConfigError(f"{source} ({duration_s:g} s) x trajectory.inference_rate_hz ({t.inference_rate_hz:g} Hz) "
                          f"must give 1 to {MAX_INFERENCES:.0e} inferences (got {inferences:g})")
    if duration_s / t.coherence_time_s > MAX_FADING_BLOCKS:
        raise ConfigError(f"{source} ({duration_s:g} s) / trajectory.coherence_time_s ({t.coherence_time_s:g} s) "
                          f"must give at most {MAX_FADING_BLOCKS:.0e} fading blocks (got {duration_s / t.coherence_time_s:g})")


def route_from_config(t: DictConfig) -> Route:
    return Route(
        waypoints_m=np.asarray(t.waypoints_m, float), server_m=np.asarray(t.server_m, float),
        speed_mps=t.speed_mps, inference_rate_hz=t.inference_rate_hz, coherence_time_s=t.coherence_time_s,
        path_loss_exponent=t.path_loss_exponent, reference_distance_m=t.reference_distance_m,
        min_distance_m=t.min_distance_m, seed=t.seed, duration_s=t.duration_s,
    )


def link_from_config(c: DictConfig, bandwidth_hz: float) -> Link:
    return Link(float(bandwidth_hz), c.power_w, c.noise_psd_w_per_hz, c.rate_model, float(c.block_error_rate),
                float(c.pa_efficiency), float(c.circuit_power_w))


def timing_from_config(cfg: DictConfig) -> Timing:
    period_s = 1.0 / float(cfg.trajectory.inference_rate_hz)
    deadline_s = period_s if cfg.channel.deadline_s is None else float(cfg.channel.deadline_s)
    return Timing(deadline_s, period_s, cfg.channel.late_upload, bool(cfg.selection.enforce_deadline))


def carbon_index(cfg: DictConfig) -> float:
    return float(cfg.co2.carbon_kg_per_kwh[cfg.co2.region])
