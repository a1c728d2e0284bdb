"""Tests of the ecosplit_optuna Hydra sweeper (hydra_plugins/ecosplit_optuna_sweeper).

Unit tests run in-process; end-to-end tests run the toy app tests/sweeper_app/my_app.py as a
subprocess (repo root on PYTHONPATH so Hydra discovers the plugin) with sqlite storages in
tmp_path.
"""

import json
import re
import signal
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
APP = Path(__file__).resolve().parent / "sweeper_app" / "my_app.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hydra_plugins.ecosplit_optuna_sweeper import current_trial, feasible  # noqa: E402
from hydra_plugins.ecosplit_optuna_sweeper._loop import EcosplitOptunaSweeperImpl, SweepAbortedError  # noqa: E402
from hydra_plugins.ecosplit_optuna_sweeper._storage import FAIL_KIND, OWNER  # noqa: E402
from hydra_plugins.ecosplit_optuna_sweeper._outcome import (  # noqa: E402
    ConfigError,
    Constraint,
    interpret_return,
)
from hydra_plugins.ecosplit_optuna_sweeper._search_space import (  # noqa: E402
    SearchSpaceError,
    encode_value,
    grid_values,
    params_config_to_lines,
    parse_search_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- helpers
def app_command(tmp_path, *overrides, sweep_dir="multirun"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOSPLIT_OPTUNA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HYDRA_FULL_ERROR"] = "1"
    cmd = [sys.executable, str(APP), "--multirun", f"hydra.sweep.dir={tmp_path / sweep_dir}"]
    return cmd + list(overrides), env


def run_app(tmp_path, *overrides, ok=True, timeout=120):
    cmd, env = app_command(tmp_path, *overrides)
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if ok:
        assert p.returncode == 0, out
    else:
        assert p.returncode != 0, out
    return out


def sqlite(tmp_path, name="optuna.db"):
    return f"sqlite:///{tmp_path / name}"


def trials_of(storage, study_name):
    return optuna.load_study(study_name=study_name, storage=storage).trials


def results_yaml(tmp_path):
    return yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())


# --------------------------------------------------------------------------- grammar (unit)
@pytest.mark.parametrize(
    "override, expected",
    [
        ("x=choice(a,b)", CategoricalDistribution(["a", "b"])),
        ("x=choice(1,2.5,true)", CategoricalDistribution([1, 2.5, True])),
        ("x=range(1,5)", IntDistribution(1, 4, step=1)),
        ("x=range(0,10,2)", IntDistribution(0, 8, step=2)),
        ("x=range(5,1,-1)", IntDistribution(2, 5, step=1)),
        ("x=range(0,1,0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
        ("x=float(range(1,3))", FloatDistribution(1.0, 2.0, step=1.0)),
        ("x=shuffle(range(1,4))", IntDistribution(1, 3)),
        ("x=tag(log, range(1,100))", IntDistribution(1, 99, log=True)),
        ("x=interval(0.1,1)", FloatDistribution(0.1, 1.0)),
        ("x=interval(1,10)", FloatDistribution(1.0, 10.0)),
        ("x=tag(log, interval(1e-5,1e-2))", FloatDistribution(1e-5, 1e-2, log=True)),
        ("x=int(interval(1,10))", IntDistribution(1, 10)),
        ("x=int(tag(log, interval(1,1024)))", IntDistribution(1, 1024, log=True)),
    ],
)
def test_grammar_maps_to_optuna_distribution(override, expected):
    space = parse_search_space([override])
    assert space.distributions == {"x": expected}
    assert not space.fixed


@pytest.mark.parametrize(
    "override", ["x=tag(log, choice(1,2))", "x=tag(log, range(0,10,2))", "x=tag(log, range(0,1,0.1))"]
)
def test_grammar_rejects_unsupported_combinations(override):
    with pytest.raises(SearchSpaceError, match="x="):
        parse_search_space([override])


def test_config_params_merge_with_command_line_and_fixed_values():
    lines = params_config_to_lines(
        {"x": "interval(0,1)", "lr": 0.1, "opt": "choice(adam,sgd)", "layers": [1, 2]}
    )
    space = parse_search_space(lines + ["x=interval(2,3)", "opt=sgd", "+extra=5", "~drop", "+db=choice(a,b)"])
    assert space.distributions == {
        "x": FloatDistribution(2.0, 3.0),
        "db": CategoricalDistribution(["a", "b"]),
    }
    assert [f.override for f in space.fixed.values()] == ["lr=0.1", "layers=[1,2]", "opt=sgd", "+extra=5", "~drop"]
    assert space.overrides_for({"x": 2.5, "db": "b"}) == [
        "x=2.5",
        "+db=b",
        "lr=0.1",
        "layers=[1,2]",
        "opt=sgd",
        "+extra=5",
        "~drop",
    ]


def test_sampled_values_round_trip_through_the_override_grammar():
    parser = OverridesParser.create()
    space = parse_search_space(['c=choice("a,b", "x y", "it\'s", "1", [1,2], null_str, 3)'])
    param = space.params["c"]
    for choice in param.distribution.choices:
        line = param.override(choice)
        value = parser.parse_override(line).value()
        expected = [1, 2] if choice == "[1,2]" else choice
        assert value == expected, line
    for v in [None, True, 1e-05, -3, "a b", "back\\slash'", "${not_interp", 0.1]:
        assert parser.parse_override("k=" + encode_value(v)).value() == v


def test_grid_values():
    assert grid_values("a", IntDistribution(1, 7, step=3)) == [1, 4, 7]
    assert grid_values("b", FloatDistribution(0.0, 0.5, step=0.25)) == [0.0, 0.25, 0.5]
    assert grid_values("c", CategoricalDistribution(["u", "v"])) == ["u", "v"]
    with pytest.raises(SearchSpaceError, match="grid sampler needs a discrete"):
        grid_values("d", FloatDistribution(0.0, 1.0))


# --------------------------------------------------------------------------- config errors (unit)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials must be an integer >= 1, got 0"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs must be an integer >= 1"),
        ({"max_failure_rate": 1.5}, "max_failure_rate must be a number in [0, 1]"),
        ({"max_failure_rate": -0.1}, "max_failure_rate must be a number in [0, 1]"),
        ({"direction": "minimise"}, "hydra.sweeper.direction must be 'minimize' or 'maximize'"),
        ({"direction": ["minimize", "up"]}, "hydra.sweeper.direction must be 'minimize' or"),
        ({"sampler": "bogus"}, "unknown sampler 'bogus'; valid: bruteforce, cmaes, gp, grid, nsgaii"),
        ({"pruner": "nope"}, "unknown pruner 'nope'; valid: hyperband, median, none"),
        ({"objectives": [{"name": "a", "direction": "up"}]}, "objectives[0].direction must be"),
        ({"constraints": ["acc ~ 3"]}, "hydra.sweeper.constraints: cannot parse 'acc ~ 3'"),
        ({"constraints": ["a<b<c"]}, "hydra.sweeper.constraints: 'a<b<c': 'b<c' is neither a number"),
        ({"constraints": ["acc >= "]}, "hydra.sweeper.constraints: 'acc >= ': '=' is neither a number"),
        ({"direction": ["minimize", "maximize"], "objectives": [{"name": "a"}]},
         "hydra.sweeper.direction has 2 entries but hydra.sweeper.objectives has 1"),
        ({"direction": "maximize", "objectives": [{"name": "a", "direction": "minimize"}]},
         "hydra.sweeper.direction[0]=maximize contradicts hydra.sweeper.objectives[0] (a: minimize)"),
        ({"grace_period": 5}, "hydra.sweeper.grace_period must be > heartbeat_interval=10"),
        ({"heartbeat_interval": None, "grace_period": 30}, "grace_period needs hydra.sweeper.heartbeat_interval"),
        ({"n_trials": True}, "hydra.sweeper.n_trials must be an integer >= 1, got True"),
        ({"on_abort": 3}, "hydra.sweeper.on_abort must be null or a dotted path"),
        ({"bogus": 1}, "hydra.sweeper: unknown setting(s) ['bogus']"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be null (off) or an integer >= 1"),
        ({"max_retry": -1}, "max_retry must be null (unlimited) or an integer >= 0"),
        ({"sqlite_wal": "yes"}, "hydra.sweeper.sqlite_wal must be true or false, got 'yes'"),
        ({"expected_failures": "ValueError"}, "hydra.sweeper.expected_failures must be null or a list of dotted"),
    ],
)
def test_invalid_settings_give_one_clear_message(kwargs, message):
    with pytest.raises(ConfigError) as e:
        EcosplitOptunaSweeperImpl(**kwargs)
    assert message in str(e.value)


def test_objective_without_direction_takes_the_sweeper_direction():
    impl = EcosplitOptunaSweeperImpl(direction="maximize", objectives=[{"name": "acc", "direction": None}])
    assert impl.settings.directions == ["maximize"]  # was silently "minimize"
    impl = EcosplitOptunaSweeperImpl(direction=["maximize", "minimize"], objectives=["acc", "loss"])
    assert impl.settings.directions == ["maximize", "minimize"]
    impl = EcosplitOptunaSweeperImpl(objectives=[{"name": "acc", "direction": "maximize"}])
    assert impl.settings.directions == ["maximize"]


def test_heartbeats_are_on_by_default_with_grace_three_intervals():
    s = EcosplitOptunaSweeperImpl(storage="sqlite:///x.db").settings
    assert (s.heartbeat_interval, s.grace_period, s.heartbeat_on) == (10, 30, True)
    assert not EcosplitOptunaSweeperImpl().settings.heartbeat_on  # in-memory: nothing outlives the run
    assert not EcosplitOptunaSweeperImpl(storage="sqlite:///x.db", heartbeat_interval=None).settings.heartbeat_on


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hydra.sweeper.n_trials=0"], "error: hydra.sweeper.n_trials must be an integer >= 1, got 0"),
        (['hydra.sweeper.constraints=["a<b<c"]'], "error: hydra.sweeper.constraints: 'a<b<c'"),
        (["x=tag(log, interval(0, 1))"], "error: hydra.sweeper.params.x: 'x=tag(log, interval(0, 1))': `low > 0`"),
        (["hydra.sweeper.objectives=[{name:nope}]"], "error: trial 0: hydra.sweeper.objectives: ['nope'] missing"),
        (["hydra.sweeper.objectives=null"], "error: trial 0: hydra.sweeper.objectives is not set"),
        (["hydra.sweeper.on_complete=my_app.nope"], "error: hydra.sweeper.on_complete: cannot import 'my_app.nope'"),
        (["hydra.sweeper.expected_failures=[builtins.Nope]"],
         "error: hydra.sweeper.expected_failures: cannot import 'builtins.Nope'"),
        (["hydra.sweeper.expected_failures=[builtins.len]"],
         "error: hydra.sweeper.expected_failures: 'builtins.len' is not an exception class"),
        (["exit_code=2"], "error: trial 0: x="),
        (["xx=interval(0, 1)"], "error: hydra.sweeper.params: 'xx' is not a key of the config"),
        (["hydra.sweeper.params.y=0.5", "+hydra.sweeper.params.yy=1"], "error: hydra.sweeper.params: 'yy' is not a key"),
    ],
)
def test_mistakes_stop_at_the_first_trial_with_one_line_and_status_2(tmp_path, overrides, message):
    storage = sqlite(tmp_path)
    cmd, env = app_command(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=oops",
                           "hydra.sweeper.max_failure_rate=1", *overrides)
    env.pop("HYDRA_FULL_ERROR")
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    # one line says what is wrong (Optuna's own INFO log lines may go to stderr too)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(errors) == 1 and errors[0].startswith(message) and "Traceback" not in p.stderr, p.stderr
    if "trial 0" in message:
        trials = trials_of(storage, "oops")
        assert [t.state for t in trials] == [TrialState.FAIL]  # recorded with its reason, never RUNNING
        assert errors[0].split("trial 0: ", 1)[1] == trials[0].user_attrs["fail_reason"]
        assert trials[0].system_attrs[FAIL_KIND] == "config"  # not counted as a task failure
    else:
        assert not (tmp_path / "optuna.db").exists()  # refused before anything was recorded


