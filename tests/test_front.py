"""`python -m pipeline.front`: the front of several sweeps read from MLflow, promotion to the
registered model's alias, and evaluate.py on a trial run and on a registered version.

The store is hand-made: trial runs with chosen metrics and tiny models, as the sweep records them
(tags ecosplit.role/study, optuna.trial_number, optuna.state, ecosplit.cache_key; pruned.pt), and
the cache's dense model in an experiment of its own."""
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline import front
from pipeline.cli import user_errors_exit
from pipeline.config import ConfigError
from pipeline.model import SplitCNN, load_checkpoint, save_checkpoint
from pipeline.pruning import prune
from pipeline.reporting import run_evaluate
from tests.conftest import REPO, compose_cfg

KEY = "k" * 64  # the cache key every trial trained under
MIN_ACC = 0.92
PSNC_J = 100e-6
# study, trial, PS energy (uJ), val accuracy, eq. (8) at lambda 0.5, val loss, optuna.state, status
TRIALS = [
    ("sa", 0, 10, 0.90, 0.40, 0.50, "COMPLETE", "FINISHED"),   # front (cheapest); infeasible
    ("sa", 1, 12, 0.93, 0.60, 0.30, "COMPLETE", "FINISHED"),   # front; min_energy
    ("sa", 2, 20, 0.92, 0.65, 0.35, "COMPLETE", "FINISHED"),   # dominated by sa 1
    ("sa", 3, 1, 0.99, 0.01, 0.01, "PRUNED", "FINISHED"),      # pruned: never counts
    ("sb", 0, 15, 0.97, 0.55, 0.10, "COMPLETE", "FINISHED"),   # front; knee
    ("sb", 1, 40, 0.98, 0.50, 0.20, "COMPLETE", "FINISHED"),   # front; best_objective
    ("sb", 2, 50, 0.975, 0.58, 0.25, None, "FINISHED"),        # an older store's trial: counts; dominated by sb 1
    ("sb", 3, 2, 0.99, 0.01, 0.01, None, "FAILED"),            # an older store's pruned trial: never counts
]
# front of the counted rows (E, acc): sa0 (10, .90), sa1 (12, .93), sb0 (15, .97), sb1 (40, .98);
# sa2 (20, .92) is dominated by sa1, sb2 (50, .975) by sb1.
FRONT = {("sa", 0), ("sa", 1), ("sb", 0), ("sb", 1)}
# knee of the feasible front sa1, sb0, sb1: E scaled (0, 3/28, 1), acc scaled (0, .8, 1); distance
# to the diagonal ~ |acc - E|: 0, .69, 0 -> sb0
PICKS = {"min_energy": ("sa", 1), "knee": ("sb", 0), "best_objective": ("sb", 1)}


def tiny_dense(seed: int = 0) -> SplitCNN:
    torch.manual_seed(seed)
    return SplitCNN((2, 2, 2, 2), (4, 4, 4, 4, 10))


