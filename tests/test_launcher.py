"""hydra/launcher=ecosplit (hydra_plugins/ecosplit_optuna_sweeper/launcher.py): the same jobs as
Hydra's basic launcher, for less work per job.

The toy app (tests/sweeper_app) runs the same 3-trial sweep through both launchers, one trial
failing, with ``record=true`` (each job writes what it sees of Hydra to ``seen.json``), a Hydra
callback writing each JobReturn to ``job_end.json`` and an on_complete hook writing the sweeper's
working directory and environment once the jobs ran; all of it, the jobs' ``.hydra`` files and
log files and the trials' outcomes must agree.
"""

import json
import re
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from test_sweeper import REPO, run_app

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hydra_plugins.ecosplit_optuna_sweeper._launcher import config_yaml  # noqa: E402

SWEEP = ["record=true", "hydra.sweeper.n_trials=3", "++hydra.job.env_set.MY_APP_ENV=hello",
         # relative, as by default: run_job makes only hydra.runtime.output_dir absolute
         "hydra.sweep.dir=multirun",
         # read through ${hydra:...}: HydraConfig must be set before the job's folder is named
         "hydra.sweep.subdir=${hydra.job.num}_${hydra:job.override_dirname}",
         "+hydra.callbacks.record._target_=my_app.RecordJobEnd", "hydra.sweeper.on_complete=my_app.record_after_jobs",
         # trial 2 draws x = 1.76 (TPE, seed 123) and fails, so do later ones with x > 1.7 (a failed
         # trial is replaced until 3 complete): FAILs go through the launcher too
         "fail_if_x_above=1.7", "hydra.sweeper.max_failure_rate=1.0"]


def sweep_with(root: Path, launcher: str, *overrides: str) -> list:
    root.mkdir()
    storage = f"sqlite:///{root / 'optuna.db'}"
    run_app(root, f"hydra/launcher={launcher}", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=launch",
            *SWEEP, *overrides)
    trials = optuna.load_study(study_name="launch", storage=storage).trials
    return [(t.state.name, t.params, t.values) for t in trials]


def job_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "multirun").glob("*/seen.json"))


def read(path: Path, root: Path):
    """A file's YAML/JSON content with the sweep's own folder written as <root>."""
    return yaml.safe_load(path.read_text().replace(str(root), "<root>"))


def log_lines(path: Path, root: Path) -> list[str]:
    """A job's log file without its timestamps."""
    return [re.sub(r"^\[[^]]*\]", "", line) for line in path.read_text().replace(str(root), "<root>").splitlines()]


def without_launcher(hydra_yaml: dict) -> dict:
    """hydra.yaml less what names the launcher (its config, its choice, its override)."""
    h = hydra_yaml["hydra"]
    del h["launcher"], h["runtime"]["choices"]["hydra/launcher"]
    h["overrides"]["hydra"] = [o for o in h["overrides"]["hydra"] if not o.startswith("hydra/launcher=")]
    return hydra_yaml


