"""Sweep progress: a live tqdm line on a TTY, one log line per finished trial otherwise."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, List, Optional, Sequence

log = logging.getLogger("hydra_plugins.ecosplit_optuna_sweeper")


def _fmt_values(values: Optional[Sequence[float]]) -> str:
    if values is None:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.6g}"
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, n_trials: int, done: int, failed: int, enabled: Optional[bool]) -> None:
        self.n_trials = n_trials
        self.done = done  # COMPLETE + PRUNED in the study
        self.failed = failed
        self.best: str = "-"
        self._t0 = time.monotonic()
        self._done0 = done
        self._bar: Any = None
        use_bar = enabled if enabled is not None else _isatty()
        if use_bar:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=n_trials,
                    initial=min(done, n_trials),
                    desc="optuna sweep",
                    unit="trial",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
                self._refresh_postfix()
            except Exception:  # pragma: no cover - tqdm missing/broken: fall back to logs
                self._bar = None

    @property
    def bar(self) -> bool:
        return self._bar is not None

    def _eta(self) -> Optional[float]:
        finished_here = self.done - self._done0
        if finished_here <= 0:
            return None
        rate = (time.monotonic() - self._t0) / finished_here
        return rate * max(0, self.n_trials - self.done)

    def _refresh_postfix(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"failed={self.failed} best={self.best}", refresh=True)

    def before_batch(self) -> None:
        """On a TTY: freeze the current bar as a line of its own so that the launcher's and
        the jobs' output starts on a clean line; the live bar is redrawn below afterwards."""
        if self._bar is not None:
            self._bar.refresh()
            self._bar.fp.write("\n")
            self._bar.fp.flush()

    def trial_finished(
        self,
        *,
        number: int,
        state: str,
        values: Optional[List[float]],
        duration: Optional[float],
        done: int,
        failed: int,
        best: str,
        reason: Optional[str] = None,
    ) -> None:
        delta = done - self.done
        self.done, self.failed, self.best = done, failed, best
        if self._bar is not None:
            if delta > 0:
                self._bar.update(min(delta, max(0, self.n_trials - self._bar.n)))
            self._refresh_postfix()
            if state == "FAIL" and reason:
                self._bar.write(f"trial {number} FAIL: {reason}", file=sys.stderr)
            return
        msg = (
            f"trial {number} {state} values={_fmt_values(values)} "
            f"duration={_fmt_duration(duration)} | {done}/{self.n_trials} done, "
            f"{failed} failed, best={best}, eta={_fmt_duration(self._eta())}"
        )
        if reason:
            msg += f" | reason: {reason}"
        (log.warning if state == "FAIL" else log.info)(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except Exception:  # pragma: no cover
        return False