def _trial_run(client, exp_id, study, trial, energy_uj, acc, obj, val_loss, state, status, pruned_file, lam=0.5,
               key=KEY):
    tags = {"ecosplit.role": "trial", "ecosplit.study": study, "optuna.trial_number": str(trial),
            "ecosplit.cache_key": key}
    if state is not None:
        tags["optuna.state"] = state
    run_id = client.create_run(exp_id, run_name=f"trial-{trial}", tags=tags).info.run_id
    for k, v in {"energy_total_j_ps": energy_uj * 1e-6, "energy_total_j_psnc": PSNC_J, "val_accuracy": acc,
                 "test_accuracy": acc - 0.01, "objective": obj, "val_loss": val_loss, "compression_ratio": 3.0,
                 "train_mu": 0.99999}.items():
        client.log_metric(run_id, k, v)
    for k, v in {"prune.threshold": 0.5, "prune.finetune_epochs": 1, "objective.lam": lam}.items():
        client.log_param(run_id, k, v)
    client.log_artifact(run_id, str(pruned_file), "checkpoints")
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """{"uri", "runs": {(study, trial): run id}, "dense", "pruned", "dir"}: two sweeps in experiment
    ecosplit, a third (lambda 0.2) in experiment other, the dense model in experiment ecosplit-cache."""
    work = tmp_path_factory.mktemp("front")
    uri = f"sqlite:///{work}/mlflow.db"
    client = MlflowClient(uri)
    dense = tiny_dense()
    pruned = prune(dense, 0.2)
    save_checkpoint(dense, work / "dense.pt")
    save_checkpoint(pruned, work / "pruned.pt")
    cache_exp = client.create_experiment("ecosplit-cache", artifact_location=str(work / "art-cache"))
    cache_run = client.create_run(cache_exp, tags={"ecosplit.role": "trained-model", "ecosplit.cache_key": KEY})
    client.log_artifact(cache_run.info.run_id, str(work / "dense.pt"))
    client.set_terminated(cache_run.info.run_id, "FINISHED")
    runs = {}
    exp = client.create_experiment("ecosplit", artifact_location=str(work / "art"))
    for study, trial, *values in TRIALS:
        runs[study, trial] = _trial_run(client, exp, study, trial, *values, work / "pruned.pt")
    other = client.create_experiment("other", artifact_location=str(work / "art-other"))
    runs["sc", 0] = _trial_run(client, other, "sc", 0, 30, 0.95, 0.30, 0.05, "COMPLETE", "FINISHED",
                               work / "pruned.pt", lam=0.2)
    return {"uri": uri, "runs": runs, "dense": dense, "pruned": pruned, "dir": work, "cache_run": cache_run.info.run_id}


def front_cfg(store, *overrides):
    return compose_cfg("front", [f"tracking.uri={store['uri']}", f"selection.min_val_accuracy={MIN_ACC}",
                                 f"cache.dir={store['dir']}/no-cache", *overrides])


def run(store, *overrides):
    return front.run_front(front_cfg(store, *overrides))


