"""benchmarks/bench_time_to_front.py's clock over a sweep run in several sittings (--resume)."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_time_to_front.py"
spec = importlib.util.spec_from_file_location("bench_time_to_front", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_time_between_sittings_is_not_counted():
    # sitting 1: 1000 s .. 1600 s (wall 600); sitting 2: 5000 s .. 5300 s (wall 300)
    sittings = [{"start": 1000.0, "wall_s": 600.0}, {"start": 5000.0, "wall_s": 300.0}]
    assert bench.sweep_time(1250.0, sittings) == pytest.approx(250.0)        # 1250 - 1000
    assert bench.sweep_time(1600.0, sittings) == pytest.approx(600.0)        # the first sitting's end
    assert bench.sweep_time(5100.0, sittings) == pytest.approx(600.0 + 100.0)  # 600 + (5100 - 5000)
    assert bench.sweep_time(5300.0, sittings) == pytest.approx(900.0)        # 600 + 300: the whole wall


def test_a_sweep_kept_before_sittings_were_recorded_is_one_sitting(tmp_path):
    (tmp_path / "timing.json").write_text(json.dumps({"start": 10.0, "wall_s": 5.0}))
    assert bench._sittings(tmp_path) == [{"start": 10.0, "wall_s": 5.0}]
    (tmp_path / "timing.json").write_text(json.dumps({"sittings": [{"start": 10.0, "wall_s": 5.0},
                                                                   {"start": 90.0, "wall_s": 7.0}]}))
    assert [s["wall_s"] for s in bench._sittings(tmp_path)] == [5.0, 7.0]


def test_first_n_trials_read_a_longer_sweep_as_the_sweep_it_began_with(tmp_path):
    import datetime

    import optuna
    from optuna.trial import TrialState
    s1, s2 = 1_000_000.0, 1_001_000.0  # sitting 1: 300 s of wall; sitting 2 starts 1000 s later, 500 s of wall
    (tmp_path / "timing.json").write_text(json.dumps({"sittings": [{"start": s1, "wall_s": 300.0},
                                                                   {"start": s2, "wall_s": 500.0}]}))
    study = optuna.create_study(study_name="bench-x-scalar", storage=f"sqlite:///{tmp_path}/optuna.db")
    ends = {0: (TrialState.COMPLETE, s1 + 100.0),   # sweep time 100
            1: (TrialState.FAIL, s1 + 250.0),       # 250: its retry is trial 3
            2: (TrialState.COMPLETE, s2 + 150.0),   # 300 + 150 = 450
            3: (TrialState.COMPLETE, s2 + 400.0),   # 300 + 400 = 700
            4: (TrialState.RUNNING, None)}          # still running: no end
    for number, (state, end) in ends.items():
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=state, value=0.1 if state == TrialState.COMPLETE else None,
            values=None, datetime_start=datetime.datetime.fromtimestamp(s1 + 10.0),
            datetime_complete=datetime.datetime.fromtimestamp(end) if end else None, params={}, distributions={},
            user_attrs={"val_accuracy": 0.97, "test_accuracy": 0.96, "energy_normalised": 0.3},
            system_attrs={}, intermediate_values={}))
    wall_s, points = bench.load_sweep("x", tmp_path)
    assert wall_s == pytest.approx(800.0)  # 300 + 500: the gap between sittings not counted
    assert [p["t"] for p in points] == pytest.approx([100.0, 450.0, 700.0])  # COMPLETE trials only
    # the 2-trial sweep it began with: trials 0 and 2 (trial 1 failed, and n_trials does not count a FAIL)
    wall_s, points = bench.load_sweep("x", tmp_path, first=2)
    assert wall_s == pytest.approx(450.0)  # trial 2 ends 450 s in
    assert [p["t"] for p in points] == pytest.approx([100.0, 450.0])
    assert points[0]["val"] == pytest.approx(1.0 - 0.97) and points[0]["test"] == pytest.approx(1.0 - 0.96)
    # more than it holds: all of it
    assert bench.load_sweep("x", tmp_path, first=9)[0] == pytest.approx(800.0)
