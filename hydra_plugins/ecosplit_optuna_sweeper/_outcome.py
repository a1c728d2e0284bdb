"""Turn what a task returned into what is told to Optuna (pure: no storage, no Hydra).

Return values follow the official hydra-optuna-sweeper: anything ``float()`` accepts for one
objective (python, numpy and torch scalars, 1-element arrays), any iterable for several, plus
a mapping of metrics whose entries named in ``objectives`` are the objectives.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

# user-attribute names the sweeper writes itself; metrics with these names are not copied
FAIL_REASON = "fail_reason"
CONSTRAINTS = "constraints"
FIXED_PARAMS = "fixed_params"
RESERVED_USER_ATTRS = (FAIL_REASON, CONSTRAINTS, FIXED_PARAMS)

_MAX_REASON = 2000


class ConfigError(ValueError):
    """A sweeper setting is invalid. The message names the setting and the valid range."""


def _number(v: Any) -> Optional[float]:
    """float(v) for real numbers (python, numpy, 0-d tensors); None for anything else."""
    if isinstance(v, (str, bytes, bool)) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if hasattr(v, "__float__"):
        try:
            with warnings.catch_warnings():  # numpy: 1-element array -> scalar is deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                return float(v)
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def flatten(mapping: Mapping, prefix: str = "") -> Dict[str, Any]:
    """{"val": {"acc": 1}} -> {"val.acc": 1}. Works for dicts and OmegaConf DictConfigs."""
    out: Dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) or _is_dictconfig(v):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_dictconfig(v: Any) -> bool:
    try:
        from omegaconf import DictConfig

        return isinstance(v, DictConfig)
    except ImportError:  # pragma: no cover
        return False


def _is_sequence(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return True
    try:
        from omegaconf import ListConfig

        return isinstance(v, ListConfig)
    except ImportError:  # pragma: no cover
        return False


# ---------------------------------------------------------------------------------------
# constraints
# ---------------------------------------------------------------------------------------
# a metric or param name: no comparison operator, no whitespace (dotted / bracketed ok)
_NAME_RE = re.compile(r"^[^\s<>=!]+$")
_CONSTRAINT_RE = re.compile(r"^\s*(?P<lhs>\S.*?)\s*(?P<op><=|>=|==|<|>)\s*(?P<rhs>\S.*?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``"<a> <op> <b>"`` with op in <=, <, >=, >, ==; operands are numbers or names of
    returned metrics (dotted for nested mappings) or of trial params.

    Optuna convention (<= 0 feasible): ``a <= b`` -> ``a - b``; ``a >= b`` -> ``b - a``;
    ``a == b`` -> ``|a - b|``. ``<``/``>`` are treated as ``<=``/``>=``.
    """

    text: str
    lhs: str
    op: str
    rhs: str

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        m = _CONSTRAINT_RE.match(str(text))
        if not m:
            raise ConfigError(
                f"hydra.sweeper.constraints: cannot parse {text!r}; expected '<metric> <op> "
                "<number|metric>' with op one of <=, <, >=, >, == (e.g. 'val_accuracy >= 0.97')"
            )
        lhs, op, rhs = m.group("lhs"), m.group("op"), m.group("rhs")
        for side in (lhs, rhs):
            if _literal(side) is None and not _NAME_RE.match(side):
                raise ConfigError(
                    f"hydra.sweeper.constraints: {text!r}: {side!r} is neither a number nor a "
                    "metric or parameter name; expected exactly one of <=, <, >=, >, == "
                    "between two operands (e.g. 'val_accuracy >= 0.97')"
                )
        if _literal(lhs) is not None and _literal(rhs) is not None:
            raise ConfigError(
                f"hydra.sweeper.constraints: {text!r} compares two numbers; one side must "
                "name a returned metric or a parameter"
            )
        return cls(text=f"{lhs} {op} {rhs}", lhs=lhs, op=op, rhs=rhs)

    def value(self, names: Mapping[str, Any]) -> float:
        a = self._operand(self.lhs, names)
        b = self._operand(self.rhs, names)
        if self.op in ("<=", "<"):
            return a - b
        if self.op in (">=", ">"):
            return b - a
        return abs(a - b)

    def _operand(self, s: str, names: Mapping[str, Any]) -> float:
        lit = _literal(s)
        if lit is not None:
            return lit
        if s not in names:
            raise _ConfigMistake(
                f"hydra.sweeper.constraints: '{self.text}': '{s}' is neither a returned metric "
                f"nor a parameter (names: {sorted(names)})"
            )
        v = _number(names[s])
        if v is None:
            raise _TrialError(f"constraint '{self.text}': '{s}' = {names[s]!r} is not numeric")
        if not math.isfinite(v):
            raise _TrialError(f"constraint '{self.text}': '{s}' is {v}")
        return v