def refused(store, capsys, *overrides) -> str:
    """The one error line of a refused command (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        user_errors_exit(front.run_front)(front_cfg(store, *overrides))
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def alias_run(store, name="ecosplit-selected", alias="champion"):
    try:
        return MlflowClient(store["uri"]).get_model_version_by_alias(name, alias).run_id
    except mlflow.exceptions.MlflowException:
        return None


def key_of(store, run_id):
    return next(k for k, v in store["runs"].items() if v == run_id)


def test_lists_the_front_of_two_sweeps_with_only_complete_trials(store, capsys):
    before = alias_run(store)
    out = run(store, "studies=[sa,sb]")
    rows = {(r["study"], r["trial"]): r for r in out["rows"]}
    assert set(rows) == {("sa", 0), ("sa", 1), ("sa", 2), ("sb", 0), ("sb", 1), ("sb", 2)}
    assert {k for k, r in rows.items() if r["on_front"]} == FRONT
    assert {k for k, r in rows.items() if r["feasible"]} == set(rows) - {("sa", 0)}
    assert (out["rows"][out["chosen"]]["study"], out["rows"][out["chosen"]]["trial"]) == PICKS["min_energy"]
    assert out["promoted"] is None and alias_run(store) == before  # listing changes nothing
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| trial | study | mu | threshold | finetune epochs | val acc | test acc | PS energy (uJ)")
    assert len([line for line in table if line.startswith("| ")]) == 1 + 6
    assert "| 1 | sa | 0.99999 | 0.5 | 1 | 0.9300 | 0.9200 | 12 | 3.00 | 0.6000 | yes | yes | <- min_energy |" in table
    only_a = run(store, "studies=[sa]", "show=front")["rows"]
    assert {(r["study"], r["trial"]) for r in only_a} == {("sa", 0), ("sa", 1), ("sa", 2)}
    assert {(r["study"], r["trial"]) for r in run(store)["rows"]} == set(rows)  # [] = every sweep there
    # the same front from Python, over both experiments
    rows2, chosen = front.front_from_mlflow(store["uri"], ["ecosplit", "other"], ["sa", "sb", "sc"], "knee", MIN_ACC)
    assert len(rows2) == 7 and (rows2[chosen]["study"], rows2[chosen]["trial"]) == PICKS["knee"]


def test_promote_by_rule_and_by_trial_moves_the_alias_to_a_splittable_model(store, capsys):
    versions = {}
    for rule, expected in PICKS.items():
        out = run(store, "action=promote", f"rule={rule}")
        assert key_of(store, alias_run(store)) == expected, rule
        versions[rule] = out["version"]
    assert len(set(versions.values())) == 3
    again = run(store, "action=promote", "rule=min_energy")  # promoted before: the alias moves back, no new version
    assert again["version"] == versions["min_energy"] and key_of(store, alias_run(store)) == PICKS["min_energy"]
    run(store, "action=promote", "trial=sb:0")
    assert key_of(store, alias_run(store)) == ("sb", 0)
    run(store, "action=promote", "trial=1", "studies=[sb]")  # unambiguous within one sweep
    assert key_of(store, alias_run(store)) == ("sb", 1)
    capsys.readouterr()
    run(store)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"models:/ecosplit-selected@champion is version {versions['best_objective']}: trial 1 of sb")

    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pytorch.load_model("models:/ecosplit-selected@champion")
    x = torch.randn(3, 1, 28, 28)
    assert isinstance(model, SplitCNN) and torch.equal(model.server(model.client(x, "pool2"), "pool2"), model(x))
    assert torch.equal(model(x), store["pruned"](x))


def test_a_promotion_leaves_the_trial_runs_status_and_end_time_as_the_trial_left_them(store):
    """Logging the model reopens the trial's run; without restoring it the UI would show the
    selected trial FINISHED at the promotion (a default sweep's trial 16 lasting 40.8 s, not 3 s)."""
    client = MlflowClient(store["uri"])
    run_id = store["runs"][("sa", 2)]
    before = client.get_run(run_id).info
    run(store, "action=promote", "trial=sa:2", "force=true")
    assert alias_run(store) == run_id
    after = client.get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time)


def test_best_objective_follows_lambda(store, capsys):
    # lam = 1: eq. (8) is the val loss; lowest among the feasible: sb0 (0.10) in sa/sb, sc0 (0.05) with other
    picked = run(store, "rule=best_objective", "lam=1.0")
    assert (picked["rows"][picked["chosen"]]["study"], picked["rows"][picked["chosen"]]["trial"]) == ("sb", 0)
    both = run(store, "rule=best_objective", "lam=1.0", "experiments=[ecosplit,other]")
    assert both["rows"][both["chosen"]]["study"] == "sc"
    line = refused(store, capsys, "rule=best_objective", "experiments=[ecosplit,other]")
    assert "rule=best_objective over sweeps with different objective.lam (0.2, 0.5): set lam=" in line


def test_a_trial_off_the_front_or_infeasible_is_refused_unless_forced(store, capsys):
    run(store, "action=promote", "trial=sb:0")
    before = alias_run(store)
    line = refused(store, capsys, "action=promote", "trial=sa:2")
    assert line.startswith("error: trial=sa:2 is not on the accuracy/energy front") and "force=true" in line
    line = refused(store, capsys, "action=promote", "trial=sa:0", "selection.min_val_accuracy=0.95")
    assert line.startswith("error: trial=sa:0 has val_accuracy 0.9000 < selection.min_val_accuracy=0.95")
    assert alias_run(store) == before
    run(store, "action=promote", "trial=sa:2", "force=true")
    assert key_of(store, alias_run(store)) == ("sa", 2)