# --------------------------------------------------------------------------- return values (unit)
def test_interpret_mapping_float_list_and_bad_values():
    o = interpret_return(
        {"loss": 0.5, "acc": 0.9, "n": 3, "s": "x", "nan": float("nan"), "obj": object(), "d": {"k": 2}},
        objective_names=["loss"],
        n_objectives=1,
        constraints=[],
        params={},
    )
    assert (o.state, o.values) == ("COMPLETE", [0.5])
    assert o.user_attrs == {"acc": 0.9, "n": 3, "s": "x", "d.k": 2}

    assert interpret_return({"only": 2}, objective_names=None, n_objectives=1, constraints=[], params={}).values == [2.0]
    assert interpret_return(3, objective_names=None, n_objectives=1, constraints=[], params={}).values == [3.0]
    assert interpret_return((1, 2), objective_names=None, n_objectives=2, constraints=[], params={}).values == [1.0, 2.0]

    for bad, reason in [
        (float("nan"), "is nan"),
        (float("inf"), "is inf"),
        ("0.3", "not numeric"),
        (None, "not numeric"),
        ([1.0, 2.0], "returned 2 objective value(s)"),
    ]:
        o = interpret_return(bad, objective_names=None, n_objectives=1, constraints=[], params={})
        assert o.state == "FAIL" and reason in o.fail_reason, (bad, o)
        assert o.config_error is None  # a task failure, counted, not a usage error

    # the configuration does not fit the task: usage errors that stop the sweep
    o = interpret_return({"acc": 1.0}, objective_names=["loss"], n_objectives=1, constraints=[], params={})
    assert o.state == "FAIL" and "hydra.sweeper.objectives: ['loss'] missing" in o.config_error
    o = interpret_return({"a": 1, "b": 2}, objective_names=None, n_objectives=1, constraints=[], params={})
    assert o.state == "FAIL" and "hydra.sweeper.objectives is not set" in o.config_error


def test_numpy_and_torch_returns_follow_the_official_plugin():
    import numpy as np
    import torch

    def values(ret, n):
        o = interpret_return(ret, objective_names=None, n_objectives=n, constraints=[], params={})
        assert o.state == "COMPLETE", o
        return o.values

    assert values(np.float32(0.25), 1) == [0.25]
    assert values(np.array(0.5), 1) == [0.5]  # 0-d array
    assert values(np.array([0.75]), 1) == [0.75]  # 1-element array
    assert values(torch.tensor(1.5), 1) == [1.5]
    assert values(torch.tensor([2.5]), 1) == [2.5]
    assert values(np.array([1.0, 2.0]), 2) == [1.0, 2.0]  # any iterable for several
    assert values(torch.tensor([3.0, 4.0]), 2) == [3.0, 4.0]
    assert values((x for x in (5, 6)), 2) == [5.0, 6.0]
    assert values({"loss": np.float64(7.0)}, 1) == [7.0]
    bad = interpret_return(np.array([1.0, 2.0]), objective_names=None, n_objectives=1, constraints=[], params={})
    assert bad.state == "FAIL" and "returned 2 objective value(s)" in bad.fail_reason


def test_constraints_values_follow_optuna_convention():
    cons = [Constraint.parse(s) for s in ["acc >= 0.97", "x <= 3", "lat < size", "k == 2"]]
    o = interpret_return(
        {"loss": 1.0, "acc": 0.95, "lat": 5.0, "size": 7.0, "k": 2},
        objective_names=["loss"],
        n_objectives=1,
        constraints=cons,
        params={"x": 4.0},
    )
    assert o.state == "COMPLETE"
    assert [(n, round(v, 9)) for n, v in o.constraints] == [
        ("acc >= 0.97", 0.02),
        ("x <= 3", 1.0),
        ("lat < size", -2.0),
        ("k == 2", 0.0),
    ]
    o = interpret_return({"loss": 1.0}, objective_names=["loss"], n_objectives=1, constraints=cons[:1], params={})
    assert o.state == "FAIL" and "'acc' is neither a returned metric nor a parameter" in o.config_error


def test_feasible_helper():
    def make(state=TrialState.COMPLETE, constraints=None, user_attrs=None):
        return optuna.trial.create_trial(
            state=state,
            value=1.0 if state == TrialState.COMPLETE else None,
            constraints=constraints,
            user_attrs=user_attrs,
        )

    assert feasible(make(constraints={"a": 0.0, "b": -1.0}))
    assert not feasible(make(constraints={"a": 0.0, "b": 0.1}))
    assert feasible(make())
    assert not feasible(make(user_attrs={"constraints": [0.5]}))
    assert not feasible(make(state=TrialState.FAIL))