def _literal(s: str) -> Optional[float]:
    try:
        return float(s)
    except ValueError:
        return None


class _TrialError(Exception):
    """The trial failed; the message becomes its ``fail_reason``."""


class _ConfigMistake(_TrialError):
    """The configuration does not fit what the task returns: every trial would fail alike."""


# ---------------------------------------------------------------------------------------
# outcome
# ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    state: str  # "COMPLETE" | "FAIL" | "PRUNED"
    values: Optional[List[float]] = None
    user_attrs: Dict[str, Any] = field(default_factory=dict)
    constraints: List[Tuple[str, float]] = field(default_factory=list)
    fail_reason: Optional[str] = None
    # a misconfiguration that makes every trial fail the same way: abort the sweep
    config_error: Optional[str] = None


def describe_exception(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}"
    return msg if len(msg) <= _MAX_REASON else msg[: _MAX_REASON - 3] + "..."


def interpret_return(
    ret: Any,
    *,
    objective_names: Optional[Sequence[str]],
    n_objectives: int,
    constraints: Sequence[Constraint],
    params: Mapping[str, Any],
) -> Outcome:
    """Interpret a task's return value. Never raises for bad task output: returns FAIL."""
    user_attrs: Dict[str, Any] = {}
    try:
        metrics: Dict[str, Any] = {}
        if isinstance(ret, Mapping) or _is_dictconfig(ret):
            metrics = flatten(ret)
            names = list(objective_names) if objective_names else None
            if names is None:
                if len(metrics) == 1 and n_objectives == 1:
                    names = list(metrics)
                else:
                    raise _ConfigMistake(
                        f"hydra.sweeper.objectives is not set but the task returns a mapping "
                        f"with keys {sorted(metrics)}: set it (a list of {{name, direction}}) "
                        "to say which entries are the objective(s)"
                    )
            missing = [n for n in names if n not in metrics]
            user_attrs = _extra_attrs(metrics, exclude=names)
            if missing:
                raise _ConfigMistake(
                    f"hydra.sweeper.objectives: {missing} missing from the mapping the task "
                    f"returned (keys: {sorted(metrics)})"
                )
            raw = [metrics[n] for n in names]
        else:
            raw = _values(ret, n_objectives)
            names = list(objective_names) if objective_names else (
                ["value"] if n_objectives == 1 else [f"value[{i}]" for i in range(len(raw))]
            )

        if len(raw) != n_objectives:
            raise _TrialError(
                f"the task returned {len(raw)} objective value(s) ({raw!r}) but the study has "
                f"{n_objectives} direction(s)"
            )
        values: List[float] = []
        for n, v in zip(names, raw):
            f = _number(v)
            if f is None:
                raise _TrialError(f"objective '{n}' is not numeric: {v!r} ({type(v).__name__})")
            if not math.isfinite(f):
                raise _TrialError(f"objective '{n}' is {f}")
            values.append(f)

        names_for_constraints: Dict[str, Any] = dict(params)
        names_for_constraints.update(metrics)
        if objective_names:
            names_for_constraints.update(zip(objective_names, values))
        cons = [(c.text, c.value(names_for_constraints)) for c in constraints]
        return Outcome("COMPLETE", values=values, user_attrs=user_attrs, constraints=cons)
    except _ConfigMistake as e:
        return Outcome("FAIL", user_attrs=user_attrs, fail_reason=str(e)[:_MAX_REASON],
                       config_error=str(e)[:_MAX_REASON])
    except _TrialError as e:
        return Outcome("FAIL", user_attrs=user_attrs, fail_reason=str(e)[:_MAX_REASON])


def _values(ret: Any, n_objectives: int) -> List[Any]:
    """The objective values of a non-mapping return: one ``float()``-able value for a single
    objective (also a 1-element array), otherwise the items of any iterable."""
    if n_objectives == 1 and _number(ret) is not None:
        return [ret]
    if isinstance(ret, (str, bytes)) or ret is None:
        return [ret]
    try:
        return list(ret)
    except TypeError:
        return [ret]


def _extra_attrs(metrics: Mapping[str, Any], exclude: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in metrics.items():
        if k in exclude or k in RESERVED_USER_ATTRS:
            continue
        if isinstance(v, (str, bool)):
            out[k] = v
            continue
        f = _number(v)
        if f is None or not math.isfinite(f):
            continue
        if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
            out[k] = int(v)
        else:
            out[k] = f
    return out
