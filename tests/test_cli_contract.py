"""The command line of train.py, evaluate.py and sweep.py: presets compose with each, and a mistake
is one line on stderr, exit status 2 and nothing recorded (no store created, none changed)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

ENTRY = {"train": ["train.py"], "evaluate": ["evaluate.py"], "sweep": ["sweep.py", "-m"]}


def run(entry: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(REPO)
    script, *flags = ENTRY[entry]
    return subprocess.run([sys.executable, str(REPO / script), *flags, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def assert_refused(proc: subprocess.CompletedProcess, line: str) -> None:
    """Exit status 2 and exactly one non-empty line on stderr, the given one (or containing it)."""
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and line in lines[0], proc.stderr[-3000:]


def stores(folder: Path) -> dict[str, bytes]:
    """Every MLflow/Optuna store and artifact file under folder, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (p.suffix == ".db" or "mlruns" in p.parts or "art" in p.parts)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fake_mnist):
    """train.py with the smoke preset into a non-default store: (work dir, tracking uri, run id)."""
    work = tmp_path_factory.mktemp("cli")
    uri = f"sqlite:///{work}/runs.db"
    proc = run("train", work, "experiment=smoke", f"data.root={fake_mnist}", "data.download=false",
               f"tracking.uri={uri}", f"tracking.artifact_location={work}/art", f"hydra.run.dir={work}/out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (only,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("ecosplit").experiment_id])
    return work, uri, only.info.run_id


def test_smoke_preset_composes_with_train_and_evaluate_reading_the_configured_store(trained, fake_mnist):
    work, uri, run_id = trained
    client = MlflowClient(uri)
    assert client.get_run(run_id).data.params["train.epochs"] == "3"  # the preset applied
    proc = run("evaluate", work, "experiment=smoke", f"train_run_id={run_id}", f"data.root={fake_mnist}",
               "data.download=false", f"tracking.uri={uri}", f"hydra.run.dir={work}/eval", "fig5_thresholds=[0.0]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluations = client.search_runs([client.get_experiment_by_name("ecosplit").experiment_id],
                                     "tags.stage = 'evaluate'")
    assert [r.data.tags["ecosplit.train_run_id"] for r in evaluations] == [run_id]
    assert not (work / "mlflow.db").exists()  # MLflow's default store was never touched


@pytest.mark.parametrize("entry", ["train", "evaluate", "sweep"])
def test_unknown_preset_is_refused_with_the_available_ones(tmp_path, entry):
    proc = run(entry, tmp_path, "experiment=smok")
    assert_refused(proc, "error: experiment=smok: no such preset in conf/experiment/ (available: beyond, max_compression, smoke)")
    assert list(tmp_path.iterdir()) == []  # no store, no output folder


@pytest.mark.parametrize("entry,override,line", [
    ("train", "train.muu=1", "Could not override 'train.muu'"),
    ("train", "train.mu=[", "bad override 'train.mu=['"),
    ("evaluate", "data=fashion", "data=fashion: no such option in conf/data/ (available: mnist)"),
    ("evaluate", "energy=bogus", "energy=bogus: no such option in conf/energy/ (available: default, with_activations)"),
    ("sweep", "hydra/sweeper/ecosplit_sampler=tpee", "hydra/sweeper/ecosplit_sampler=tpee: no such option"),
    ("sweep", "objective.lamda=0.2", "Could not override 'objective.lamda'"),
])
def test_composition_errors_are_one_line_and_exit_2(tmp_path, entry, override, line):
    proc = run(entry, tmp_path, override)
    assert_refused(proc, line)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override,line", [
    ("channel.bandwidth_hz=0", "error: channel.bandwidth_hz must be in (0, inf) (got 0)"),
    ("co2.region=Mars", "error: co2.region must be one of EU, FR, SE, DE, PL, FI, IT, ES (got 'Mars')"),
    ("train_run_id=0123abcd", "error: train_run_id=0123abcd: no such run in sqlite:///"),
    ("train_run_id=null", "error: give the model to evaluate: train_run_id="),
    ("tracking.sqlite_wal=maybe", "error: tracking.sqlite_wal must be one of True, False (got 'maybe')"),
    ("tracking.server_wait_s=-1", "error: tracking.server_wait_s must be in [0, inf) (got -1)"),
])
def test_evaluate_bad_input_is_one_line_exit_2_and_nothing_recorded(trained, fake_mnist, override, line):
    work, uri, run_id = trained
    before = stores(work)
    proc = run("evaluate", work, f"train_run_id={run_id}", f"data.root={fake_mnist}", "data.download=false",
               f"tracking.uri={uri}", f"hydra.run.dir={work}/bad", override)
    assert_refused(proc, line)
    assert stores(work) == before


