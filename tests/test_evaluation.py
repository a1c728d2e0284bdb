"""The glue from torch models and config to the energy math, and evaluate.py end to end."""
import csv

import mlflow
import numpy as np
import yaml
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError
from pipeline.layer_costs import layer_shapes
from pipeline.model import SplitCNN, save_checkpoint
from pipeline.reporting import run_evaluate
from pipeline.stages import run_train
from tests.conftest import compose_cfg


def test_layer_shapes_count_nonzeros_and_sizes():
    model = SplitCNN((2, 2, 2, 2), (3, 3, 3, 3, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model.layers.conv1.weight[0, 0, 0, :3] = 0.0   # 50 weights -> 47 non-zero
        model.layers.fc1.bias[1] = 0.0
    shapes = {s.name: s for s in layer_shapes(model)}
    assert shapes["conv1"].nnz_weights == 2 * 25 - 3 and shapes["conv1"].nnz_biases == 2
    assert shapes["conv1"].out_elements == 2 * 28 * 28 and shapes["conv1"].out_positions == 28 * 28
    assert shapes["pool4"].out_elements == 2 * 2 * 2 and shapes["pool4"].pool_window == 4
    assert shapes["fc1"].nnz_weights == 3 * 8 and shapes["fc1"].nnz_biases == 2 and shapes["fc1"].in_elements == 8
    assert shapes["fc5"].relu is False and shapes["fc4"].relu is True


@pytest.fixture
def eval_cfg(small_train_cfg, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "dense.pt"
    save_checkpoint(SplitCNN(), path)
    return compose_cfg("evaluate", [
        f"checkpoint={path}", f"data.root={small_train_cfg.data.root}", "data.download=false",
        f"tracking.uri={small_train_cfg.tracking.uri}", f"tracking.artifact_location={tmp_path}/art",
        "trajectory.duration_s=20", "fig5_thresholds=[0.0,0.05]", "evaluation.realisations=2",
        "evaluation.sensitivity.path_loss_exponents=[3.0]", "evaluation.sensitivity.reference_distances_m=[100.0]",
    ])


def test_evaluate_writes_table3_figures_and_run(eval_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = run_evaluate(eval_cfg)
    for m in ("ps", "pool1", "softmax", "psnc", "offload"):
        assert metrics[f"energy_total_j_{m}"] >= metrics["energy_total_j_ps"] > 0
    rows = list(csv.DictReader(open(tmp_path / "table3.csv")))
    assert [(float(r["bandwidth_hz"]), r["method"]) for r in rows][:2] == [(15e3, "ps"), (15e3, "pool1")]
    assert len(rows) == 10
    for r in rows:  # E = E_p + E_tr, CO2 = E / 3.6e6 J/kWh x 0.275 kg/kWh
        assert float(r["energy_total_j"]) == pytest.approx(float(r["energy_processing_j"]) + float(r["energy_transmission_j"]))
        assert float(r["co2_kg"]) == pytest.approx(float(r["energy_total_j"]) / 3.6e6 * 0.275)
    for f in ("table3.md", "fig3_layers.png", "fig4_trajectory.png", "fig5_compression.png", "fig5.csv", "locations.csv"):
        assert (tmp_path / f).stat().st_size > 0, f
    client = MlflowClient(eval_cfg.tracking.uri)
    run = client.get_run(metrics["run_id"])
    assert run.data.metrics["energy_total_j_softmax"] == pytest.approx(metrics["energy_total_j_softmax"])
    # every bandwidth computed, named by it: the two Table III rows and the default 5 MHz
    for r in rows:
        name = {15e3: "15khz", 15e6: "15mhz"}[float(r["bandwidth_hz"])]
        for key in ("energy_total_j", "energy_processing_j", "energy_transmission_j", "co2_kg", "duty_cycle"):
            assert run.data.metrics[f"{key}_{r['method']}_{name}"] == pytest.approx(float(r[key]), rel=1e-12)
    for m in ("ps", "pool1", "softmax", "psnc", "offload"):
        assert run.data.metrics[f"energy_total_j_{m}_5mhz"] == pytest.approx(metrics[f"energy_total_j_{m}"], rel=1e-12)
    assert run.data.metrics["energy_total_j_ps_15mhz"] != pytest.approx(run.data.metrics["energy_total_j_ps_5mhz"])
    assert {"table3.csv", "fig4_trajectory.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.parametrize("override,message", [
    ("checkpoint=null", "train_run_id=<MLflow run id of train.py or of a sweep trial>, "
                        "model_uri=models:/<name>@<alias> or checkpoint=<path>"),
    ("train_run_id=0123abcd", "give one model to evaluate, not train_run_id and checkpoint"),
    ("checkpoint=/no/such/file.pt", "not a checkpoint file"),
    ("channel.bandwidth_hz=0", r"channel.bandwidth_hz must be in \(0, inf\)"),
    ("channel.power_w=-1", r"channel.power_w must be in \(0, inf\)"),
    ("channel.noise_psd_w_per_hz=-1.0e-9", r"channel.noise_psd_w_per_hz must be in \(0, inf\)"),
    ("channel.bandwidths_hz=[15000.0,.nan]", r"channel.bandwidths_hz.1 must be a finite number"),
    ("channel.decision=psychic", "channel.decision must be one of oracle, causal"),
    ("energy.precision=fp64", "energy.precision must be one of int8, fp16, int32, fp32"),
    ("co2.region=Mars", "co2.region must be one of"),
    ("trajectory.speed_mps=0", r"trajectory.speed_mps must be in \(0, inf\)"),
    # one radio: a deadline past the 100 ms inference period (10 Hz) would let on-time uploads overlap
    ("channel.deadline_s=0.2", r"channel.deadline_s must be in \(0, 0.1\]"),
    ("channel.late_upload=retry", "channel.late_upload must be one of complete, abort"),
    ("channel.input_bits_per_element=0", r"channel.input_bits_per_element must be in \[1, inf\)"),
    ("channel.client_macs_per_s=0", r"channel.client_macs_per_s must be in \(0, inf\)"),
    ("selection.candidates=all", r"selection.candidates must be one of layers, layers\+input"),
    ("evaluation.realisations=0", r"evaluation.realisations must be in \[1, inf\)"),
    ("energy.memory_model=cache", "energy.memory_model must be one of"),
    # each of these was a traceback, some after the whole evaluation or a 74 GiB allocation
    ("trajectory.duration_s=0.01", r"trajectory.duration_s \(0.01 s\) x trajectory.inference_rate_hz \(10 Hz\) must give 1 "
                                   r"to 1e\+07 inferences \(got 0.1\)"),
    ("trajectory.duration_s=1.0e+9", r"must give 1 to 1e\+07 inferences \(got 1e\+10\)"),
    ("trajectory.coherence_time_s=1.0e-9", r"trajectory.duration_s \(20 s\) / trajectory.coherence_time_s \(1e-09 s\) "
                                         r"must give at most 1e\+08 fading blocks"),
    ("trajectory.seed=-1", r"trajectory.seed must be in \[0, inf\) \(got -1\)"),
    ("trajectory.coherence_time_s=null", r"trajectory.coherence_time_s must be in \(0, inf\) \(got None\)"),
    ("trajectory.speed_mps=null", r"trajectory.speed_mps must be in \(0, inf\) \(got None\)"),
    ("channel.activation_bits=16.0", r"channel.activation_bits must be one of .* \(got 16.0\)"),
    ("channel.bandwidths_hz=[]", r"channel.bandwidths_hz must be a list of one or more bandwidths in Hz \(got \[\]\)"),
    ("channel.bandwidths_hz=5000000.0", r"channel.bandwidths_hz must be a list of one or more bandwidths in Hz \(got 5000000.0\)"),
    ("trajectory.server_m=[0,0,0]", r"trajectory.server_m must be an \[x, y\] point in metres \(got \[0, 0, 0\]\)"),
    ("trajectory.waypoints_m=[[0,0],[1,abc]]", r"trajectory.waypoints_m must be a list of \[x, y\] points in metres"),
    ("trajectory.locations.P1=[1]", r"trajectory.locations.P1 must be an \[x, y\] point in metres \(got \[1\]\)"),
    ("tracking.experiment=''", "tracking.experiment must be an MLflow experiment's name, a non-empty text"),
    ("tracking.experiment=null", "tracking.experiment must be an MLflow experiment's name, a non-empty text"),
])
def test_evaluate_bad_input(eval_cfg, override, message):
    from omegaconf import OmegaConf
    cfg = eval_cfg.copy()
    OmegaConf.set_struct(cfg, False)
    key, value = override.split("=", 1)
    OmegaConf.update(cfg, key, yaml.safe_load(value))
    with pytest.raises(ConfigError, match=message):
        run_evaluate(cfg)


def test_evaluate_reads_the_training_run_from_the_configured_tracking_uri(small_train_cfg, tmp_path, monkeypatch,
                                                                           caplog):
    trained = run_train(small_train_cfg)  # into sqlite:///<tmp>/mlflow.db, not MLflow's default store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    mlflow.set_tracking_uri(f"sqlite:///{elsewhere}/mlflow.db")  # what a fresh process starts with
    cfg = compose_cfg("evaluate", [
        f"train_run_id={trained['run_id']}", f"data.root={small_train_cfg.data.root}", "data.download=false",
        "data.split_seed=7", "data.val_fraction=0.3",  # another split: its "validation" images were trained on
        f"tracking.uri={small_train_cfg.tracking.uri}", f"tracking.artifact_location={tmp_path}/art",
        "trajectory.duration_s=20", "fig5_thresholds=[0.0,0.05]", "evaluation.realisations=2",
        "evaluation.sensitivity.path_loss_exponents=[3.0]", "evaluation.sensitivity.reference_distances_m=[100.0]",
    ])
    metrics = run_evaluate(cfg)
    run = MlflowClient(small_train_cfg.tracking.uri).get_run(metrics["run_id"])
    assert run.data.tags["ecosplit.train_run_id"] == trained["run_id"]
    assert run.data.metrics["compression_ratio"] == pytest.approx(trained["compression_ratio"])
    assert not (elsewhere / "mlflow.db").exists()
    # validated on the images the run held out: its split, and the warning says so
    assert (run.data.params["data.split_seed"], run.data.params["data.val_fraction"]) == ("0", "0.1")
    assert "data.val_fraction=0.3 -> 0.1, data.split_seed=7 -> 0" in caplog.text


def test_evaluate_refuses_a_tracking_uri_that_does_not_exist(small_train_cfg, tmp_path):
    cfg = compose_cfg("evaluate", ["train_run_id=0123abcd", f"tracking.uri=sqlite:///{tmp_path}/none.db"])
    with pytest.raises(ConfigError, match=r"train_run_id=0123abcd: tracking.uri=sqlite:///.*/none.db does not exist"):
        run_evaluate(cfg)
    assert not (tmp_path / "none.db").exists()  # reading it would have created an empty store


def test_bandwidth_label_in_metric_names():
    from pipeline.reporting import bandwidth_label
    assert [bandwidth_label(hz) for hz in (15e3, 5e6, 15e6, 2.4e9, 500.0, 1.5e3, 1e30, 1e-300)] == [
        "15khz", "5mhz", "15mhz", "2.4ghz", "500hz", "1.5khz", "1e21ghz", "1e-300hz"]  # MLflow refuses '+' in a name


def test_fig4_is_drawn_when_the_route_passes_no_named_location(tmp_path):
    """A route that misses every named location (e.g. a changed trajectory.waypoints_m with the
    default P1-P4) left nothing to draw on fig. 4's log axes: matplotlib raised after the whole
    evaluation had run, and nothing was recorded."""
    from pipeline.plots import fig4_trajectory

    positions_m = np.array([[50.0, 0.0], [100.0, 0.0]])
    stats = {"energy_total_j": 2e-6, "energy_processing_j": 1e-6, "energy_transmission_j": 1e-6}
    for per_location in ({"ps": {}, "full": {}}, {"ps": {"P2": stats}, "full": {}}):
        path = fig4_trajectory(positions_m, [0.0, 0.0], {"P1": (5000.0, 5000.0), "P2": (100.0, 0.0)}, np.array([0, 1]),
                               ["input", "conv1"], np.array([0.0, 0.5]), per_location, 5e6, tmp_path / "fig4.png")
        assert path.stat().st_size > 0
        path.unlink()


def test_a_file_that_is_no_checkpoint_is_one_line(eval_cfg, tmp_path):
    from omegaconf import OmegaConf
    (tmp_path / "notes.pt").write_text("not a model")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")  # a torch file of another layout
    for name, why in (("notes.pt", "UnpicklingError"), ("other.pt", "KeyError: 'widths'")):
        cfg = eval_cfg.copy()
        OmegaConf.update(cfg, "checkpoint", str(tmp_path / name))
        with pytest.raises(ConfigError, match=rf"checkpoint={tmp_path / name}: not a checkpoint of this project's "
                                              rf"model \({why}"):
            run_evaluate(cfg)


def test_truncated_mnist_files_and_a_split_without_training_images_are_one_line(fake_mnist, tmp_path):
    import shutil
    from pipeline.data import DataUnavailableError, load_mnist
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.9 leaves no training samples out of 2"):
        load_mnist(fake_mnist, val_fraction=0.9, download=False, train_subset=2)
    root = tmp_path / "mnist"
    shutil.copytree(fake_mnist, root)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # a download or copy cut short
    with pytest.raises(DataUnavailableError, match=r"train-images-idx3-ubyte or train-labels-idx1-ubyte is not a whole "
                                                   r"MNIST file \(RuntimeError"):
        load_mnist(root, download=False)


def test_a_deleted_experiment_is_one_line_before_any_work(small_train_cfg, eval_cfg, tmp_path, monkeypatch):
    """Deleting an experiment in the MLflow UI is ordinary clean-up; MLflow then refused the
    command's run with a traceback, and evaluate.py only after its whole evaluation."""
    from omegaconf import OmegaConf
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(small_train_cfg.tracking.uri)
    for name in ("gone", "gone-cache"):
        client.delete_experiment(client.create_experiment(name))
    cfg = eval_cfg.copy()
    OmegaConf.update(cfg, "tracking.experiment", "gone")
    with pytest.raises(ConfigError, match=r"tracking.experiment=gone: the experiment is deleted in sqlite:///.*; restore "
                                          r"it \(mlflow experiments restore --experiment-id \d+\) or choose another name"):
        run_evaluate(cfg)
    assert not (tmp_path / "table3.csv").exists()
    cfg = small_train_cfg.copy()
    OmegaConf.update(cfg, "tracking.experiment", "gone")
    with pytest.raises(ConfigError, match=r"tracking.experiment=gone: the experiment is deleted"):
        run_train(cfg)
    from pipeline.sweep import _experiment_ids  # as a sweep starts: its experiment and the cache's
    cfg = compose_cfg("sweep", [f"tracking.uri={small_train_cfg.tracking.uri}", "cache.experiment=gone-cache"])
    with pytest.raises(ConfigError, match=r"cache.experiment=gone-cache: the experiment is deleted"):
        _experiment_ids(cfg)
    assert [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])] == []


def test_a_logged_split_setting_is_read_back_as_the_value_it_was():
    from pipeline.reporting import _param_value
    assert [_param_value(t) for t in ("None", "0", "0.1", "1e-05", "500", "abc")] == [None, 0, 0.1, 1e-05, 500, "abc"]
    assert isinstance(_param_value("0"), int) and isinstance(_param_value("1e-05"), float)  # YAML 1.1: "1e-05" is text