def test_current_trial_is_none_outside_a_sweep(monkeypatch):
    monkeypatch.delenv("ECOSPLIT_OPTUNA_TRIAL_ID", raising=False)
    assert current_trial() is None


# --------------------------------------------------------------------------- end to end
def test_single_objective_mapping_user_attrs_and_hooks(tmp_path):
    storage = sqlite(tmp_path)
    out = run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=single",
        "y=choice(-2,0)",  # command-line sweep replaces the config's interval for y
        "hydra.sweeper.custom_search_space=my_app.extend_space",
        "hydra.sweeper.on_complete=my_app.on_complete",
        "hydra.sweeper.progress_bar=false",
    )
    trials = trials_of(storage, "single")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:
        assert t.distributions["y"] == CategoricalDistribution([-2, 0])
        assert t.distributions["x"] == FloatDistribution(-4.0, 4.0)
        assert t.distributions["z"] == IntDistribution(0, 3)  # from custom_search_space
        assert t.value == pytest.approx((t.params["x"] - 1) ** 2 + (t.params["y"] + 2) ** 2)
        ua = t.user_attrs
        assert ua["accuracy"] == pytest.approx(1 / (1 + t.value))
        assert ua["note"] == "ok" and ua["nested.a"] == 1 and ua["size"] == pytest.approx(t.params["x"] ** 2)
        assert ua["tag_seen"] == "custom" and ua["fixed_params"] == {"tag": "custom"}
        assert ua["trial_seen"] == t.number  # current_trial() in-process (basic launcher)
        assert "loss" not in ua and "not_finite" not in ua
        assert f"trial {t.number} COMPLETE" in out
    best = min(trials, key=lambda t: t.value)
    res = results_yaml(tmp_path)
    assert res["best_value"] == pytest.approx(best.value)
    assert res["best_params"] == best.params and res["best_trial"] == best.number
    assert json.loads((tmp_path / "multirun" / "on_complete.json").read_text()) == {
        "study": "single",
        "complete": [0, 1, 2, 3],
    }


def test_multi_objective_pareto_front(tmp_path):
    storage = sqlite(tmp_path)
    run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=mo",
        "hydra.sweeper.n_trials=6",
        "hydra/sweeper/ecosplit_sampler=nsgaii",
        "hydra.sweeper.sampler.population_size=4",
        "hydra.sweeper.objectives=[{name:loss,direction:minimize},{name:accuracy,direction:maximize}]",
    )
    study = optuna.load_study(study_name="mo", storage=storage)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert study.metric_names == ["loss", "accuracy"]
    trials = study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.values[1] == pytest.approx(1 / (1 + t.values[0]))
        assert "accuracy" not in t.user_attrs and "size" in t.user_attrs
    res = results_yaml(tmp_path)
    assert sorted(b["number"] for b in res["best_trials"]) == sorted(t.number for t in study.best_trials)
    assert all(len(b["values"]) == 2 for b in res["best_trials"])


def test_resume_counts_study_total(tmp_path):
    storage = sqlite(tmp_path)
    common = [
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=resume",
        "return_kind=float",
        "hydra.sweeper.objectives=null",
    ]
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=4")
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=4")
    states = [t.state for t in trials_of(storage, "resume")]
    assert states == [TrialState.COMPLETE] * 4  # not 8
    out = run_app(tmp_path, *common, "hydra.sweeper.n_trials=6", "hydra.sweeper.progress_bar=true")
    states = [t.state for t in trials_of(storage, "resume")]
    assert states == [TrialState.COMPLETE] * 6
    assert "optuna sweep" in out and "6/6" in out  # the live progress line


def _enqueue(storage, name, xs):
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    for x in xs:
        study.enqueue_trial({"x": x, "y": -2.0}, skip_if_exists=False)


def test_failures_are_recorded_and_the_sweep_continues(tmp_path):
    storage = sqlite(tmp_path)
    # x=3 raises, x=-3 returns NaN; sampled x stays in (-1, 1) and never fails
    _enqueue(storage, "fails", [0.0, 3.0, -3.0])
    out = run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=fails",
        "x=interval(-1,1)",
        "fail_if_x_above=2",
        "nan_if_x_below=-2",
        "hydra.sweeper.max_failure_rate=0.7",
    )
    trials = trials_of(storage, "fails")
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == 4  # n_trials does not count FAIL
    failed = by_state[TrialState.FAIL]
    assert [t.params["x"] for t in failed] == [3.0, -3.0]
    assert failed[0].user_attrs["fail_reason"] == "the task raised ValueError: x=3.0 is too large"
    assert failed[1].user_attrs["fail_reason"] == "objective 'loss' is nan"  # NaN -> FAIL
    assert all(t.system_attrs[FAIL_KIND] == "task" for t in failed)
    assert len(trials) == 6  # failures of the task itself are not retried
    assert results_yaml(tmp_path)["trial_states"]["FAIL"] == 2
    # a bug's first traceback is logged in full
    assert "trial 1 raised (first failure of this run):\nTraceback" in out and "ValueError: x=3.0 is too large" in out


@pytest.mark.parametrize("expected", ["[builtins.ValueError]", "[builtins.ArithmeticError,builtins.Exception]"])
def test_an_expected_failure_is_one_fail_line_without_traceback(tmp_path, expected):
    """An exception of hydra.sweeper.expected_failures (or a subclass): an outcome of the trial's
    parameters (e.g. a diverged training), its FAIL line says why; no traceback as for a bug."""
    storage = sqlite(tmp_path)
    _enqueue(storage, "expected", [0.0, 3.0])
    out = run_app(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=expected",
                  "x=interval(-1,1)", "fail_if_x_above=2", "hydra.sweeper.max_failure_rate=0.7",
                  "hydra.sweeper.n_trials=3", f"hydra.sweeper.expected_failures={expected}")
    failed = [t for t in trials_of(storage, "expected") if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["the task raised ValueError: x=3.0 is too large"]
    assert "Traceback" not in out and "first failure" not in out, out
    assert "trial 1 FAIL" in out and "reason: the task raised ValueError: x=3.0 is too large" in out, out


@pytest.mark.parametrize("rate,allowed,hint", [(0.5, 2, "; raise it, up to 1, to let more fail"), (1, 5, "")])
def test_the_abort_line_says_how_the_allowance_was_reached(rate, allowed, hint):
    """At rate 1 (FAIL trials never fill the budget, so failures can outnumber it) there is
    nothing left to raise: no hint (found by a reviewer)."""
    impl = EcosplitOptunaSweeperImpl(max_failure_rate=rate)
    with pytest.raises(SweepAbortedError) as e:
        impl._check_failures([], failed=allowed + 1, budget=5, allowed=allowed, fail_streak=1, n_trials=5)
    assert str(e.value) == (f"sweep aborted: {allowed + 1} of this run's 5 trials failed, more than "
                            f"hydra.sweeper.max_failure_rate={float(rate)} allows ({float(rate)} x 5, rounded down: "
                            f"{allowed}{hint}). Last failure: None")


def test_max_failure_rate_counts_this_runs_trials_only(tmp_path):
    storage = sqlite(tmp_path)
    # this run's budget is 4 trials; 0.25 x 4 allows 1 failure: x=3.0 fails (1 <= 1, goes on),
    # the sampled 4th trial (x in [2.5, 3.5]) fails too (2 > 1): abort
    _enqueue(storage, "abort", [0.0, 3.0, 0.5])
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=abort",
              "x=interval(2.5, 3.5)", "hydra.sweeper.max_failure_rate=0.25"]
    cmd, env = app_command(tmp_path, *common)
    env["MY_APP_FAIL_ABOVE"] = "2"
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert errors[0].startswith(
        "error: sweep aborted: 2 of this run's 4 trials failed, more than "
        "hydra.sweeper.max_failure_rate=0.25 allows (0.25 x 4, rounded down: 1; raise it, up to 1, to let more fail)"
    ), errors
    trials = trials_of(storage, "abort")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    # the bug is fixed: the same command is not blocked by the earlier run's failures
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=6")
    states = [t.state for t in trials_of(storage, "abort")]
    assert states.count(TrialState.COMPLETE) == 6 and states.count(TrialState.FAIL) == 2