@pytest.mark.parametrize("overrides,message", [
    (["action=promote", "trial=sa:9"], "error: trial=sa:9: no COMPLETE trial sa:9 among the listed sweeps "
                                       "(trials: sa: 0-2; sb: 0-2)"),
    (["action=promote", "trial=3"], "error: trial=3: no COMPLETE trial 3"),  # sa 3 was pruned
    (["action=promote", "trial=1"], "error: trial=1 is in several sweeps (sa, sb): give trial=<study>:1"),
    (["experiments=[nope]"], "error: experiments: no MLflow experiment 'nope' in sqlite:///"),
    (["studies=[sz]"], "error: studies: no sweep 'sz' with COMPLETE trials in experiments=['ecosplit'] "
                       "(sweeps there: sa, sb)"),
    (["rule=best"], "error: rule must be one of min_energy, knee, best_objective (got 'best')"),
    (["action=delete"], "error: action must be one of list, promote (got 'delete')"),
    (["lam=2"], "error: lam must be in [0, 1] (got 2)"),
    (["trial=1"], "error: trial=1 needs action=promote (got action=list)"),
    (["action=promote", "selection.min_val_accuracy=0.99"],
     "error: rule=min_energy: no trial with val_accuracy >= selection.min_val_accuracy=0.99 among 6 COMPLETE trials"),
    (["tracking.uri=sqlte:///x.db"], "error: tracking.uri must be a database"),  # a traceback from MLflow before
    # MLflow would refuse these only after logging and registering the model (found by a reviewer)
    (["action=promote", "trial=sb:0", "selection.alias=latest"], "error: selection.alias must be 1-255 letters, "
     "digits, '_' or '-', and neither 'latest' nor v<number>, which MLflow reserves (got 'latest')"),
    (["action=promote", "trial=sb:0", "selection.alias=V3"], "error: selection.alias must be"),
    (["action=promote", "trial=sb:0", "selection.alias=''"], "error: selection.alias must be"),
    (["action=promote", "trial=sb:0", "selection.alias=a.b"], "error: selection.alias must be"),
    (["action=promote", "trial=sb:0", "selection.registered_model=''"],
     "error: selection.registered_model must name the registered model to promote to (got '')"),
    (["action=promote", "trial=sb:0", "selection.registered_model=a/b"],
     "error: selection.registered_model must be a name without '/' or ':'"),
])
def test_bad_input_is_one_line_and_changes_nothing(store, capsys, overrides, message):
    before = alias_run(store)
    versions = len(MlflowClient(store["uri"]).search_model_versions("name = 'ecosplit-selected'"))
    assert refused(store, capsys, *overrides).startswith(message)
    assert alias_run(store) == before
    assert len(MlflowClient(store["uri"]).search_model_versions("name = 'ecosplit-selected'")) == versions


def test_without_an_accuracy_floor_every_trial_is_feasible_and_the_summary_says_so(store, capsys):
    capsys.readouterr()
    out = run(store, "selection.min_val_accuracy=null")
    assert all(r["feasible"] for r in out["rows"])
    assert "; feasible: every trial (no selection.min_val_accuracy); " in capsys.readouterr().out


def test_one_experiment_or_sweep_may_be_named_without_a_list(store):
    """experiments=ecosplit is the list [ecosplit], not its letters (found by a reviewer)."""
    assert {r["study"] for r in run(store, "experiments=ecosplit", "studies=sb")["rows"]} == {"sb"}
    assert len(run(store, "experiments=ecosplit")["rows"]) == len(run(store, "experiments=[ecosplit]")["rows"])


