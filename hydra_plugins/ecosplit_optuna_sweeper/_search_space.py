"""Hydra override grammar <-> Optuna distributions.

Mapping (one override -> one Optuna distribution):

=====================================  ==============================================
override                               distribution
=====================================  ==============================================
``choice(a, b, 1)``                    ``CategoricalDistribution(["a", "b", 1])``
``range(1, 5)`` / ``range(0,10,2)``    ``IntDistribution(1, 4, step=1)`` / ``(0, 8, step=2)``
                                       (Hydra's ``range`` excludes ``stop``, so does this)
``range(0, 1, 0.25)``                  ``FloatDistribution(0.0, 0.75, step=0.25)``
``tag(log, range(1, 100))``            ``IntDistribution(1, 99, log=True)`` (step must be 1)
``interval(0.1, 1)``                   ``FloatDistribution(0.1, 1.0)``
``tag(log, interval(1e-5, 1e-2))``     ``FloatDistribution(1e-5, 1e-2, log=True)``
``int(interval(1, 10))``               ``IntDistribution(1, 10)``
``int(tag(log, interval(1, 1024)))``   ``IntDistribution(1, 1024, log=True)``
``shuffle(...)``                       same as without ``shuffle`` (order is irrelevant)
a plain value (``lr=0.1``, ``~foo``)   fixed: passed verbatim to every job
=====================================  ==============================================
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    OverrideType,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SearchSpaceError(ValueError):
    """A search-space entry cannot be mapped to an Optuna distribution."""


@functools.lru_cache(maxsize=1)
def _parser() -> OverridesParser:
    return OverridesParser.create()


# ---------------------------------------------------------------------------------------
# python value -> override-grammar text
# ---------------------------------------------------------------------------------------
def quote(s: str) -> str:
    """Single-quote ``s`` for the Hydra override grammar.

    Inside quotes a quote is escaped as ``\\'``; backslashes only need doubling when they
    precede a quote or the closing quote.
    """

    def repl(m: "re.Match[str]") -> str:
        return m.group(1) * 2 + ("\\'" if m.group(2) else "")

    return "'" + re.sub(r"(\\*)('|$)", repl, s) + "'"


@functools.lru_cache(maxsize=4096)
def _str_is_safe_unquoted(s: str) -> bool:
    if s == "" or s != s.strip():
        return False
    try:
        v = _parser().parse_override("k=" + s).value()
    except Exception:
        return False
    return isinstance(v, str) and v == s


def encode_value(v: Any) -> str:
    """Render a python value so that ``key=<result>`` makes Hydra set ``key`` to ``v``."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return v if _str_is_safe_unquoted(v) else quote(v)
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{encode_value(str(k))}:{encode_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(encode_value(x) for x in v) + "]"
    # numpy scalars and the like
    if hasattr(v, "item"):
        return encode_value(v.item())
    return encode_value(str(v))


# ---------------------------------------------------------------------------------------
# override -> distribution
# ---------------------------------------------------------------------------------------
def _key_name(o: Override) -> str:
    return o.key_or_group + (f"@{o.package}" if o.package else "")


def _prefix(o: Override) -> str:
    if o.type == OverrideType.ADD:
        return "+"
    if o.type == OverrideType.FORCE_ADD:
        return "++"
    if o.type == OverrideType.DEL:
        return "~"
    return ""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def distribution_from_override(o: Override) -> BaseDistribution:
    """Map one *sweep* override to the Optuna distribution it describes."""
    v = o.value()
    line = o.input_line or f"{_key_name(o)}=..."
    tags = set(getattr(v, "tags", None) or ())
    log_scale = "log" in tags

    if isinstance(v, ChoiceSweep):
        if log_scale:
            raise SearchSpaceError(f"'{line}': tag(log, ...) does not apply to choice()")
        choices = [_categorical_choice(x, line) for x in v.list]
        if not choices:
            raise SearchSpaceError(f"'{line}': choice() needs at least one option")
        return CategoricalDistribution(choices)

    if isinstance(v, RangeSweep):
        values = [x for x in o.sweep_iterator()]
        if not values:
            raise SearchSpaceError(f"'{line}': the range is empty")
        assert v.step is not None
        step = abs(v.step)
        lo, hi = min(values), max(values)
        if all(_is_int(x) for x in values) and _is_int(step):
            if log_scale and step != 1:
                raise SearchSpaceError(
                    f"'{line}': Optuna supports log-scale int ranges only with step 1"
                )
            return IntDistribution(int(lo), int(hi), log=log_scale, step=1 if log_scale else step)
        if log_scale:
            raise SearchSpaceError(
                f"'{line}': Optuna does not support a step with log scale for floats; "
                "use tag(log, interval(low, high))"
            )
        d_lo, d_step = Decimal(repr(float(lo))), Decimal(repr(float(step)))
        d_hi = d_lo + d_step * (len(values) - 1)
        return FloatDistribution(float(d_lo), float(d_hi), step=float(d_step))

    if isinstance(v, IntervalSweep):
        start, end = v.start, v.end
        if start is None or end is None:
            raise SearchSpaceError(f"'{line}': interval() needs both bounds")
        if _is_int(start) and _is_int(end):
            return IntDistribution(int(start), int(end), log=log_scale)
        return FloatDistribution(float(start), float(end), log=log_scale)

    raise SearchSpaceError(
        f"'{line}': this sweep is not supported by the Optuna sweeper; use choice(), range(), "
        "interval(), tag(log, ...), int(...)/float(...) or a plain value"
    )


def _categorical_choice(x: Any, line: str) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, (list, dict, tuple)):
        # Optuna categoricals hold primitives only: keep the override text; it is passed
        # back to Hydra verbatim (see SearchParam.choice_texts).
        return encode_value(x)
    raise SearchSpaceError(f"'{line}': unsupported choice {x!r} of type {type(x).__name__}")