def test_a_failed_first_trial_does_not_abort_below_the_rate(tmp_path):
    storage = sqlite(tmp_path)
    _enqueue(storage, "first", [3.0])  # the first trial fails; 0.25 x 4 allows one failure
    run_app(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=first",
            "x=interval(-1, 1)", "fail_if_x_above=2", "hydra.sweeper.max_failure_rate=0.25")
    states = [t.state for t in trials_of(storage, "first")]
    assert states == [TrialState.FAIL] + [TrialState.COMPLETE] * 4


def test_constraints_are_stored_and_feasible(tmp_path):
    storage = sqlite(tmp_path)
    run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=cons",
        "hydra.sweeper.n_trials=6",
        'hydra.sweeper.constraints=["accuracy >= 0.1","x <= 0"]',
    )
    trials = trials_of(storage, "cons")
    assert len(trials) == 6
    n_feasible = 0
    for t in trials:
        acc, x = t.user_attrs["accuracy"], t.params["x"]
        expected = {"accuracy >= 0.1": 0.1 - acc, "x <= 0": x}
        assert t.constraints == pytest.approx(expected)  # Optuna-native, seen by samplers
        assert t.user_attrs["constraints"] == pytest.approx(list(expected.values()))
        assert feasible(t) == (acc >= 0.1 and x <= 0)
        n_feasible += feasible(t)
    res = results_yaml(tmp_path)
    if n_feasible:
        best = next(t for t in trials if t.number == res["best_trial"])
        assert feasible(best)
    else:
        assert res["best_trial"] is None


def test_median_pruner_prunes_a_clearly_bad_trial(tmp_path):
    storage = sqlite(tmp_path)
    study = optuna.create_study(study_name="prune", storage=storage)
    for x, y in [(1.0, -2.0), (1.1, -2.0), (-4.0, 4.0)]:  # losses 0, 0.01, 61
        study.enqueue_trial({"x": x, "y": y})
    run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=prune",
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/ecosplit_pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "report_steps=3",
    )
    trials = trials_of(storage, "prune")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert list(trials[0].intermediate_values) == [0, 1, 2]
    assert list(trials[2].intermediate_values) == [0]  # pruned at the first report
    assert "fail_reason" not in trials[2].user_attrs


def test_joblib_launcher_parallel_trials_on_sqlite(tmp_path):
    storage = sqlite(tmp_path)
    run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=par",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=5",
        "report_steps=1",  # current_trial() rebuilt from the RDB storage in the workers...
        "hydra/sweeper/ecosplit_pruner=median",  # ...with the configured pruner for should_prune()
        timeout=180,
    )
    trials = trials_of(storage, "par")
    numbers = [t.number for t in trials]
    assert sorted(numbers) == [0, 1, 2, 3, 4] and len(set(numbers)) == 5
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["trial_seen"] == t.number for t in trials)
    assert all(t.intermediate_values == {0: t.value} for t in trials)
    # the tasks ran in joblib's worker processes, not in the sweeper process that owns the trials
    assert all(t.user_attrs["pid"] != t.system_attrs[OWNER]["pid"] for t in trials)
    assert len({t.system_attrs[OWNER]["pid"] for t in trials}) == 1


def test_stale_trial_is_failed_by_heartbeat_and_retried_with_same_params(tmp_path):
    storage_url = sqlite(tmp_path)
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", -4.0, 4.0)
    trial.suggest_float("y", -4.0, 4.0)
    storage.record_heartbeat(trial._trial_id)  # ...then its process "dies"
    stale_params = dict(trial.params)
    time.sleep(3.2)  # > grace_period
    run_app(
        tmp_path,
        f"hydra.sweeper.storage={storage_url}",
        "hydra.sweeper.study_name=hb",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=2",
    )
    trials = trials_of(storage_url, "hb")
    assert trials[0].state == TrialState.FAIL and trials[0].params == stale_params
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == stale_params
    assert retried[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    # a dead worker is not the task's failure: max_failure_rate (0 here) did not abort
    assert trials[0].system_attrs[FAIL_KIND] == "dead"
    assert trials[0].user_attrs["fail_reason"] == "worker died: no heartbeat for more than grace_period=2 s"


def test_two_sweeper_processes_share_the_n_trials_budget(tmp_path):
    storage = sqlite(tmp_path)
    optuna.create_study(study_name="shared", storage=storage)
    procs = []
    for i in (1, 2):
        cmd, env = app_command(
            tmp_path,
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.n_jobs=2",
            f"hydra.sweeper.sampler.seed={i}",
            "sleep=0.2",
            sweep_dir=f"multirun{i}",
        )
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    trials = trials_of(storage, "shared")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    # a trial asked while the other process filled the study is told FAIL, never run
    assert len({t.system_attrs[OWNER]["pid"] for t in trials}) == 2  # both processes ran trials
    for t in trials:
        if t.state != TrialState.COMPLETE:
            assert t.state == TrialState.FAIL and t.system_attrs[FAIL_KIND] == "surplus", t


def test_a_trial_asked_after_the_study_filled_up_is_surplus_and_never_runs():
    impl = EcosplitOptunaSweeperImpl(n_trials=2)
    study = optuna.create_study()
    others = [study.ask(), study.ask()]  # two other processes asked first: the study is full
    space = parse_search_space(["x=interval(0,1)"])
    kept = impl._ask_batch(study, space, k=1, n_trials=2)
    assert kept == []
    late = study.trials[-1]
    assert late.number == 2 and late.state == TrialState.FAIL
    assert late.system_attrs[FAIL_KIND] == "surplus"
    assert late.user_attrs["fail_reason"] == "surplus: the study already had n_trials=2"
    assert [t.state for t in study.trials[:2]] == [TrialState.RUNNING] * 2 and len(others) == 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "nsgaii", "nsgaiii", "grid", "qmc", "gp", "bruteforce"])