def test_a_promotion_interrupted_while_logging_the_model_leaves_the_trial_run_as_it_was(store, monkeypatch):
    """Ctrl-C inside MLflow's log_model (found by a reviewer: the run stayed FAILED, its end time the
    interruption's, and a model no version holds was left in it; promoting again kept both)."""
    import mlflow.pytorch

    client = MlflowClient(store["uri"])
    run_id = store["runs"][("sa", 0)]
    assert front._version_of_run(client, "ecosplit-selected", run_id) is None  # never promoted: its model is logged
    before = client.get_run(run_id).info
    versions = len(client.search_model_versions("name = 'ecosplit-selected'"))
    alias = alias_run(store)
    real = mlflow.pytorch.log_model

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the model is logged, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(mlflow.pytorch, "log_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(store, "action=promote", "trial=sa:0", "force=true")
    after = client.get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time)
    assert front._run_models(client, before.experiment_id, run_id) == set()
    assert len(client.search_model_versions("name = 'ecosplit-selected'")) == versions and alias_run(store) == alias
    monkeypatch.setattr(mlflow.pytorch, "log_model", real)
    run(store, "action=promote", "trial=sa:0", "force=true")  # again, to its end: one model, one version
    assert alias_run(store) == run_id and len(front._run_models(client, before.experiment_id, run_id)) == 1
    assert (client.get_run(run_id).info.status, client.get_run(run_id).info.end_time) == (before.status, before.end_time)


def test_the_command_line_refuses_an_unknown_trial_with_exit_2_and_one_line(store, tmp_path):
    before = alias_run(store)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "pipeline.front", f"tracking.uri={store['uri']}", "action=promote",
                           "trial=sb:7"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [x for x in proc.stderr.splitlines() if x.strip()] == [
        "error: trial=sb:7: no COMPLETE trial sb:7 among the listed sweeps (trials: sa: 0-2; sb: 0-2)"]
    assert alias_run(store) == before and list(tmp_path.iterdir()) == []  # no outputs/, no log file


def test_the_dense_model_is_found_in_the_local_cache_first_then_in_any_experiment(store, tmp_path):
    mlflow.set_tracking_uri(store["uri"])
    x = torch.randn(2, 1, 28, 28)
    remote = front.find_dense(KEY, tmp_path)  # nothing local: the cache run in experiment ecosplit-cache
    assert torch.equal(remote(x), store["dense"](x))
    save_checkpoint(tiny_dense(seed=1), tmp_path / f"{KEY}.pt")
    assert torch.equal(front.find_dense(KEY, tmp_path)(x), tiny_dense(seed=1)(x))
    assert front.find_dense("0" * 64, tmp_path) is None


# -- evaluate.py on what the front gives ------------------------------------------------------------
def eval_cfg(store, fake_mnist, *overrides):
    return compose_cfg("evaluate", [
        f"data.root={fake_mnist}", "data.download=false", f"tracking.uri={store['uri']}",
        f"tracking.artifact_location={store['dir']}/art-eval", f"cache.dir={store['dir']}/no-cache",
        "trajectory.duration_s=10", "fig5_thresholds=[0.0]", "evaluation.realisations=2",
        "evaluation.sensitivity.path_loss_exponents=[]", "evaluation.sensitivity.reference_distances_m=[]",
        *overrides])


def test_evaluate_on_a_trial_run_and_a_registered_model_gives_the_checkpoints_table3(store, fake_mnist, tmp_path,
                                                                                   monkeypatch):
    (tmp_path / "ckpt").mkdir()
    for name in ("dense", "pruned"):
        save_checkpoint(store[name], tmp_path / "ckpt" / f"{name}.pt")
    trial_run = store["runs"]["sb", 0]
    mlflow.set_tracking_uri(store["uri"])
    version = front.register(trial_run, "eval-test", "x", {"trial": 0, "study": "sb"}, None)
    tables = {}
    for source in (f"checkpoint={tmp_path / 'ckpt'}", f"train_run_id={trial_run}", "model_uri=models:/eval-test@x"):
        out = tmp_path / str(len(tables))
        out.mkdir()
        monkeypatch.chdir(out)
        with monkeypatch.context() as m:
            if not source.startswith("model_uri"):  # the figures once (their cost is matplotlib's)
                for fig in ("_fig3", "_fig4"):
                    m.setattr(f"pipeline.reporting.{fig}", lambda *a: Path(os.devnull))
                m.setattr("pipeline.reporting._fig5", lambda *a: [])
            metrics = run_evaluate(eval_cfg(store, fake_mnist, source))
        tables[source] = (out / "table3.csv").read_text()
        if "checkpoint" not in source:
            tags = MlflowClient(store["uri"]).get_run(metrics["run_id"]).data.tags
            assert tags["ecosplit.train_run_id"] == trial_run and tags["mlflow.parentRunId"] == trial_run
    assert len(set(tables.values())) == 1 and len(list(csv.DictReader(tables[source].splitlines()))) == 10
    for f in ("fig3_layers.png", "fig4_trajectory.png", "fig5_compression.png"):
        assert (out / f).stat().st_size > 0, f
    # the same version by number; the dense model travels with it as extra_files/dense.pt
    dense, pruned, run_id = front.registered_models(f"models:/eval-test/{version}", None)
    x = torch.randn(2, 1, 28, 28)
    assert run_id == trial_run and torch.equal(dense(x), store["dense"](x)) and torch.equal(pruned(x), store["pruned"](x))


