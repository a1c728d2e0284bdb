"""Every ``hydra.sweeper.*`` setting, checked once, before anything is opened or recorded.

The list of settings is written once, in ``config.EcosplitOptunaSweeperConf``; this module
reads its field names and defaults and validates the values. An invalid or conflicting value
raises :class:`ConfigError` whose message names the setting and its valid range.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ._outcome import ConfigError, Constraint
from .config import PRUNERS, SAMPLERS, EcosplitOptunaSweeperConf

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

DIRECTIONS = ("minimize", "maximize")
# the fields Hydra passes to the sweeper (the others drive instantiation)
_NOT_SETTINGS = {"_target_", "_recursive_", "defaults"}
_FIELDS = {f.name: f for f in dataclasses.fields(EcosplitOptunaSweeperConf)}
SETTING_NAMES = tuple(n for n in _FIELDS if n not in _NOT_SETTINGS)
HOOKS = ("custom_search_space", "on_start", "on_complete", "on_abort", "definition")
_GROUP_DEFAULTS = {"sampler": "tpe", "pruner": "none"}


def plain(x: Any) -> Any:
    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _default(name: str) -> Any:
    f = _FIELDS[name]
    if f.default is not dataclasses.MISSING and f.default is not MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _GROUP_DEFAULTS[name]


def absolute_sqlite(url: str) -> str:
    """sqlite:///rel.db -> sqlite:////abs/rel.db so that jobs which chdir (or run in other
    processes) open the same database file."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:
        return url
    if not u.drivername.startswith("sqlite"):
        return url
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:") or os.path.isabs(db):
        return url
    return u.set(database=os.path.abspath(db)).render_as_string(hide_password=False)