def test_train_on_a_missing_gpu_is_one_line_exit_2_and_nothing_recorded(tmp_path, fake_mnist):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run("train", tmp_path, "experiment=smoke", f"data.root={fake_mnist}", "data.download=false",
               "train.device=cuda", f"hydra.run.dir={tmp_path}/out")
    assert_refused(proc, "error: train.device=cuda: CUDA is not available here")
    assert stores(tmp_path) == {}


def test_evaluate_refuses_a_store_that_does_not_exist_without_creating_it(tmp_path):
    proc = run("evaluate", tmp_path, "train_run_id=0123abcd", f"tracking.uri=sqlite:///{tmp_path}/none.db",
               f"hydra.run.dir={tmp_path}/out")
    assert_refused(proc, "does not exist (set tracking.uri to the store the run was recorded in)")
    assert stores(tmp_path) == {}


# Refused by pipeline.sweep.study_definition, the sweeper's definition hook, before the study opens.
@pytest.mark.parametrize("override,line", [
    ("objective.lam=-0.1", "error: objective.lam must be in [0, 1] (got -0.1)"),
    ("selection.rule=best", "error: selection.rule must be one of min_energy, knee, best_objective (got 'best')"),
    ("train.epochs=0", "error: train.epochs must be in [1, inf) (got 0)"),
    ("channel.decision=psychic", "error: channel.decision must be one of oracle, causal (got 'psychic')"),
    ("data.val_fraction=1.0", "error: data.val_fraction must be in (0, 1) (got 1.0)"),
    ("train.device=cuda", "error: train.device=cuda: CUDA is not available here"),
    ("tracking.sqlite_wal=maybe", "error: tracking.sqlite_wal must be one of True, False (got 'maybe')"),
    ("tracking.uri=mlruns", "error: tracking.uri must be a database (sqlite://, postgresql://, mysql://, mssql://, "
                            "e.g. sqlite:///mlflow.db) or a tracking server (http(s)://host:port, databricks); "
                            "a plain folder only with MLFLOW_ALLOW_FILE_STORE=true (got 'mlruns')"),
    # MLflow refuses it only at the registration, after every trial (found by a reviewer)
    ("selection.alias=latest", "error: selection.alias must be 1-255 letters, digits, '_' or '-', and neither "
                               "'latest' nor v<number>, which MLflow reserves (got 'latest')"),
])
def test_sweep_bad_setting_is_one_line_exit_2_and_nothing_recorded(tmp_path, fake_mnist, override, line):
    proc = run("sweep", tmp_path, "experiment=smoke", f"data.root={fake_mnist}", "data.download=false", override)
    assert_refused(proc, line)
    assert stores(tmp_path) == {}