@pytest.mark.parametrize("chdir", ["false", "true"])
def test_the_jobs_get_what_hydras_basic_launcher_gives_them(tmp_path, chdir):
    basic, ours = tmp_path / "basic", tmp_path / "ecosplit"
    trials = sweep_with(ours, "ecosplit", f"hydra.job.chdir={chdir}")
    states = [state for state, _, _ in trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "FAIL"] and states.count("COMPLETE") == 3
    assert sweep_with(basic, "basic", f"hydra.job.chdir={chdir}") == trials
    # the sweeper's process after the jobs: its own working directory, no job's environment
    for root in (basic, ours):
        assert json.loads((root / "multirun" / "after_jobs.json").read_text()) == {"cwd": str(root), "env": None}
    dirs = {root: job_dirs(root) for root in (basic, ours)}
    assert [d.name for d in dirs[basic]] == [d.name for d in dirs[ours]]
    assert len(dirs[ours]) == len(trials) and dirs[ours][0].name.startswith("0_fail_if_x_above=1.7,record=true,x=")
    for b, o in zip(dirs[basic], dirs[ours]):
        seen = read(o / "seen.json", ours)
        assert seen == read(b / "seen.json", basic)
        assert seen["output_dir"] == f"<root>/multirun/{o.name}" and seen["env"] == "hello"
        assert seen["cwd"] == (seen["output_dir"] if chdir == "true" else "<root>")
        assert not seen["has_hydra_node"] and seen["config"]["record"] is True
        for name in ("config.yaml", "overrides.yaml"):
            assert read(o / ".hydra" / name, ours) == read(b / ".hydra" / name, basic), name
        assert without_launcher(read(o / ".hydra" / "hydra.yaml", ours)) == \
            without_launcher(read(b / ".hydra" / "hydra.yaml", basic))
        assert read(o / ".hydra" / "hydra.yaml", ours)["hydra"]["launcher"]["_target_"].endswith("EcosplitLauncher")
        # what the sweeper's JobReturn holds (working_dir relative when the job changed into it)
        job_end = read(o / "job_end.json", ours)
        assert job_end == read(b / "job_end.json", basic)
        assert job_end["working_dir"] == (f"multirun/{o.name}" if chdir == "true" else "<root>")
        assert job_end["job_num"] == seen["job_num"] and not job_end["cfg_has_hydra"]
        assert job_end["status"] == ("FAILED" if states[seen["job_num"]] == "FAIL" else "COMPLETED")
        # the job's own log file (hydra.job_logging), the task's line in it
        assert log_lines(o / "my_app.log", ours) == log_lines(b / "my_app.log", basic)
        assert f"recorded job {seen['job_num']}" in (o / "my_app.log").read_text()


def test_the_project_sweep_uses_this_launcher():
    from hydra import compose, initialize_config_dir
    from hydra.core.plugins import Plugins

    from hydra_plugins.ecosplit_optuna_sweeper.launcher import EcosplitLauncher

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("sweep", return_hydra_config=True)
        launcher = Plugins.instance().instantiate_launcher(hydra_context=None, task_function=lambda c: None,
                                                           config=cfg)
    assert type(launcher).__name__ == EcosplitLauncher.__name__ and type(launcher).__module__ == EcosplitLauncher.__module__


# strings that YAML would read back as something else unless quoted, and strings the C emitter
# folds or escapes differently from PyYAML's
TRICKY = {"true": "true", "no": "no", "int": "123", "float": "1e-3", "float2": "1.0", "null": "null", "tilde": "~",
          "inf": ".inf", "interp": "${a.b}", "colon": "a: b", "hash": "x # y", "lead": " x", "unicode": "µJ →",
          "multi": "line 1\nline 2\n", "long": "word " * 60, "empty": "", "quote": "it's \"q\"", "emoji": "🙂",
          "nel": "a\x85b",
          "numbers": [1, 2.5, 1e-05, -3, True, None], "nested": {"k": "1e5", "deep": {"s": "off"}}}


def typed(value):
    """``value`` with every leaf's type beside it (== alone takes True for 1 and 1.0)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def test_the_yaml_emitted_loads_back_as_omegaconf_own():
    cfg = OmegaConf.create(TRICKY)
    text = config_yaml(cfg)
    # every value back with its type (OmegaConf.to_yaml itself turns NEL into a space)
    assert typed(OmegaConf.to_container(OmegaConf.create(text))) == typed(TRICKY)


def test_a_lone_surrogate_is_written_as_pyyaml_writes_it(tmp_path):
    # a path that is not UTF-8 reaches Python as a lone surrogate (os.getcwd(), os.environ): libyaml refuses it
    cfg = OmegaConf.create({"cwd": "/data/caf\udce9"})
    assert config_yaml(cfg) == OmegaConf.to_yaml(cfg)