class Settings:
    """The validated settings; attributes carry the setting names (plus a few derived ones:
    ``sampler_cfg``, ``pruner_cfg``, ``objective_names``, ``directions``, ``storage_url``)."""

    def __init__(self, **raw: Any) -> None:
        unknown = sorted(set(raw) - set(SETTING_NAMES))
        if unknown:
            raise ConfigError(
                f"hydra.sweeper: unknown setting(s) {unknown}; valid: {', '.join(SETTING_NAMES)}"
            )
        v: Dict[str, Any] = {n: plain(raw[n]) if n in raw else _default(n) for n in SETTING_NAMES}
        # sampler / pruner stay DictConfigs: instantiated later with Hydra
        self.sampler_cfg = _resolve_group("sampler", v["sampler"], SAMPLERS)
        self.pruner_cfg = _resolve_group("pruner", v["pruner"], PRUNERS)
        self.objective_names, self.directions = _resolve_objectives(v["direction"], v["objectives"])
        self.constraints = _resolve_constraints(v["constraints"])

        storage = v["storage"]
        if storage is not None and not isinstance(storage, str):
            raise ConfigError(
                "hydra.sweeper.storage must be null (in-memory) or an RDB URL string such as "
                f"sqlite:///optuna.db or postgresql://user:pw@host/db, got {storage!r}"
            )
        self.storage_url: Optional[str] = absolute_sqlite(storage) if storage else None
        self.engine_kwargs = v["engine_kwargs"]
        if self.engine_kwargs is not None and not isinstance(self.engine_kwargs, Mapping):
            raise ConfigError(
                f"hydra.sweeper.engine_kwargs must be null or a mapping, got {self.engine_kwargs!r}"
            )
        if not isinstance(v["sqlite_wal"], bool):
            raise ConfigError(f"hydra.sweeper.sqlite_wal must be true or false, got {v['sqlite_wal']!r}")
        self.sqlite_wal: bool = v["sqlite_wal"]
        self.study_name: Optional[str] = v["study_name"]

        for name in ("n_trials", "n_jobs"):
            if not _is_int(v[name]) or v[name] < 1:
                raise ConfigError(f"hydra.sweeper.{name} must be an integer >= 1, got {v[name]!r}")
        self.n_trials: int = v["n_trials"]
        self.n_jobs: int = v["n_jobs"]
        rate = v["max_failure_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ConfigError(
                "hydra.sweeper.max_failure_rate must be a number in [0, 1] (the share of this "
                f"run's trials allowed to fail), got {rate!r}"
            )
        self.max_failure_rate = float(rate)
        expected = v["expected_failures"] or []
        if not isinstance(expected, Sequence) or isinstance(expected, str) or not all(
                isinstance(x, str) and x.strip() for x in expected):
            raise ConfigError(
                "hydra.sweeper.expected_failures must be null or a list of dotted paths to exception "
                f"classes (e.g. [my_pkg.train.Diverged]), got {v['expected_failures']!r}"
            )
        self.expected_failures: List[str] = list(expected)

        for name in ("heartbeat_interval", "grace_period"):
            if v[name] is not None and (not _is_int(v[name]) or v[name] < 1):
                raise ConfigError(
                    f"hydra.sweeper.{name} must be null (off) or an integer >= 1 (seconds), "
                    f"got {v[name]!r}"
                )
        self.heartbeat_interval: Optional[int] = v["heartbeat_interval"]
        if v["grace_period"] is not None and self.heartbeat_interval is None:
            raise ConfigError(
                "hydra.sweeper.grace_period needs hydra.sweeper.heartbeat_interval (an integer "
                f">= 1); heartbeats are off, so grace_period={v['grace_period']} would never apply"
            )
        if v["grace_period"] is not None and v["grace_period"] <= self.heartbeat_interval:
            raise ConfigError(
                f"hydra.sweeper.grace_period must be > heartbeat_interval={self.heartbeat_interval} "
                f"seconds (else live trials are failed as stale), got {v['grace_period']}"
            )
        self.grace_period: Optional[int] = (
            v["grace_period"] if v["grace_period"] is not None
            else 3 * self.heartbeat_interval if self.heartbeat_interval else None
        )
        if v["max_retry"] is not None and (not _is_int(v["max_retry"]) or v["max_retry"] < 0):
            raise ConfigError(
                f"hydra.sweeper.max_retry must be null (unlimited) or an integer >= 0, "
                f"got {v['max_retry']!r}"
            )
        self.max_retry: Optional[int] = v["max_retry"]
        if v["search_space"]:
            raise ConfigError(
                "hydra.sweeper.search_space is not supported: describe the search space in "
                "hydra.sweeper.params with Hydra's override grammar, e.g. "
                "{lr: 'tag(log, interval(1e-5, 1e-2))', layers: 'range(1, 5)'}"
            )
        self.params = v["params"] or {}
        if not isinstance(self.params, Mapping):
            raise ConfigError(
                "hydra.sweeper.params must be a mapping of config key -> override grammar "
                f"string (e.g. {{x: 'interval(0, 1)'}}), got {v['params']!r}"
            )
        if v["progress_bar"] is not None and not isinstance(v["progress_bar"], bool):
            raise ConfigError(
                f"hydra.sweeper.progress_bar must be null, true or false, got {v['progress_bar']!r}"
            )
        self.progress_bar: Optional[bool] = v["progress_bar"]
        for hook in HOOKS:
            if v[hook] is not None and (not isinstance(v[hook], str) or not v[hook].strip()):
                raise ConfigError(
                    f"hydra.sweeper.{hook} must be null or a dotted path to a function, "
                    f"got {v[hook]!r}"
                )
        self.custom_search_space: Optional[str] = v["custom_search_space"]
        self.on_start: Optional[str] = v["on_start"]
        self.on_complete: Optional[str] = v["on_complete"]
        self.on_abort: Optional[str] = v["on_abort"]
        self.definition: Optional[str] = v["definition"]

    @property
    def heartbeat_on(self) -> bool:
        """Heartbeats need an RDB storage; with an in-memory study nothing outlives the run."""
        return bool(self.storage_url and self.heartbeat_interval)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1


def load_hook(setting: str, path: Optional[str]) -> Any:
    """The function named by a dotted-path setting (None when unset)."""
    if not path:
        return None
    from hydra.utils import get_method

    try:
        return get_method(path)
    except Exception as e:
        raise ConfigError(
            f"hydra.sweeper.{setting}: cannot import {path!r} (a dotted path to a "
            f"function, e.g. my_pkg.hpo.{setting}): {e}"
        ) from e