@pytest.mark.parametrize("source,message", [
    ("model_uri=runs:/abc/model", "model_uri must be models:/<name>@<alias> or models:/<name>/<version>"),
    ("model_uri=models:/eval-test@nope", "model_uri=models:/eval-test@nope: no such registered model version"),
    ("train_run_id=0123abcd", "train_run_id=0123abcd: no such run in sqlite:///"),
    # a run that is neither a train.py nor a trial run says what it is (a reviewer found it said "no checkpoints found")
    ("train_run_id={cache_run}", "train_run_id={cache_run}: the run has no checkpoints/pruned.pt (not a train.py or "
                                 "sweep trial run; its ecosplit.role: trained-model)"),
])
def test_evaluate_refuses_an_unknown_model_naming_the_setting(store, fake_mnist, source, message):
    source, message = (text.format(cache_run=store["cache_run"]) for text in (source, message))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_evaluate(eval_cfg(store, fake_mnist, source))


def test_evaluate_names_the_cache_when_a_trials_dense_model_is_nowhere(store, fake_mnist, tmp_path):
    client = MlflowClient(store["uri"])
    exp = client.create_experiment("lost", artifact_location=str(store["dir"] / "art-lost"))
    lost = _trial_run(client, exp, "sd", 0, 30, 0.95, 0.3, 0.05, "COMPLETE", "FINISHED", store["dir"] / "pruned.pt",
                      key="0" * 64)
    with pytest.raises(ConfigError, match=rf"train_run_id={lost}: its dense model .* is not in the run, nor in "
                                          rf"cache.dir=.*no-cache or any MLflow run tagged ecosplit.cache_key=0+"):
        run_evaluate(eval_cfg(store, fake_mnist, f"train_run_id={lost}"))


def test_eq8_at_another_lambda_from_the_logged_terms():
    rows = [{"val_loss": 0.2, "energy_total_j_ps": 1e-6, "energy_total_j_psnc": 4e-6, "objective": 9.0},
            {"energy_total_j_ps": 1e-6, "energy_total_j_psnc": 4e-6, "objective": 0.1}]  # no val_loss logged
    out = front.with_lam(rows, 0.6)
    assert out[0]["objective"] == pytest.approx(0.6 * 0.2 + 0.4 * 0.25)  # 0.22
    assert np.isnan(out[1]["objective"]) and out[0]["objective.lam"] == 0.6


def test_the_package_map_mlflow_checks_a_models_requirements_against_is_built_ahead(monkeypatch):
    """A sweep starts it in a thread at its start: the end registers without reading every
    installed distribution's file list first."""
    from mlflow.utils import requirements_utils

    from pipeline.front import prepare_registration

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    thread = prepare_registration()
    thread.join(timeout=60)
    assert thread.daemon and not thread.is_alive()
    assert "torch" in requirements_utils._MODULES_TO_PACKAGES["torch"]  # what register() then finds