def test_an_omegaconf_error_inside_a_task_is_a_bug_and_keeps_its_traceback(monkeypatch):
    """Only what Hydra refuses while composing is a user's mistake (one line, exit 2); the same
    kind of error raised by our own code once the task runs is a bug."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError

    from pipeline import cli

    cfg = OmegaConf.create({"train": {"mu": 0.5}})
    OmegaConf.set_struct(cfg, True)

    monkeypatch.setattr(cli, "_task_started", False)
    with pytest.raises(SystemExit) as refused:  # before any task: a composition mistake
        cli.run_cli(lambda: cfg.train.muu)
    assert refused.value.code == 2

    monkeypatch.setattr(cli, "_task_started", False)
    task = cli.user_errors_exit(lambda: cfg.train.muu)  # a misspelt key in our own code
    with pytest.raises(ConfigAttributeError):
        cli.run_cli(task)


HELP_SECTIONS = {"train": ["data", "model", "train", "prune", "tracking", "experiment"],
                 "evaluate": ["scenario", "energy", "channel", "trajectory", "selection", "evaluation", "co2", "experiment"],
                 "sweep": ["objective", "hydra/sweeper/ecosplit_sampler", "hydra/sweeper/ecosplit_pruner", "scenario",
                           "selection", "experiment"]}


@pytest.mark.parametrize("entry", ["train", "evaluate", "sweep"])
def test_help_describes_the_app_its_groups_and_examples_that_compose(entry, tmp_path):
    """Each entry point's --help (conf/hydra/help/<entry>.yaml): what it does, examples that compose
    (a dry run: Hydra's compose with the example's overrides), the groups that apply with options
    that exist, and README sections that exist."""
    import re
    import shlex

    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser
    import hydra_plugins.ecosplit_optuna_sweeper.config  # noqa: F401  (the sampler and pruner groups)
    proc = run(entry, tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert text.startswith(f"{entry}.py") and "== Examples ==" in text and "Powered by Hydra" not in text
    # the groups that apply: every option listed is a config of that group
    lines = text.split("== Config groups that apply (group=option) ==")[1].splitlines()
    listed = {}
    for line in lines:
        m = re.match(r"^  ([a-z0-9_/]+): ([a-z_0-9| ]+?)(?:\s{2,}|$)", line)
        if m:
            listed[m.group(1)] = [o.strip() for o in m.group(2).split("|")]
    assert list(listed) == HELP_SECTIONS[entry]
    for group, options in listed.items():
        if group.startswith("hydra/"):
            stored = {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
        else:
            stored = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
        assert set(options) <= stored, (group, options, stored)
    # README sections named in the footer exist
    headings = {line.lstrip("#").strip() for line in (REPO / "README.md").read_text().splitlines() if line.startswith("## ")}
    for name in re.findall(r'"([^"]+)"', text.split("README:")[1]):
        assert any(h.startswith(name) for h in headings), name
    # the examples compose (placeholders filled in)
    examples = [shlex.split(line.split(" # ")[0].replace("<run id>", "0" * 32))
                 for line in text.split("== Examples ==")[1].split("==")[0].splitlines() if line.strip()]
    assert len(examples) >= 2
    for words in examples:
        assert words[:2] == ["python", f"{entry}.py"]
        parsed = OverridesParser.create().parse_overrides([w for w in words[2:] if w != "-m"])
        # a sweep over a parameter composes at one of its values, as a trial does
        overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
            compose(entry, overrides)


def test_an_entry_script_keeps_the_collector_off_its_long_lived_objects(monkeypatch):
    """A sweep worker's full collections would walk every object of torch, MLflow and Hydra again
    and again, and its exit all of them once more: frozen before the task (the imports), where
    the task says so (freeze_heap), and at the end, even after an error; freeze_heap outside an
    entry script (a test, a launcher's worker) leaves the collector alone."""
    import gc

    from pipeline import cli

    monkeypatch.setattr(cli, "_in_script", False)
    assert gc.get_freeze_count() == 0
    try:
        cli.freeze_heap()
        assert gc.get_freeze_count() == 0

        def task():
            frozen = gc.get_freeze_count()
            alive = [[i] for i in range(100)]  # made by the task, tracked by the collector
            cli.freeze_heap()
            return frozen, gc.get_freeze_count() - len(alive)
        before, after = cli.run_script(task)
        assert before > 0 and after >= before
        gc.unfreeze()
        with pytest.raises(SystemExit) as refused:
            cli.run_script(cli.user_errors_exit(lambda: cli.refuse("bad")))
        assert refused.value.code == 2 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_ctrl_c_that_a_library_turned_into_another_error_is_still_an_interrupt(monkeypatch):
    """In CI a Ctrl-C landed while OmegaConf built a ListConfig, and its clean-up raised a
    ConfigKeyError in place of the KeyboardInterrupt: the sweep told the trial FAIL and exited 1.
    An entry script counts SIGINTs, so any error raised after one is the interrupt it hides; an
    error without a Ctrl-C stays itself, and the script's SIGINT handler is put back after."""
    import gc
    import signal

    from hydra_plugins.ecosplit_optuna_sweeper import _interrupt as interrupts
    from pipeline import cli

    def masked():
        try:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal
            time.sleep(1)  # the handler runs at once
        except KeyboardInterrupt:
            raise ValueError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None
        pytest.fail("SIGINT did not raise KeyboardInterrupt")

    def bug():
        raise ValueError("a bug")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    monkeypatch.setattr(cli, "_in_script", False)
    try:
        with pytest.raises(SystemExit) as interrupted:  # run_script's one line and 130 for a Ctrl-C
            cli.run_script(cli.user_errors_exit(masked))
        assert interrupted.value.code == 130 and isinstance(interrupted.value.__cause__, KeyboardInterrupt)
        assert isinstance(interrupted.value.__cause__.__cause__, ValueError)

        def masked_term():  # the same behind SIGTERM: still SIGTERM's line and status, not Ctrl-C's
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            except KeyboardInterrupt:
                raise ValueError("hidden") from None
            pytest.fail("SIGTERM did not raise")
        with pytest.raises(SystemExit) as terminated:
            cli.run_script(cli.user_errors_exit(masked_term))
        assert terminated.value.code == 143 and isinstance(terminated.value.__cause__, interrupts.Terminated)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        with pytest.raises(ValueError, match="a bug"):
            cli.run_script(cli.user_errors_exit(bug))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        def own_handler():  # a task installing its own handler keeps it
            signal.signal(signal.SIGINT, mine)
        mine = lambda *_: None  # noqa: E731
        cli.run_script(own_handler)
        assert signal.getsignal(signal.SIGINT) is mine
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # started in the background: stays ignored
        with pytest.raises(ValueError, match="a bug"):
            cli.run_script(cli.user_errors_exit(bug))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
        gc.unfreeze()


@pytest.mark.parametrize("entry", ["train", "sweep"])
def test_a_tracking_server_that_does_not_answer_is_one_line_exit_2_at_once(tmp_path, fake_mnist, entry):
    """Not MLflow's seven retries (~2 min) then a traceback (found by a reviewer)."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = run(entry, tmp_path, "experiment=smoke", f"data.root={fake_mnist}", "data.download=false",
               f"tracking.uri=http://127.0.0.1:{port}", "tracking.server_wait_s=1",  # the default 10 s: 10 s more
               f"hydra.run.dir={tmp_path}/out")
    assert_refused(proc, f"error: tracking.uri=http://127.0.0.1:{port}: no MLflow tracking server answered there "
                         "within tracking.server_wait_s=1 s (ConnectionError); start it, set tracking.uri to one that "
                         "runs, or wait longer")
    assert time.monotonic() - started < 60 and stores(tmp_path) == {}


@pytest.mark.parametrize("entry", ["train", "sweep"])
def test_a_tracking_database_that_does_not_answer_is_one_line_exit_2_at_once(tmp_path, fake_mnist, entry):
    """A PostgreSQL tracking.uri nothing listens on: not MLflow's ~100 s of retries then a
    traceback; the password masked. A malformed one: at once."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    uri = f"postgresql://u:{{}}@127.0.0.1:{port}/mlflow"
    proc = run(entry, tmp_path, "experiment=smoke", f"data.root={fake_mnist}", "data.download=false",
               f"tracking.uri={uri.format('pw123')}", "tracking.server_wait_s=1", f"hydra.run.dir={tmp_path}/out")
    assert_refused(proc, f"error: tracking.uri={uri.format('***')}: the tracking database did not answer within "
                         f"tracking.server_wait_s=1 s (connection failed: connection to server at \"127.0.0.1\", port "
                         f"{port} failed: Connection refused); start it, set tracking.uri to one that runs, or wait longer")
    assert time.monotonic() - started < 60 and stores(tmp_path) == {}
    # a URL no database can be opened by: said before anything is recorded (a sweep's Optuna study
    # included), with tracking.server_wait_s=null (no connection tried) too
    for wait in ("10", "null"):
        for bad, why in [("postgresql://u@127.0.0.1:abc/mlflow", "ValueError: invalid literal for int() with base 10: 'abc'"),
                         ("mysql://u@127.0.0.1/mlflow", "ModuleNotFoundError: No module named 'MySQLdb'")]:
            proc = run(entry, tmp_path, "experiment=smoke", f"data.root={fake_mnist}", "data.download=false",
                       f"tracking.uri={bad}", f"tracking.server_wait_s={wait}", f"hydra.run.dir={tmp_path}/out")
            assert_refused(proc, f"error: tracking.uri={bad}: MLflow cannot open this tracking database ({why})")
            assert stores(tmp_path) == {}


@pytest.mark.parametrize("sig,status,line", [
    ("SIGINT", 130, "interrupted (Ctrl-C); the MLflow run it was recording, if any, ended KILLED"),
    # kill, timeout, a batch scheduler, docker stop: the run stayed RUNNING, with no line
    ("SIGTERM", 143, "terminated (SIGTERM); the MLflow run it was recording, if any, ended KILLED")])
def test_ctrl_c_in_train_is_one_line_exit_130_and_its_run_ends_killed(sig, status, line, tmp_path, fake_mnist):
    import signal

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(REPO)
    uri = f"sqlite:///{tmp_path}/runs.db"
    MlflowClient(uri)  # the store made first: polling it while train.py creates its tables would race it
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "experiment=smoke", f"data.root={fake_mnist}",
                             "data.download=false", "train.epochs=500", f"tracking.uri={uri}",
                             f"tracking.artifact_location={tmp_path}/art", f"hydra.run.dir={tmp_path}/out"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    running = []
    while not running and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        running = MlflowClient(uri).search_runs(["1"], "attributes.status = 'RUNNING'")
    assert running, proc.communicate()[1][-3000:]
    time.sleep(1)  # training
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-3000:]
    assert [x for x in err.splitlines() if x.strip()][-1] == line and "Traceback" not in err, err[-3000:]
    assert MlflowClient(uri).get_run(running[0].info.run_id).info.status == "KILLED"


@pytest.mark.parametrize("preset", [None, "smoke", "beyond", "max_compression"])
def test_every_entry_point_accepts_every_preset(preset):
    """Each shipped config passes the checks its command runs first (a check that read a key the
    smoke preset adds only partly - cache.dir without cache.enabled - refused train.py)."""
    from pipeline.config import validate_evaluation, validate_training
    from pipeline.sweep import study_definition
    from tests.conftest import compose_cfg
    extra = [f"experiment={preset}"] if preset else []
    validate_training(compose_cfg("train", extra))
    cfg = compose_cfg("evaluate", extra)
    validate_training(cfg)
    validate_evaluation(cfg)
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        sweep = compose("sweep", extra, return_hydra_config=True)
    assert study_definition(sweep)  # validate_sweep and every searched value