# ---------------------------------------------------------------------------------------
# a parsed search space
# ---------------------------------------------------------------------------------------
@dataclass
class SearchParam:
    name: str
    prefix: str
    distribution: BaseDistribution
    # override text for choices that must be passed verbatim (lists / dicts)
    choice_texts: Dict[str, str] = field(default_factory=dict)

    def override(self, value: Any) -> str:
        if isinstance(value, str) and value in self.choice_texts:
            text = self.choice_texts[value]
        else:
            text = encode_value(value)
        return f"{self.prefix}{self.name}={text}"


@dataclass
class FixedParam:
    name: str
    override: str  # full override line, passed verbatim to every job
    value_text: str


@dataclass
class SearchSpace:
    params: Dict[str, SearchParam] = field(default_factory=dict)
    fixed: Dict[str, FixedParam] = field(default_factory=dict)

    @property
    def distributions(self) -> Dict[str, BaseDistribution]:
        return {k: p.distribution for k, p in self.params.items()}

    def overrides_for(self, trial_params: Mapping[str, Any]) -> List[str]:
        """Override lines for one job: the sampled params, then the fixed ones."""
        lines: List[str] = []
        for name, value in trial_params.items():
            if name in self.fixed:
                continue
            p = self.params.get(name)
            if p is None:  # suggested by custom_search_space
                lines.append(f"{name}={encode_value(value)}")
            else:
                lines.append(p.override(value))
        lines.extend(f.override for f in self.fixed.values())
        return lines


def params_config_to_lines(params: Optional[Mapping[str, Any]]) -> List[str]:
    """``hydra.sweeper.params`` (a mapping of key -> grammar string or value) -> lines."""
    lines: List[str] = []
    for k, v in (params or {}).items():
        lines.append(f"{k}={v}" if isinstance(v, str) else f"{k}={encode_value(v)}")
    return lines


def parse_search_space(lines: Sequence[str]) -> SearchSpace:
    """Parse override lines; a later line for the same key replaces an earlier one
    (so command-line overrides win over ``hydra.sweeper.params``)."""
    space = SearchSpace()
    try:
        parsed = _parser().parse_overrides(list(lines))
    except Exception as e:  # HydraException / OverrideParseException
        raise SearchSpaceError(f"cannot parse the search space {list(lines)}: {e}") from e
    for o in parsed:
        name = _key_name(o)
        # a later entry for the same key replaces the earlier one (in place if same kind)
        if o.is_sweep_override():
            space.fixed.pop(name, None)
        else:
            space.params.pop(name, None)
        if o.is_sweep_override():
            try:
                dist = distribution_from_override(o)
            except SearchSpaceError:
                raise
            except ValueError as e:  # Optuna refuses the bounds, e.g. a log scale from 0
                raise SearchSpaceError(
                    f"hydra.sweeper.params.{name}: '{o.input_line or name}': {e}"
                ) from e
            texts: Dict[str, str] = {}
            if isinstance(o.value(), ChoiceSweep):
                for raw in o.value().list:  # type: ignore[union-attr]
                    if isinstance(raw, (list, dict, tuple)):
                        texts[encode_value(raw)] = encode_value(raw)
            space.params[name] = SearchParam(name, _prefix(o), dist, texts)
        else:
            line = o.input_line or ""
            text = "" if o.is_delete() else o.get_value_element_as_str()
            if not line:
                line = f"{_prefix(o)}{name}" + ("" if o.is_delete() else f"={text}")
            space.fixed[name] = FixedParam(name, line, text)
    return space


# ---------------------------------------------------------------------------------------
# GridSampler support
# ---------------------------------------------------------------------------------------
def grid_values(name: str, dist: BaseDistribution) -> List[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        lo, st = Decimal(repr(dist.low)), Decimal(repr(dist.step))
        n = int(round((dist.high - dist.low) / dist.step)) + 1
        return [float(lo + st * i) for i in range(n)]
    raise SearchSpaceError(
        f"the grid sampler needs a discrete search space, but '{name}' is continuous "
        f"({dist}); use choice(...) or range(...)"
    )