def test_a_sweep_that_registered_its_pick_before_leaves_a_promotion_since_in_place(monkeypatch):
    """A finished sweep run again (the README's way to recover): its parent run says it pointed the
    alias at its pick, and the user has promoted another trial since. It neither waits for a
    registration nobody makes (found by a reviewer: 120 s) nor moves the alias back. A version of
    the pick alone is not enough (a worker that died between registering and setting the alias),
    nor is the same pick under another name or alias: those are registered and aliased."""
    registered, tags = [], {front.REGISTERING_TAG: "t16:m@champion:an-earlier-uuid",
                            front.REGISTERED_TAG: "t16:m@champion:3"}

    class Client:
        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(tags=dict(tags)))

        def set_tag(self, run_id, key, value):
            tags[key] = value

    monkeypatch.setattr(front, "_registered_version", lambda *a: None)  # the alias points elsewhere
    monkeypatch.setattr(front, "register", lambda *a: registered.append(a) or "3")
    started = time.monotonic()
    once = dict(settle_s=0, wait_s=5, poll_s=0)
    assert front.register_once(Client(), "parent", {"mlflow_run_id": "t16", "trial": 16}, "m", "champion", None,
                               **once) == ("3", False)
    assert registered == [] and time.monotonic() - started < 1
    # the same pick to another alias (selection.alias may change between runs of a sweep): aliased
    assert front.register_once(Client(), "parent", {"mlflow_run_id": "t16", "trial": 16}, "m", "staging", None,
                               **once) == ("3", True)
    assert [a[:3] for a in registered] == [("t16", "m", "staging")]
    assert tags[front.REGISTERED_TAG] == "t16:m@staging:3"
    # a worker died after registering, before the alias: its claim and the version are there, the
    # completion is not -> the next end waits out the claim, then registers (which sets the alias)
    tags.clear()
    tags[front.REGISTERING_TAG] = "t20:m@champion:dead-worker"
    assert front.register_once(Client(), "parent", {"mlflow_run_id": "t20", "trial": 20}, "m", "champion", None,
                               settle_s=0, wait_s=0.3, poll_s=0.05) == ("3", True)
    assert registered[-1][:3] == ("t20", "m", "champion") and tags[front.REGISTERED_TAG] == "t20:m@champion:3"


def test_two_workers_volunteering_at_once_do_not_fail_the_sweep(monkeypatch):
    """Two workers writing the registering tag first at the same moment: the store refuses the
    second insert (UniqueViolation on PostgreSQL behind a tracking server, seen in CI); its worker
    writes again (an update now) and the sweep ends with the model registered once."""
    import mlflow

    tags, writes = {}, []

    class Client:
        def set_tag(self, run_id, key, value):
            writes.append(value)
            if len(writes) == 1:  # the other worker's insert landed first
                tags[key] = "other-trial:xyz"
                raise mlflow.exceptions.MlflowException("duplicate key value violates unique constraint \"tag_pk\"")
            tags[key] = value

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(tags=dict(tags)))

    monkeypatch.setattr(front, "_registered_version", lambda *a: None)
    monkeypatch.setattr(front, "register", lambda run_id, *a: f"registered {run_id}")
    assert front.register_once(Client(), "parent", {"mlflow_run_id": "t16", "trial": 16}, "m", "champion", None,
                               settle_s=0, wait_s=5, poll_s=0) == ("registered t16", True)
    claims = [w for w in writes if not w.startswith("t16:m@champion:registered")]  # then the completion tag
    assert len(claims) == 2 and claims[0] == claims[1] and tags[front.REGISTERING_TAG] == claims[1]
    assert tags[front.REGISTERED_TAG] == "t16:m@champion:registered t16"


def test_a_sweep_name_in_two_listed_experiments_is_told_apart_by_listing_one():
    """trial=<study>:N matching in two experiments (a reviewer found the error asked for exactly that)."""
    rows = [{"trial": 0, "study": "s", "mlflow_run_id": "a"}, {"trial": 1, "study": "s", "mlflow_run_id": "b"},
            {"trial": 0, "study": "s", "mlflow_run_id": "c"}]
    assert front._find_trial(rows, "s:1") is rows[1]
    with pytest.raises(ConfigError, match=r"^trial=s:0 matches 2 trial runs \(a, c\): one sweep name in several listed "
                                          r"experiments \(list only the one to promote from, experiments=\[<name>\]\) "
                                          r"or one sweep recorded twice in one$"):
        front._find_trial(rows, "s:0")


