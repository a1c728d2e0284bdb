"""Each job's config without Hydra composing it from scratch, when only values change.

A launcher asks the config loader for every job's config (``load_sweep_config``), and Hydra
composes it anew: every config file and structured config of the defaults tree is loaded and
merged, then the overrides are applied. That is ~50 ms per job for a one-file app and ~130 ms
for this project's (2 cores, hydra-core 1.3.8), most of what a sweeper adds to a short trial. Between two trials of a
sweep, though, usually only the sampled values differ.

:class:`JobConfigLoader` wraps the loader handed to the launcher. The first job is composed by
Hydra and kept. A later job whose overrides differ from it only in values - same keys, same
order; each changed one a plain ``key=value`` (or ``++key=value``) of a scalar, on a key that is
no config group and that no other override of the list touches - is made from a copy of the
kept config: Hydra's own ``_apply_overrides_to_config`` applies the changed overrides, and the
parts of ``hydra.*`` that Hydra derives from the overrides (``hydra.overrides``,
``hydra.job.override_dirname``, ``hydra.job.env_set`` from ``env_copy``) and the resolver cache
are set as Hydra sets them. Anything else (a group, ``+``/``~``, a dict or list value, a
different set of keys) is composed by Hydra as before.

The first such job is also composed by Hydra and the two configs are compared (values,
interpolations unresolved, and the struct/read-only flags): on any difference the shortcut is
off for the rest of the sweep. Hydra is pinned (hydra-core 1.3.8), and so are the two private
functions used here.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")

PARSED_LINES_KEPT = 4096


class JobConfigLoader:
    """A Hydra config loader (delegating to Hydra's) whose ``load_sweep_config`` reuses the
    previous job's config when only override values changed (see the module docstring)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._parser: Optional[OverridesParser] = None
        self._parsed: Dict[str, Override] = {}  # override line -> parsed
        self._base: Optional[DictConfig] = None  # a job's config as Hydra composed it
        self._base_lines: List[str] = []  # that job's sweep overrides
        self._base_hydra: List[str] = []  # the master config's hydra overrides then
        self._verified = False
        self.off = False
        self.reused = 0  # jobs whose config was made from the kept one

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_loader":  # unpickling: no delegate yet
            raise AttributeError(name)
        return getattr(self._loader, name)

    def __getstate__(self) -> dict:
        # a launcher that ships the loader to other processes: they compose their own
        state = dict(self.__dict__)
        state.update(_parser=None, _parsed={}, _base=None, _base_lines=[], _base_hydra=[])
        return state

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        lines = list(sweep_overrides)
        quick = None if self.off or self._base is None else self._reuse(master_config, lines)
        if quick is not None and self._verified:
            self.reused += 1
            return quick
        full = self._loader.load_sweep_config(master_config, lines)
        if quick is not None:
            self._verified = _same(quick, full)
            if not self._verified:
                self.off = True
                log.debug("job configs: a copy of the previous job's config differs from Hydra's "
                          "composition; every job is composed by Hydra")
        if self._base is None:
            self._base = copy.deepcopy(full)  # before the launcher sets hydra.job.num/id on it
            self._base_lines = lines
            self._base_hydra = _hydra_overrides(master_config)
        return full

    def _parse(self, lines: Sequence[str]) -> List[Override]:
        """The lines parsed, each line once per sweep (most repeat from job to job; Hydra's parser
        takes ~0.5 ms a line and nothing changes a parsed Override)."""
        if self._parser is None:
            self._parser = OverridesParser.create()
        if len(self._parsed) > PARSED_LINES_KEPT:  # searched values rarely repeat: bounded
            self._parsed.clear()
        new = [line for line in dict.fromkeys(lines) if line not in self._parsed]
        if new:
            self._parsed.update(zip(new, self._parser.parse_overrides(new)))
        return [self._parsed[line] for line in lines]

    def _reuse(self, master_config: DictConfig, lines: List[str]) -> Optional[DictConfig]:
        """The job's config from the kept one, or None when Hydra must compose it."""
        assert self._base is not None
        hydra_lines = _hydra_overrides(master_config)
        if hydra_lines != self._base_hydra or len(lines) != len(self._base_lines):
            return None
        changed = [i for i, (a, b) in enumerate(zip(lines, self._base_lines)) if a != b]
        if not changed:
            return None
        try:
            parsed = self._parse(lines)
            before = self._parse([self._base_lines[i] for i in changed])
        except Exception:  # Hydra reports it with its own message
            return None
        keys = [o.key_or_group for o in parsed]
        updates = []
        for i, old in zip(changed, before):
            o = parsed[i]
            if not (_plain_value(o) and _plain_value(old) and o.key_or_group == old.key_or_group
                    and o.type == old.type and not self._is_group(o.key_or_group)
                    and not _touched_elsewhere(o.key_or_group, keys, i)):
                return None
            updates.append(o)
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        cfg = copy.deepcopy(self._base)
        ConfigLoaderImpl._apply_overrides_to_config(updates, cfg)
        every = self._parse(hydra_lines) + parsed
        app = [o for o in every if not o.is_hydra_override()]
        cfg.hydra.overrides.hydra = [o.input_line for o in every if o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in app]
        with open_dict(cfg.hydra):
            for key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key] = os.environ[key]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _is_group(self, key: str) -> bool:
        repository = getattr(self._loader, "repository", None)
        return repository is None or "/" in key or bool(repository.group_exists(key))


def _hydra_overrides(master_config: DictConfig) -> List[str]:
    return list(OmegaConf.to_container(master_config.hydra.overrides.hydra))  # type: ignore[arg-type]


def _plain_value(o: Override) -> bool:
    """``key=value`` or ``++key=value`` of a scalar, no package, no sweep."""
    if o.type not in (OverrideType.CHANGE, OverrideType.FORCE_ADD) or o.package is not None:
        return False
    if o.is_sweep_override():
        return False
    return not isinstance(o.value(), (dict, list))


def _touched_elsewhere(key: str, keys: List[str], i: int) -> bool:
    """Another override of the list sets this key, a parent of it or a child of it."""
    for j, other in enumerate(keys):
        if j != i and (other == key or other.startswith(key + ".") or key.startswith(other + ".")):
            return True
    return False


def _same(a: DictConfig, b: DictConfig) -> bool:
    flags = lambda c: (OmegaConf.is_struct(c), OmegaConf.is_readonly(c), OmegaConf.is_struct(c.hydra),  # noqa: E731
                       OmegaConf.is_readonly(c.hydra))
    try:
        return (flags(a) == flags(b)
                and OmegaConf.to_container(a, resolve=False) == OmegaConf.to_container(b, resolve=False))
    except Exception:
        return False
