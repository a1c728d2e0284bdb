"""`sweep.py` with a fault injected into one trial, for tests/test_faults.py and
benchmarks/bench_recovery.py.

The same Hydra app as sweep.py (conf/sweep.yaml, pipeline.sweep.run_trial and its hooks, the
same CLI wrappers); only the trial whose number ($ECOSPLIT_OPTUNA_TRIAL_NUMBER, set by the
sweeper in every job) equals $FAULT_TRIAL misbehaves, as $FAULT says:

``raise``  a RuntimeError from inside the trial (after training, while its MLflow run is open)
``nan``    the eq. (8) objective comes out NaN
``pause``  the trial writes ``$FAULT_DIR/paused`` (its PID and trial number) and waits, inside its
           MLflow run's block, until ``$FAULT_DIR/release`` exists; the test kills, interrupts or
           restarts servers meanwhile (the run itself is created by a background thread: a
           test that needs it in the store waits for it)

With $FAULT unset this is sweep.py. Production code is untouched: the faults are patched in
around the one trial and removed after it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from unittest import mock

import hydra

from pipeline.cli import run_cli, user_errors_exit
from pipeline.sweep import run_trial

CONF = Path(__file__).resolve().parents[1] / "conf"
PAUSE_TIMEOUT_S = 600.0


class InjectedFault(RuntimeError):
    pass


def _pause(directory: Path, number: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "paused"
    marker.write_text(json.dumps({"pid": os.getpid(), "trial": number, "time": time.time()}))
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while not (directory / "release").exists():
        if time.monotonic() > deadline:
            raise InjectedFault(f"trial {number}: never released from pause")
        time.sleep(0.02)


@contextlib.contextmanager
def fault_for_this_trial():
    kind = os.environ.get("FAULT")
    number = int(os.environ.get("ECOSPLIT_OPTUNA_TRIAL_NUMBER", "-1"))
    if not kind or number != int(os.environ.get("FAULT_TRIAL", "1")):
        yield
        return
    import pipeline.objective
    import pipeline.sweep

    real_prune = pipeline.sweep.prune_model  # called inside the trial's MLflow run
    if kind == "raise":
        def prune(*args, **kwargs):
            raise InjectedFault(f"injected fault in trial {number}")
        patch = mock.patch.object(pipeline.sweep, "prune_model", prune)
    elif kind == "nan":
        patch = mock.patch.object(pipeline.objective, "scalar_objective", lambda *a, **k: math.nan)
    elif kind == "pause":
        def prune(*args, **kwargs):
            _pause(Path(os.environ["FAULT_DIR"]), number)
            return real_prune(*args, **kwargs)
        patch = mock.patch.object(pipeline.sweep, "prune_model", prune)
    else:
        raise ValueError(f"FAULT={kind!r}: not one of raise, nan, pause")
    with patch:
        yield


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="sweep")
@user_errors_exit
def main(cfg):
    with fault_for_this_trial():
        return run_trial(cfg)


if __name__ == "__main__":
    run_cli(main)