def test_every_sampler_config_instantiates(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hydra_plugins.ecosplit_optuna_sweeper.config import SAMPLERS

    cfg = OmegaConf.structured(SAMPLERS[name](seed=1))
    extra = {"search_space": {"x": [0, 1]}} if name == "grid" else {}
    sampler = instantiate(cfg, _convert_="all", **extra)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    expected = {
        "tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler, "nsgaii": optuna.samplers.NSGAIISampler,
        "nsgaiii": optuna.samplers.NSGAIIISampler, "grid": optuna.samplers.GridSampler,
        "qmc": optuna.samplers.QMCSampler, "gp": optuna.samplers.GPSampler,
        "bruteforce": optuna.samplers.BruteForceSampler,
    }[name]
    assert type(sampler) is expected


@pytest.mark.parametrize("name", ["none", "median", "percentile", "successive_halving", "hyperband"])
def test_every_pruner_config_instantiates(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hydra_plugins.ecosplit_optuna_sweeper.config import PRUNERS

    pruner = instantiate(OmegaConf.structured(PRUNERS[name]()), _convert_="all")
    assert isinstance(pruner, optuna.pruners.BasePruner)


# --------------------------------------------------------------------------- faults and recovery
def _run(tmp_path, *overrides, env_extra=None, timeout=120):
    cmd, env = app_command(tmp_path, *overrides)
    env.pop("HYDRA_FULL_ERROR")
    env.update(env_extra or {})
    # Ctrl-C as in a terminal even when the tests run as a background job (whose shell ignores
    # SIGINT for it, and Python keeps an inherited SIG_IGN)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _job_trial_numbers(sweep_dir):
    """job folder -> the trial number its overrides name (what ran there)."""
    out = {}
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        hydra_cfg = yaml.safe_load((d / ".hydra" / "hydra.yaml").read_text())
        out[int(d.name)] = int(hydra_cfg["hydra"]["job"]["env_set"]["ECOSPLIT_OPTUNA_TRIAL_NUMBER"])
    return out


def test_sigkill_with_default_settings_then_the_same_command_finishes_the_study(tmp_path):
    storage = sqlite(tmp_path)
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=killed", "kill_at_trial=1"]
    first = _run(tmp_path, *common)
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    before = trials_of(storage, "killed")
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    owner = before[1].system_attrs[OWNER]
    assert owner["pid"] == first_pid(first) and owner["heartbeat"] == 10  # heartbeats on by default
    folders_before = _job_trial_numbers(tmp_path / "multirun")

    again = _run(tmp_path, *common)  # the very same command
    assert again.returncode == 0, again.stdout + again.stderr
    trials = trials_of(storage, "killed")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[1]
    assert dead.state == TrialState.FAIL and dead.system_attrs[FAIL_KIND] == "dead"
    # freed at once by the same-host check (not after the 30 s grace period)
    assert dead.user_attrs["fail_reason"].startswith(f"worker died: its owner process (PID {owner['pid']} on ")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    # resumed job folders continue: nothing of the first run was overwritten
    folders = _job_trial_numbers(tmp_path / "multirun")
    assert {k: folders[k] for k in folders_before} == folders_before
    assert sorted(folders.values()) == sorted(t.number for t in trials)


def first_pid(proc):
    """The PID the killed sweep logged on its first line of 'resuming'/'Optuna study' output."""
    m = re.search(r"sweeper pid (\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return int(m.group(1))


@pytest.mark.parametrize("on_interrupt", ["raise", "mask"])
def test_ctrl_c_fails_and_requeues_the_trial_and_rerun_continues(tmp_path, on_interrupt):
    # mask: the task turns the KeyboardInterrupt into a ValueError (OmegaConf did, in CI); it is
    # still the user's Ctrl-C, not a failure of the trial
    storage = sqlite(tmp_path)
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=sigint", "interrupt_at_trial=2",
              f"on_interrupt={on_interrupt}"]
    first = _run(tmp_path, *common)
    assert first.returncode == 130, first.stdout + first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("interrupted:")]
    assert errors == ["interrupted: trial 2 was failed and re-queued; re-run the same command to continue the "
                      "study"] and "Traceback" not in first.stderr, first.stderr
    trials = trials_of(storage, "sigint")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[2].user_attrs["fail_reason"] == "interrupted"
    assert trials[2].system_attrs[FAIL_KIND] == "interrupted" and trials[3].params == trials[2].params
    again = _run(tmp_path, *common)
    assert again.returncode == 0, again.stdout + again.stderr
    states = [t.state for t in trials_of(storage, "sigint")]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1


def test_a_ctrl_c_as_the_sweep_ends_says_no_trial_was_running(tmp_path):
    storage = sqlite(tmp_path)
    p = _run(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=ending",
             "hydra.sweeper.n_trials=2", "hydra.sweeper.on_complete=my_app.on_complete_ctrl_c")
    assert p.returncode == 130, p.stdout + p.stderr
    assert p.stderr.strip().splitlines()[-1] == ("interrupted: no trial was running; re-run the same command to "
                                                 "continue the study"), p.stderr
    assert [t.state for t in trials_of(storage, "ending")] == [TrialState.COMPLETE] * 2


def test_a_ctrl_c_the_task_handles_itself_leaves_its_trial_and_the_sweep_alone(tmp_path):
    """A task that catches KeyboardInterrupt and returns (e.g. stops training and reports what it
    has) is COMPLETE, and the sweep goes on: only an error raised after a Ctrl-C stands for it."""
    storage = sqlite(tmp_path)
    done = _run(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=handled",
                "interrupt_at_trial=2", "on_interrupt=handle")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [t.state for t in trials_of(storage, "handled")] == [TrialState.COMPLETE] * 4


def test_a_running_trial_nothing_can_free_is_not_waited_for(tmp_path):
    storage = sqlite(tmp_path)
    study = optuna.create_study(study_name="blind", storage=storage)
    study.ask()  # RUNNING forever: no owner record, no heartbeat (another tool's trial)
    p = _run(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=blind",
             "hydra.sweeper.n_trials=2", timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "not waiting for trials [0]: nothing here can free them" in p.stdout + p.stderr
    assert [t.state for t in trials_of(storage, "blind")] == [TrialState.RUNNING, TrialState.COMPLETE]


def _trial_owned_by(storage, name, owner):
    study = optuna.create_study(study_name=name, storage=storage)
    t = study.ask({"x": FloatDistribution(-4, 4), "y": FloatDistribution(-4, 4)})
    study._storage.set_trial_system_attr(t._trial_id, OWNER, owner)
    return t


def test_dead_owner_on_this_host_is_freed_even_with_heartbeats_off(tmp_path):
    storage = sqlite(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs
    from hydra_plugins.ecosplit_optuna_sweeper._storage import owner_record

    here = owner_record(None)  # this host, boot and PID namespace
    t = _trial_owned_by(storage, "gone", {**here, "pid": gone.pid, "start": None})
    p = _run(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=gone",
             "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=null")
    assert p.returncode == 0, p.stdout + p.stderr
    trials = trials_of(storage, "gone")
    assert trials[0].state == TrialState.FAIL and f"PID {gone.pid}" in trials[0].user_attrs["fail_reason"]
    assert [x.state for x in trials[1:]] == [TrialState.COMPLETE] * 2 and trials[1].params == t.params


def test_owner_elsewhere_that_never_beat_is_freed_after_grace(tmp_path):
    storage = sqlite(tmp_path)
    _trial_owned_by(storage, "silent", {"host": "elsewhere", "pid": 1, "heartbeat": 1})
    time.sleep(2.5)  # > grace_period below
    p = _run(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=silent",
             "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
             timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    trials = trials_of(storage, "silent")
    assert trials[0].user_attrs["fail_reason"] == (
        "worker died: no heartbeat since it started, more than grace_period=2 s ago")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


def test_live_owner_elsewhere_is_left_alone(tmp_path):
    """A trial of another host that beats is waited for, not freed."""
    storage_url = sqlite(tmp_path)
    storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=1)
    t = _trial_owned_by(storage, "alive", {"host": "elsewhere", "pid": 1, "heartbeat": 1})
    stop = time.monotonic() + 6
    cmd, env = app_command(tmp_path, f"hydra.sweeper.storage={storage_url}", "hydra.sweeper.study_name=alive",
                           "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1",
                           "hydra.sweeper.grace_period=2")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while time.monotonic() < stop:  # the other host's worker beats for 6 s, then finishes its trial
        storage.record_heartbeat(t._trial_id)
        time.sleep(0.5)
    study = optuna.load_study(study_name="alive", storage=storage_url)
    study.tell(t.number, 0.5)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    trials = trials_of(storage_url, "alive")
    assert [x.state for x in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]  # not freed, waited for
    assert "waiting for trials [0] RUNNING elsewhere" in out


def test_multi_objective_with_a_pruner_runs_unpruned_with_a_notice(tmp_path):
    storage = sqlite(tmp_path)
    out = run_app(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=mo-prune",
                  "hydra.sweeper.objectives=[{name:loss,direction:minimize},{name:size,direction:minimize}]",
                  "hydra/sweeper/ecosplit_pruner=median", "report_steps=0")
    assert "hydra.sweeper.pruner (optuna.pruners.MedianPruner) is not used: Optuna cannot prune multi-objective" in out
    assert [t.state for t in trials_of(storage, "mo-prune")] == [TrialState.COMPLETE] * 4


def test_numpy_return_end_to_end(tmp_path):
    storage = sqlite(tmp_path)
    run_app(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=np",
            "return_kind=numpy", "hydra.sweeper.objectives=null")
    trials = trials_of(storage, "np")
    assert all(t.state == TrialState.COMPLETE for t in trials) and len(trials) == 4
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 1) ** 2 + (t.params["y"] + 2) ** 2)


def test_a_changed_definition_is_refused_before_any_trial(tmp_path):
    storage = sqlite(tmp_path)
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=defn", "hydra.sweeper.n_trials=2"]
    run_app(tmp_path, *common, "tag=a")
    p = _run(tmp_path, *common, "tag=b", "hydra.sweeper.n_trials=3")
    assert p.returncode == 2, p.stdout + p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fixed: ['tag=a'] -> ['tag=b']" in errors[0]
    assert "hydra.sweeper.study_name=defn-2" in errors[0]
    assert len(trials_of(storage, "defn")) == 2  # nothing ran
    run_app(tmp_path, *common, "tag=a", "hydra.sweeper.n_trials=3")  # a bigger budget is the same study
    assert len(trials_of(storage, "defn")) == 3


# --------------------------------------------------------------------------- coexistence
COEXIST = REPO / ".venv" / "coexist"  # `make install` puts hydra-optuna-sweeper here (--no-deps)


@pytest.fixture(scope="module")
def official_plugin():
    if not (COEXIST / "hydra_plugins" / "hydra_optuna_sweeper").is_dir():
        message = f"hydra-optuna-sweeper is not in {COEXIST} (make install puts it there)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return COEXIST


def test_every_sampler_and_pruner_composes_beside_the_official_plugin(tmp_path, official_plugin):
    from hydra_plugins.ecosplit_optuna_sweeper.config import PRUNERS, SAMPLERS

    script = f"""
import json
import re
import signal
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
Plugins.instance()  # scans every plugin: both register their configs
out = {{}}
with initialize_config_dir(version_base="1.3", config_dir={str(APP.parent / "conf")!r}):
    for group, names in (("sampler", {sorted(SAMPLERS)!r}), ("pruner", {sorted(PRUNERS)!r})):
        for name in names:
            cfg = compose("config", [f"hydra/sweeper/ecosplit_{{group}}={{name}}"], return_hydra_config=True)
            out[f"{{group}}/{{name}}"] = dict(cfg.hydra.sweeper[group])
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(official_plugin)])}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    composed = json.loads(p.stdout.strip().splitlines()[-1])
    for group, known in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        for name, node in known.items():
            from omegaconf import OmegaConf

            ours = OmegaConf.to_container(OmegaConf.structured(node()))
            got = dict(composed[f"{group}/{name}"])
            if "seed" in got:
                got["seed"] = None  # the toy app's config sets the sampler seed
            # every setting of ours is there, with our defaults (TPE's constant_liar, ...)
            assert got == ours, (group, name)


def test_grid_sweep_runs_beside_the_official_plugin(tmp_path, official_plugin):
    storage = sqlite(tmp_path)
    cmd, env = app_command(tmp_path, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=grid",
                           "hydra/sweeper/ecosplit_sampler=grid", "x=choice(0,1)", "y=range(-2,0)")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(official_plugin)])
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    trials = trials_of(storage, "grid")
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [(0, -2), (0, -1), (1, -2), (1, -1)]


# --------------------------------------------------------------------------- storage round trips (unit)
def _commits(storage):
    """A counter of the write transactions (each a sync to disk on SQLite's defaults, a round trip
    on a server) committed through an RDB storage from now on; Optuna commits its reads too."""
    from sqlalchemy import event

    count = [0]

    def statement(conn, cursor, sql, *args):
        if sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            conn.info["wrote"] = True

    def commit(conn):
        count[0] += conn.info.pop("wrote", False)

    event.listen(storage.engine, "before_cursor_execute", statement)
    event.listen(storage.engine, "commit", commit)
    return count


def test_a_trial_is_created_with_its_owner_and_fixed_params_in_one_commit(tmp_path):
    from hydra_plugins.ecosplit_optuna_sweeper._storage import ask, rdb_storage

    storage = rdb_storage(sqlite(tmp_path))
    study = optuna.create_study(storage=storage, study_name="ask")
    commits = _commits(storage)
    trial = ask(study, False, {"fixed_params": {"a": "1"}}, {OWNER: {"pid": 7}})
    assert commits[0] == 1  # study.ask() + two attribute writes would be 3
    fresh = optuna.load_study(study_name="ask", storage=sqlite(tmp_path)).trials[0]
    assert fresh.state == TrialState.RUNNING and fresh.number == trial.number == 0
    assert fresh.user_attrs == {"fixed_params": {"a": "1"}} and fresh.system_attrs[OWNER] == {"pid": 7}
    # a WAITING trial (a retry, enqueue_trial) is taken first, as by study.ask(), and gets them too
    study.enqueue_trial({"x": 0.25})
    retry = ask(study, True, {"fixed_params": {"a": "2"}}, {OWNER: {"pid": 8}})
    assert retry.number == 1 and retry.suggest_float("x", 0, 1) == 0.25
    fresh = optuna.load_study(study_name="ask", storage=sqlite(tmp_path)).trials[1]
    assert fresh.user_attrs == {"fixed_params": {"a": "2"}} and fresh.system_attrs[OWNER] == {"pid": 8}


def test_an_outcome_is_told_in_two_commits_with_every_attribute_in_its_type(tmp_path):
    from hydra_plugins.ecosplit_optuna_sweeper._outcome import Outcome
    from hydra_plugins.ecosplit_optuna_sweeper._storage import rdb_storage
    from hydra_plugins.ecosplit_optuna_sweeper._trials import tell

    storage = rdb_storage(sqlite(tmp_path))
    study = optuna.create_study(storage=storage, study_name="tell")
    done, failed = study.ask(), study.ask()
    metrics = {"epochs": 3, "acc": 0.93, "note": "ok", "pruned": True}
    commits = _commits(storage)
    tell(study, done, Outcome("COMPLETE", values=[0.25], user_attrs=metrics,
                              constraints=[("acc >= 0.95", 0.02), ("epochs <= 5", -2.0)]), "task")
    assert commits[0] == 2  # the attributes in one transaction, the state in another (was 7)
    tell(study, failed, Outcome("FAIL", user_attrs={"epochs": 1}, fail_reason="boom"), "task")
    assert commits[0] == 4
    first, second = optuna.load_study(study_name="tell", storage=sqlite(tmp_path)).trials
    assert first.state == TrialState.COMPLETE and first.value == 0.25
    assert first.user_attrs == {**metrics, "constraints": [0.02, -2.0]}
    assert [type(first.user_attrs[k]) for k in metrics] == [int, float, str, bool]
    assert first.constraints == {"acc >= 0.95": 0.02, "epochs <= 5": -2.0}  # Optuna's native ones
    assert not feasible(first)
    assert second.state == TrialState.FAIL and second.user_attrs == {"epochs": 1, "fail_reason": "boom"}
    assert second.system_attrs[FAIL_KIND] == "task" and second.constraints == {}


def test_a_trials_attributes_are_written_by_one_statement_per_kind(tmp_path):
    """12 user attrs and 2 system attrs (one of them already there: updated): one SELECT of the
    trial, one upsert per kind (it was a SELECT and an upsert per attribute); a finished trial is
    refused as Optuna's own setters refuse it."""
    from sqlalchemy import event

    from hydra_plugins.ecosplit_optuna_sweeper._storage import rdb_storage, set_trial_attrs

    storage = rdb_storage(sqlite(tmp_path))
    study = optuna.create_study(storage=storage, study_name="attrs")
    trial = study.ask()
    storage.set_trial_system_attr(trial._trial_id, "kind", "old")
    statements = []
    event.listen(storage.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: statements.append(sql.split()[0].upper()))
    user = {f"m{i:02d}": i / 4 for i in range(12)}
    set_trial_attrs(storage, trial._trial_id, user, {"kind": "new", "note": [1, "a"]})
    assert statements.count("INSERT") == 2 and statements.count("SELECT") == 1
    fresh = optuna.load_study(study_name="attrs", storage=sqlite(tmp_path)).trials[0]
    assert fresh.user_attrs == user and fresh.system_attrs == {"kind": "new", "note": [1, "a"]}
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_trial_attrs(storage, trial._trial_id, {"late": 1})
    assert "late" not in optuna.load_study(study_name="attrs", storage=sqlite(tmp_path)).trials[0].user_attrs


def test_the_first_heartbeat_waits_a_tick_on_sqlite_and_is_written_at_once_elsewhere(tmp_path):
    from hydra_plugins.ecosplit_optuna_sweeper._storage import Heartbeat, _heartbeat_ages, rdb_storage

    storage = rdb_storage(sqlite(tmp_path), heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage)
    lazy_trial, eager_trial = study.ask(), study.ask()
    lazy, eager = Heartbeat(storage, 1, at_once=False), Heartbeat(storage, 60, at_once=True)
    try:
        lazy.add([lazy_trial._trial_id])
        eager.add([eager_trial._trial_id])
        ages = _heartbeat_ages(storage, study._study_id)
        assert ages[lazy_trial._trial_id] is None and ages[eager_trial._trial_id] is not None
        deadline = time.monotonic() + 5  # the lazy one beats at its next tick (1 s)
        while _heartbeat_ages(storage, study._study_id)[lazy_trial._trial_id] is None:
            assert time.monotonic() < deadline, "no heartbeat one interval after the trial started"
            time.sleep(0.1)
    finally:
        lazy.close()
        eager.close()


@pytest.mark.parametrize("wal, journal_mode, synchronous", [(True, "wal", 1), (False, "delete", 2)])
def test_sqlite_storages_write_ahead_unless_turned_off(tmp_path, wal, journal_mode, synchronous):
    from hydra_plugins.ecosplit_optuna_sweeper._storage import rdb_storage

    storage = rdb_storage(sqlite(tmp_path), sqlite_wal=wal)
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == journal_mode
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == synchronous  # 1 NORMAL, 2 FULL


def test_the_progress_line_names_the_best_feasible_complete_trial():
    impl = EcosplitOptunaSweeperImpl(direction="maximize")
    study = optuna.create_study(direction="maximize")
    for value, constraint in ((0.9, 0.1), (0.7, -0.1), (0.8, 0.0)):  # 0.9 is infeasible (> 0)
        trial = study.ask()
        trial.set_constraint("c", constraint)
        study.tell(trial, value)
    study.tell(study.ask(), state=TrialState.PRUNED)
    stats = impl._stats(study, study.get_trials(deepcopy=False))
    assert stats["best"] == "0.8 (trial 2)" and study.best_trial.number == 2
    assert (stats["done"], stats["failed"]) == (4, 0)


# --------------------------------------------------------------------------- job configs (unit)
def _hydra_loader(tmp_path):
    """Hydra's own config loader for the toy app, and its master config of a multirun."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.plugins import Plugins
    from hydra.types import RunMode

    Plugins.instance()  # registers the sweeper's structured configs
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(APP.parent / "conf")))
    master = loader.load_configuration("config", run_mode=RunMode.MULTIRUN, overrides=[
        f"hydra.sweep.dir={tmp_path}", "hydra.job.env_copy=[HOME]", "hydra.sweeper.n_trials=7"])
    return loader, master


def _as_data(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=False), OmegaConf.is_struct(cfg), OmegaConf.is_readonly(cfg.hydra)


def test_a_job_differing_in_values_only_gets_hydras_config_without_composing_it(tmp_path, monkeypatch):
    from hydra_plugins.ecosplit_optuna_sweeper._job_config import JobConfigLoader

    hydra_loader, master = _hydra_loader(tmp_path)
    loader = JobConfigLoader(hydra_loader)
    jobs = [["x=0.5", "y=-1", "tag='a,b'", "~sleep", f"++hydra.job.env_set.TRIAL='{n}'"] for n in range(4)]
    for n, job in enumerate(jobs):
        job[0], job[1] = f"x={n / 4}", f"y='{-n}'"  # y quoted: a string, as Hydra reads it
        monkeypatch.setenv("HOME", f"/home/job{n}")  # hydra.job.env_copy is read for every job
        got = loader.load_sweep_config(master, job)
        expected = hydra_loader.load_sweep_config(master, job)
        assert _as_data(got) == _as_data(expected), n
        assert got.x == n / 4 and got.y == str(-n) and got.hydra.job.env_set.TRIAL == str(n)
        assert got.hydra.job.env_set.HOME == f"/home/job{n}"  # env_copy, as Hydra sets it
        assert f"x={n / 4}" in got.hydra.job.override_dirname and got.hydra.overrides.task[0] == f"x={n / 4}"
        got.hydra.job.num = n  # what a launcher does to the config it gets
    # job 0 composed and kept, job 1 composed and compared, jobs 2 and 3 made from the kept one
    assert (loader.reused, loader.off) == (2, False)


def test_job_configs_parse_each_override_line_once(tmp_path):
    """Jobs 1..3 repeat every line but x's (and the master config's hydra overrides): Hydra's parser
    sees each distinct line once."""
    from hydra_plugins.ecosplit_optuna_sweeper._job_config import JobConfigLoader

    hydra_loader, master = _hydra_loader(tmp_path)
    loader = JobConfigLoader(hydra_loader)
    parsed = []
    loader._parser = OverridesParser.create()
    real = loader._parser.parse_overrides
    loader._parser.parse_overrides = lambda lines: parsed.extend(lines) or real(lines)
    for n in range(4):
        loader.load_sweep_config(master, [f"x={n}", "y=-1", "tag=a"])
    hydra_lines = list(master.hydra.overrides.hydra)
    assert loader.reused == 2 and hydra_lines
    # jobs 0 and 1 are composed by Hydra (its own parser); 1 is compared with a copy (x=0/x=1 and
    # the rest parsed here), then 2 and 3 add their x only
    assert sorted(parsed) == sorted(["x=0", "x=1", "y=-1", "tag=a", *hydra_lines, "x=2", "x=3"])


@pytest.mark.parametrize("first, second", [
    (["x=1", "tag=a"], ["x=1", "tag={k: v}"]),  # a dict value merges into the old one
    (["x=1", "+z2=1"], ["x=1", "+z2=2"]),  # + refuses a key that is there
    (["x=1"], ["x=1", "y=2"]),  # another set of keys
    (["x=1", "hydra/launcher=basic"], ["x=2", "hydra/launcher=basic"]),  # unchanged group: x is reused...
    (["tag=a", "tag=b"], ["tag=c", "tag=b"]),  # ...a key set twice is not
    (["hydra/job_logging=default"], ["hydra/job_logging=disabled"]),  # a config group
])
def test_jobs_differing_in_more_than_values_are_composed_by_hydra(tmp_path, first, second):
    from hydra_plugins.ecosplit_optuna_sweeper._job_config import JobConfigLoader

    hydra_loader, master = _hydra_loader(tmp_path)
    loader = JobConfigLoader(hydra_loader)
    for job in (first, second, second):
        assert _as_data(loader.load_sweep_config(master, job)) == _as_data(hydra_loader.load_sweep_config(master, job))
    # never tried as a copy (a wrong copy would be caught and turn the copies off)
    assert (loader.reused, loader.off) == (1 if "hydra/launcher=basic" in first else 0, False)


def test_a_copied_job_config_that_hydra_would_compose_differently_turns_the_copies_off(tmp_path, monkeypatch):
    from hydra_plugins.ecosplit_optuna_sweeper import _job_config
    from hydra_plugins.ecosplit_optuna_sweeper._job_config import JobConfigLoader

    hydra_loader, master = _hydra_loader(tmp_path)
    loader = JobConfigLoader(hydra_loader)
    loader.load_sweep_config(master, ["x=1"])
    real = _job_config.JobConfigLoader._reuse

    def wrong(self, *args):  # a copy that misses something Hydra sets
        cfg = real(self, *args)
        cfg.hydra.job.override_dirname = "stale"
        return cfg

    monkeypatch.setattr(_job_config.JobConfigLoader, "_reuse", wrong)
    for x in (2, 3, 4):
        assert loader.load_sweep_config(master, [f"x={x}"]).hydra.job.override_dirname == f"x={x}"
    assert (loader.reused, loader.off) == (0, True)


def test_a_lost_database_connection_is_recognised_through_optunas_wrapper():
    from sqlalchemy.exc import OperationalError

    from hydra_plugins.ecosplit_optuna_sweeper._storage import is_connection_error, retrying

    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    try:
        try:
            raise lost
        except OperationalError as e:  # what Optuna's RDB storage does with every database error
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
    except optuna.exceptions.StorageInternalError as wrapped:
        assert is_connection_error(wrapped)
    assert not is_connection_error(ValueError("not a database problem"))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise optuna.exceptions.StorageInternalError("commit failed") from lost
        return "told"

    assert retrying(flaky, "telling a trial", timeout_s=10) == "told" and len(calls) == 3


def test_same_host_name_on_another_machine_or_namespace_is_not_judged_by_pid(monkeypatch):
    """Two machines named alike, or containers sharing a host name: a PID recorded there means
    nothing here, so the heartbeat decides (a live trial must never be freed by the PID check)."""
    from hydra_plugins.ecosplit_optuna_sweeper import _storage

    here = _storage.owner_record(10)
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    assert _storage.owner_gone({**here, "pid": dead_pid.pid, "start": None}) is not None
    assert _storage.owner_gone({**here, "pid": dead_pid.pid, "boot": "another-machine"}) is None
    assert _storage.owner_gone({**here, "pid": dead_pid.pid, "pidns": "pid:[1]"}) is None
    assert _storage.owner_gone({**here, "pid": dead_pid.pid, "host": "elsewhere"}) is None
    assert _storage.owner_gone(here) is None  # this very process: alive
    assert _storage.owner_gone({**here, "start": here["start"] + 1}) is not None  # PID reused


def test_fixed_values_of_the_params_setting_define_the_study_even_with_an_app_definition():
    from hydra_plugins.ecosplit_optuna_sweeper._study import definition, digest

    def digest_for(params):
        impl = EcosplitOptunaSweeperImpl(params=params)
        space = parse_search_space(params_config_to_lines(params) + ["data.root=/here"])
        return digest(definition(impl.settings, space, app={"lam": 0.5}))

    a = digest_for({"x": "interval(0, 1)", "epochs": "1"})
    settings, space = EcosplitOptunaSweeperImpl().settings, parse_search_space([])
    # a value typed as 1 on the command line and written 1.0 in a file is the same experiment
    assert digest(definition(settings, space, app={"lam": 1})) == digest(definition(settings, space, app={"lam": 1.0}))
    assert digest(definition(settings, space, app={"lam": 1})) != digest(definition(settings, space, app={"lam": 0.5}))
    assert a != digest_for({"x": "interval(0, 1)", "epochs": "2"})  # the jobs get another value
    assert a == digest_for({"x": "interval(0, 1)", "epochs": "1"})
    # a command-line fixed value (data.root here) is the app's to judge: not in the definition
    assert "data.root" not in str(definition(EcosplitOptunaSweeperImpl().settings,
                                             parse_search_space(["data.root=/x"]), app={}))


def test_a_storage_error_telling_one_trial_still_tells_the_rest_of_the_batch(monkeypatch):
    from hydra_plugins.ecosplit_optuna_sweeper import _loop
    from hydra_plugins.ecosplit_optuna_sweeper._outcome import Outcome

    impl = EcosplitOptunaSweeperImpl(n_trials=3)
    study = optuna.create_study()
    batch = [(study.ask(), []) for _ in range(3)]
    real_tell = _loop.tell

    def flaky_tell(study_, trial, outcome, kind):
        if trial.number == 0:
            raise RuntimeError("database went away")
        return real_tell(study_, trial, outcome, kind)

    monkeypatch.setattr(_loop, "tell", flaky_tell)
    with pytest.raises(RuntimeError, match="database went away"):
        impl._tell_batch(study, batch, [Outcome("COMPLETE", values=[1.0])] * 3)
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.COMPLETE]


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["composition-error", "ctrl-c-behind-it"])
def test_a_ctrl_c_behind_the_launchers_error_is_an_interrupt_not_a_usage_error(ctrl_c):
    """OmegaConf raises its own error when a Ctrl-C lands while it builds a config; in the
    launcher (composing a job) that error reads as 'the job's config does not compose' (exit 2)
    unless the SIGINT before it is seen."""
    from hydra.errors import ConfigCompositionException

    from hydra_plugins.ecosplit_optuna_sweeper import _interrupt
    from hydra_plugins.ecosplit_optuna_sweeper._loop import UsageError

    class Launcher:
        def launch(self, overrides, initial_job_idx):
            if ctrl_c:
                try:
                    _interrupt._on_sigint(signal.SIGINT, None)  # what SIGINT runs during a sweep
                except KeyboardInterrupt:
                    pass
            raise ConfigCompositionException("'NoneType' object has no attribute '_invalidate_flags_cache'")

    impl = EcosplitOptunaSweeperImpl(n_trials=1)
    impl.launcher, impl._next_job_dir = Launcher(), 0
    study = optuna.create_study()
    batch = [(study.ask(), ["x=1"])]
    with pytest.raises(KeyboardInterrupt if ctrl_c else UsageError):
        impl._launch(study, batch)


@pytest.mark.parametrize("second,interrupt", [(optuna.TrialPruned("epoch 2"), False), (ValueError("hidden"), True)],
                         ids=["pruned", "failed"])
def test_after_a_handled_ctrl_c_only_a_failed_job_stands_for_it(second, interrupt):
    """The first job caught a Ctrl-C and returned; the batch's other job was pruned (no error: the
    batch is told) or failed (the error may hide the Ctrl-C: the batch is re-queued)."""
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.ecosplit_optuna_sweeper import _interrupt

    class Launcher:
        def launch(self, overrides, initial_job_idx):
            try:
                _interrupt._on_sigint(signal.SIGINT, None)  # what SIGINT runs during a sweep
            except KeyboardInterrupt:
                pass  # the task handles it and returns
            done, other = JobReturn(), JobReturn()
            done.status, done.return_value = JobStatus.COMPLETED, 1.0
            other.status, other.return_value = JobStatus.FAILED, second
            return [done, other]

    impl = EcosplitOptunaSweeperImpl(n_trials=2)
    impl.launcher, impl._next_job_dir = Launcher(), 0
    study = optuna.create_study()
    batch = [(study.ask(), ["x=1"]), (study.ask(), ["x=2"])]
    try:
        returns = impl._launch(study, batch)
    except KeyboardInterrupt:  # caught here: pytest would end the session on it
        returns = None
    assert (returns is None) == interrupt


def test_the_task_counts_sigints_where_no_sweep_does_as_in_a_launchers_worker():
    """A launcher's worker process runs GuardedTask without the sweep's counting handler: the task
    counts there itself (the app's runs and cache claims then see a Ctrl-C behind another error),
    and Python's handler is back once it returns."""
    from hydra_plugins.ecosplit_optuna_sweeper import _interrupt
    from hydra_plugins.ecosplit_optuna_sweeper._trials import GuardedTask

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh worker process
    try:
        seen = GuardedTask(lambda cfg: signal.getsignal(signal.SIGINT))(None)
        assert seen is _interrupt._on_sigint
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_killed_joblib_worker_fails_the_batch_with_one_line_and_the_rerun_completes(tmp_path):
    storage = sqlite(tmp_path)
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=worker", "hydra/launcher=joblib",
              "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "kill_at_trial=1"]
    first = _run(tmp_path, *common)  # trial 1's task SIGKILLs its loky worker process
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert first.returncode == 1 and len(errors) == 1 and "Traceback" not in first.stderr, first.stderr
    assert "launcher failed: TerminatedWorkerError" in errors[0] and "re-queued" in errors[0]
    trials = trials_of(storage, "worker")
    assert {t.system_attrs[FAIL_KIND] for t in trials if t.state == TrialState.FAIL} == {"launcher"}
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    again = _run(tmp_path, *common)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sum(t.state == TrialState.COMPLETE for t in trials_of(storage, "worker")) == 4


def test_a_sampler_pruner_or_storage_url_that_is_refused_is_one_config_error(tmp_path):
    """Each was Hydra's or SQLAlchemy's traceback and exit 1; a missing SQLite folder was reported
    as an unreachable storage to wait for."""
    from omegaconf import OmegaConf

    from hydra_plugins.ecosplit_optuna_sweeper._factory import make_pruner, make_sampler
    from hydra_plugins.ecosplit_optuna_sweeper._outcome import ConfigError
    from hydra_plugins.ecosplit_optuna_sweeper._storage import rdb_storage
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.pruner: PercentilePruner refused its settings: Percentile "
                                          r"must be between 0 and 100"):
        make_pruner(OmegaConf.create({"_target_": "optuna.pruners.PercentilePruner", "percentile": 150}), 1)
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.sampler: TPESampler refused its settings: Seed must be"):
        make_sampler(OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": -1}), None, 1)
    for url in ("optuna.db", "sqlite:/x.db"):
        with pytest.raises(ConfigError, match=rf"^hydra.sweeper.storage='{url}' is no database URL"):
            rdb_storage(url)
    with pytest.raises(ConfigError, match=rf"the folder {tmp_path}/no does not exist"):
        rdb_storage(f"sqlite:///{tmp_path}/no/optuna.db")
    assert not (tmp_path / "no").exists()


def test_only_the_process_that_makes_a_study_gives_it_its_uuid(tmp_path):
    """Workers opening a new study together each wrote a uuid of their own, the last one winning:
    one whose sweep run was already tagged with the first was then refused as a study made again."""
    from types import SimpleNamespace

    from hydra_plugins.ecosplit_optuna_sweeper._study import STUDY_UUID, open_study
    url = f"sqlite:///{tmp_path}/optuna.db"
    settings = SimpleNamespace(study_name="s", directions=["minimize"], storage_url=url, objective_names=None)
    made = open_study(settings, url, None, None, {"a": 1})
    first = made.user_attrs[STUDY_UUID]
    assert len(first) == 32
    assert open_study(settings, url, None, None, {"a": 1}).user_attrs[STUDY_UUID] == first  # loaded: kept
    # a study from before the attribute, with a trial: every worker derives the same one
    old = optuna.create_study(study_name="old", storage=url)
    old.enqueue_trial({})
    again = SimpleNamespace(**{**vars(settings), "study_name": "old"})
    uuids = {open_study(again, url, None, None, {"a": 1}).user_attrs[STUDY_UUID] for _ in range(2)}
    import hashlib
    assert uuids == {hashlib.sha256(f"{old._study_id}:old".encode()).hexdigest()[:32]}
