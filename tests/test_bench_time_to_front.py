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
    start = 1_000_000.0
    (tmp_path / "timing.json").write_text(json.dumps({"start": start, "wall_s": 400.0}))
    study = optuna.create_study(study_name="bench-x-scalar", storage=f"sqlite:///{tmp_path}/optuna.db")
    for number, done_s in enumerate([100.0, 200.0, 390.0]):  # trials end 100, 200, 390 s after launch
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=optuna.trial.TrialState.COMPLETE, value=0.1, values=None,
            datetime_start=datetime.datetime.fromtimestamp(start + done_s - 50.0),
            datetime_complete=datetime.datetime.fromtimestamp(start + done_s), params={}, distributions={},
            user_attrs={"val_accuracy": 0.97, "test_accuracy": 0.96, "energy_normalised": 0.3},
            system_attrs={}, intermediate_values={}))
    wall_s, points = bench.load_sweep("x", tmp_path)
    assert wall_s == pytest.approx(400.0) and len(points) == 3
    wall_s, points = bench.load_sweep("x", tmp_path, first=2)
    assert wall_s == pytest.approx(200.0)  # trial 1, the second, ends 200 s in
    assert [p["t"] for p in points] == pytest.approx([100.0, 200.0])
    assert points[0]["val"] == pytest.approx(1.0 - 0.97) and points[0]["test"] == pytest.approx(1.0 - 0.96)