def load_exceptions(setting: str, paths: Sequence[str]) -> Tuple[type, ...]:
    """The exception classes named by a list-of-dotted-paths setting."""
    from hydra.utils import get_object

    classes = []
    for path in paths:
        try:
            cls = get_object(path)
        except Exception as e:
            raise ConfigError(f"hydra.sweeper.{setting}: cannot import {path!r} (a dotted path to an "
                              f"exception class): {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigError(f"hydra.sweeper.{setting}: {path!r} is not an exception class")
        classes.append(cls)
    return tuple(classes)


def _resolve_group(group: str, value: Any, known: Dict[str, Any]) -> DictConfig:
    names = ", ".join(sorted(known))
    where = f"'hydra/sweeper/ecosplit_{group}=<name>'"
    if isinstance(value, str):
        if value not in known:
            raise ConfigError(f"hydra.sweeper.{group}: unknown {group} {value!r}; valid: {names}")
        return OmegaConf.structured(known[value]())
    if isinstance(value, (DictConfig, Mapping)):
        cfg = value if isinstance(value, DictConfig) else OmegaConf.create(dict(value))
        if not cfg.get("_target_"):
            raise ConfigError(f"hydra.sweeper.{group} has no _target_; choose one with {where} ({names})")
        return cfg
    raise ConfigError(
        f"hydra.sweeper.{group} must be one of {names} (choose with {where}), got {value!r}"
    )


def _check_direction(setting: str, d: Any) -> str:
    if isinstance(d, str) and d.lower() in DIRECTIONS:
        return d.lower()
    name = getattr(d, "name", None)  # an Enum (the official plugin's Direction)
    if isinstance(name, str) and name.lower() in DIRECTIONS:
        return name.lower()
    raise ConfigError(
        f"{setting} must be 'minimize' or 'maximize' (or a non-empty list of them for "
        f"multi-objective), got {d!r}"
    )


def _resolve_objectives(direction: Any, objectives: Any) -> Tuple[Optional[List[str]], List[str]]:
    """(objective names or None, directions). An objective without its own direction takes
    ``direction`` (the one value, or the entry at its position in a list)."""
    if isinstance(direction, (list, tuple)):
        if not direction:
            raise ConfigError(
                "hydra.sweeper.direction must be 'minimize' or 'maximize' (or a non-empty "
                "list of them for multi-objective), got []"
            )
        dirs = [_check_direction("hydra.sweeper.direction", d) for d in direction]
    else:
        dirs = [_check_direction("hydra.sweeper.direction", direction)]
    if not objectives:
        return None, dirs
    if not isinstance(objectives, (list, tuple)):
        raise ConfigError(
            "hydra.sweeper.objectives must be a list of {name: <metric>, direction: "
            f"minimize|maximize}}, got {objectives!r}"
        )
    if len(dirs) > 1 and len(dirs) != len(objectives):
        raise ConfigError(
            f"hydra.sweeper.direction has {len(dirs)} entries but hydra.sweeper.objectives has "
            f"{len(objectives)}; give one direction per objective (or set them in objectives)"
        )
    names: List[str] = []
    obj_dirs: List[str] = []
    for i, o in enumerate(objectives):
        if isinstance(o, str):
            o = {"name": o}
        if not isinstance(o, Mapping) or not o.get("name"):
            raise ConfigError(
                f"hydra.sweeper.objectives[{i}] must be {{name: <metric>, direction: "
                f"minimize|maximize}}, got {o!r}"
            )
        names.append(str(o["name"]))
        inherited = dirs[i] if len(dirs) > 1 else dirs[0]
        own = o.get("direction")
        d = inherited if own is None else _check_direction(f"hydra.sweeper.objectives[{i}].direction", own)
        # "minimize" is also the default of direction, so only a list or "maximize" is a
        # statement that an objective's own direction can contradict
        stated = isinstance(direction, (list, tuple)) or inherited == "maximize"
        if own is not None and stated and d != inherited:
            raise ConfigError(
                f"hydra.sweeper.direction[{i}]={inherited} contradicts "
                f"hydra.sweeper.objectives[{i}] ({names[-1]}: {d}); set the direction in one place"
            )
        obj_dirs.append(d)
    if len(set(names)) != len(names):
        raise ConfigError(f"hydra.sweeper.objectives has duplicate names: {names}")
    return names, obj_dirs


def _resolve_constraints(constraints: Any) -> List[Constraint]:
    if not constraints:
        return []
    if isinstance(constraints, str):
        constraints = [constraints]
    if not isinstance(constraints, (list, tuple)):
        raise ConfigError(
            "hydra.sweeper.constraints must be a list of strings such as "
            f"'val_accuracy >= 0.97', got {constraints!r}"
        )
    return [Constraint.parse(c) for c in constraints]