def test_promoting_a_trial_whose_dense_model_is_nowhere_is_refused_unless_forced(store, capsys):
    """It registered a version evaluate.py then refused, and said so only in a log line the
    command does not print (conf/front.yaml: no job logging)."""
    client = MlflowClient(store["uri"])
    exp = client.create_experiment("lost-promote", artifact_location=str(store["dir"] / "art-lost-promote"))
    _trial_run(client, exp, "se", 0, 30, 0.95, 0.3, 0.05, "COMPLETE", "FINISHED", store["dir"] / "pruned.pt",
               key="1" * 64)
    args = ("experiments=[lost-promote]", "action=promote", "trial=0", "selection.alias=lost")
    line = refused(store, capsys, *args)
    assert line.startswith("error: trial se:0: its dense model (the PSNC baseline; evaluate.py needs it) is neither in "
                           f"its run, nor in cache.dir={store['dir']}/no-cache"), line
    assert alias_run(store, alias="lost") is None
    # registered without it, as asked, and said on stderr: `import mlflow.pytorch` had set the root
    # logger to ERROR (logging.basicConfig) in this command without job logging
    proc = subprocess.run([sys.executable, "-m", "pipeline.front", f"tracking.uri={store['uri']}",
                           f"cache.dir={store['dir']}/no-cache", *args, "force=true"], cwd=store["dir"],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("WARNING: the dense model of trial 0 is in no cache: registered without it (evaluate.py model_uri=... "
            "looks for it again in cache.dir and the cache's runs)") in proc.stderr.splitlines(), proc.stderr
    version = client.get_model_version_by_alias("ecosplit-selected", "lost")
    assert version.tags["ecosplit.dense"] == "missing"
    # evaluate.py model_uri=...: its dense model looked for again (it was refused, even with the
    # model back in cache.dir, by a line without the run's id)
    mlflow.set_tracking_uri(store["uri"])
    with pytest.raises(ConfigError) as exc:
        front.registered_models("models:/ecosplit-selected@lost", store["dir"] / "no-cache")
    assert str(exc.value) == (
        f"model_uri=models:/ecosplit-selected@lost (registered without its dense model): its run={version.run_id}: its "
        f"dense model (the baselines need it) is not in the run, nor in cache.dir={store['dir']}/no-cache or any MLflow "
        f"run tagged ecosplit.cache_key={'1' * 64}")
    cache = store["dir"] / "lost-cache"
    cache.mkdir()
    save_checkpoint(store["dense"], cache / f"{'1' * 64}.pt")
    dense, pruned, run_id = front.registered_models("models:/ecosplit-selected@lost", cache)
    assert run_id == version.run_id
    assert all(torch.equal(a, b) for a, b in zip(dense.state_dict().values(), store["dense"].state_dict().values()))


def test_an_infinite_metric_mlflow_stored_as_the_largest_float_is_infinite_again():
    """Pruning that removes every weight gives C_r = inf; MLflow stores 1.8e308, which the front
    table printed as a 309-digit number."""
    import sys
    from types import SimpleNamespace
    run = SimpleNamespace(info=SimpleNamespace(run_id="r"), data=SimpleNamespace(
        tags={"optuna.trial_number": "3", "ecosplit.study": "s"}, params={},
        metrics={"compression_ratio": sys.float_info.max, "val_accuracy": 0.1, "objective": -sys.float_info.max}))
    row = front.run_row(run)
    assert (row["compression_ratio"], row["objective"], row["val_accuracy"]) == (math.inf, -math.inf, 0.1)
    table = front.format_table([row], {})
    assert "| inf |" in table and "| -inf |" in table and "e+308" not in table and "7976931" not in table
