"""evaluate.py's cut_accuracy.csv against the split model run by hand, and the new settings' checks."""
import csv

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError, validate_evaluation
from pipeline.model import SplitCNN, save_checkpoint
from tests.conftest import compose_cfg


@pytest.fixture
def tiny_eval_cfg(fake_mnist, tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "models"
    folder.mkdir()
    pruned = SplitCNN((2, 3, 3, 2), (6, 5, 4, 4, 10))
    with torch.no_grad():  # no biases: the logits scale with the input, so predictions differ between
        for name, p in pruned.named_parameters():  # images and 4-bit codes flip some of them
            if name.endswith("bias"):
                p.zero_()
    save_checkpoint(pruned, folder / "pruned.pt")
    save_checkpoint(SplitCNN((4, 4, 4, 4), (8, 8, 8, 8, 10)), folder / "dense.pt")
    return compose_cfg("evaluate", [
        f"checkpoint={folder}", f"data.root={fake_mnist}", "data.download=false",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/art",
        "trajectory.duration_s=5", "fig5_thresholds=[0.0]", "evaluation.realisations=1",
        "evaluation.sensitivity.path_loss_exponents=[]", "evaluation.sensitivity.reference_distances_m=[]",
        "channel.activation_bits=4", "channel.activation_coding=sparse",
    ])


def _by_hand(model, val_images, test_images, labels, cut, bits):
    """Client to the cut, a 4-bit per-tensor quantiser calibrated on the validation images' min/max
    (holding 0), dequantised, then the server: the test accuracy."""
    with torch.no_grad():
        if cut == "input":  # the raw image, nothing quantised
            return float((model(test_images).argmax(1) == labels).double().mean())
        calib = model.client(val_images, cut)
        lo, hi = min(0.0, float(calib.min())), max(0.0, float(calib.max()))
        step = (hi - lo) / (2**bits - 1) if hi > lo else 1.0
        zero = round(-lo / step)
        z = model.client(test_images, cut)
        codes = torch.clamp(torch.round(z / torch.tensor(step, dtype=torch.float32)) + zero, 0, 2**bits - 1)
        logits = model.server((codes - zero) * step, cut)
        return float((logits.argmax(1) == labels).double().mean())


def test_cut_accuracy_csv_is_the_split_model_run_by_hand(tiny_eval_cfg, tmp_path, monkeypatch):
    from pipeline.model import load_checkpoint
    from pipeline.reporting import run_evaluate
    from pipeline.stages import load_data
    monkeypatch.chdir(tmp_path)
    metrics = run_evaluate(tiny_eval_cfg)
    rows = list(csv.DictReader(open(tmp_path / "cut_accuracy.csv")))
    pruned = load_checkpoint(tmp_path / "models" / "pruned.pt")
    assert [r["cut"] for r in rows] == pruned.cut_names
    data = load_data(tiny_eval_cfg)
    for r in rows:
        expected = _by_hand(pruned, data.val.images, data.test.images, data.test.labels, r["cut"], 4)
        assert float(r["test_accuracy"]) == pytest.approx(expected, abs=1e-12), r["cut"]
        assert metrics[f"cut_test_accuracy_{r['cut']}"] == pytest.approx(expected, abs=1e-12)
        if r["cut"] != "input":  # sparse coding: every image in one of the three formats
            shares = sum(float(r[f"coded_{f}"]) for f in ("dense", "bitmask", "run_length"))
            assert shares == pytest.approx(1.0)
    # the raw image is sent dense at input_bits_per_element (the paper scenario's 32)
    assert float(rows[0]["payload_bits_mean"]) == 784 * 32
    accuracies = {float(r["test_accuracy"]) for r in rows}
    assert len(accuracies) > 1  # 4-bit codes change some predictions: the check above has teeth
    client = MlflowClient(tiny_eval_cfg.tracking.uri)
    run = client.get_run(metrics["run_id"])
    assert "cut_accuracy.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.metrics["test_accuracy_unquantised"] == pytest.approx(float(rows[0]["test_accuracy"]))
    table = list(csv.DictReader(open(tmp_path / "table3.csv")))
    assert all(0.0 <= float(r["route_accuracy"]) <= 1.0 for r in table)


@pytest.mark.parametrize("override,message", [
    ("channel.activation_bits=7", "channel.activation_bits must be one of 32, 16, 8, 4 (got 7)"),
    ("channel.activation_coding=rle", "channel.activation_coding must be one of dense, sparse (got 'rle')"),
    ("channel.activation_granularity=per_pixel",
     "channel.activation_granularity must be one of per_tensor, per_channel (got 'per_pixel')"),
    ("selection.max_accuracy_drop=2", r"selection.max_accuracy_drop must be in [0, 1] (got 2)"),
    ("selection.max_accuracy_drop=null", r"selection.max_accuracy_drop must be in [0, 1] (got None)"),
    ("evaluation.image_seed=-1", r"evaluation.image_seed must be in [0, inf) (got -1)"),
    ("energy.accumulate.fp32=int4", "energy.accumulate.fp32 must be one of int8, fp16, int32, fp32 (got 'int4')"),
])
def test_new_settings_refused_with_one_line(override, message):
    cfg = compose_cfg("evaluate", [override])
    with pytest.raises(ConfigError) as exc:
        validate_evaluation(cfg)
    assert str(exc.value) == message


def test_a_precision_without_an_arithmetic_model_is_refused():
    cfg = compose_cfg("evaluate", ["+energy.operations_pj.bf16={add: 0.4, mul: 1.1}",
                                   "+energy.bits_per_element.bf16=16", "energy.precision=bf16"])
    with pytest.raises(ConfigError) as exc:
        validate_evaluation(cfg)
    assert str(exc.value) == "energy.precision='bf16' has no arithmetic model: use int<2..32>, fp16 or fp32"


def test_paper_representation_keeps_every_cut_and_the_paper_payloads(fake_mnist):
    from pipeline.reporting import deployed_model, tables
    from pipeline.stages import load_data
    cfg = compose_cfg("evaluate", [f"data.root={fake_mnist}", "data.download=false", "trajectory.duration_s=5"])
    torch.manual_seed(0)
    model = SplitCNN((2, 2, 2, 2), (3, 3, 3, 3, 10))
    dep = deployed_model(cfg, model, load_data(cfg))
    assert dep.deployment.client is model  # fp32: the model itself
    # every cut computes the model's own forward pass: the same accuracy at every cut
    assert np.all(dep.route.accuracy == dep.route.accuracy[0])
    plain, deployed = tables(cfg, model), tables(cfg, model, dep)
    np.testing.assert_array_equal(plain.bits, deployed.bits)
    np.testing.assert_array_equal(plain.processing_j, deployed.processing_j)
    assert deployed.accurate.all()
