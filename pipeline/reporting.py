"""``evaluate.py``: energy of every method over the trajectory, Table III, Figs. 3-5, in MLflow.

Edges only: loads models and data, calls the numpy math (evaluation, simulation), writes files
to the Hydra output dir and records them in one MLflow run linked to the training run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import front, tracking
from .config import (ConfigError, carbon_index, link_from_config, route_from_config, timing_from_config,
                     validate_evaluation, validate_training)
from .data import MnistSplits
from .deployment import CutMeasurement, Deployment, deploy, measure
from .evaluation import (METHODS, STAT_KEYS, CutTable, accurate_cuts, cut_share_rows, cut_table, route_accuracy,
                         route_images, simulate, table_rows, versus_paper)
from .quantisation import CODING_FORMATS
from .layer_costs import processing_table
from .model import CheckpointError, SplitCNN, count_nonzero, count_parameters, load_checkpoint, uncompressed_reference
from .pruning import compression_ratio, prune
from .simulation import Scenario, build_scenario
from .trajectory import nearest_location

log = logging.getLogger(__name__)


# -- the model as deployed (issue 11) -------------------------------------------------------
@dataclass
class Deployed:
    """One model as deployed under ``energy.precision`` and ``channel.activation_*``, measured on
    the validation images (its cuts' accuracy for selection.max_accuracy_drop, a causal client's
    expected payloads) and on the images that go along the route (``route_split``: the test set in
    evaluate.py, the validation set in the sweep, which never sees the test set)."""

    deployment: Deployment
    val: CutMeasurement
    route: CutMeasurement
    route_split: str


def paper_representation(cfg: DictConfig) -> bool:
    """fp32 arithmetic, 32-bit dense payloads: the deployed model is the model itself at every cut."""
    c = cfg.channel
    return cfg.energy.precision == "fp32" and int(c.activation_bits) == 32 and c.activation_coding == "dense"


def deployed_model(cfg: DictConfig, model: SplitCNN, data: MnistSplits, route_split: str = "test") -> Deployed:
    """``model`` deployed with every range calibrated on ``data.val``, measured on val and ``route_split``."""
    c = cfg.channel
    deployment = deploy(model, cfg.energy.precision, c.activation_bits, c.activation_granularity, data.val.images)
    val = measure(deployment, data.val, c.activation_coding, c.input_bits_per_element)
    route = val if route_split == "val" else measure(deployment, getattr(data, route_split), c.activation_coding,
                                                     c.input_bits_per_element)
    return Deployed(deployment, val, route, route_split)


def n_inferences(cfg: DictConfig) -> int:
    """Inferences along the route (the same in every fading realisation)."""
    return len(build_scenario(route_from_config(cfg.trajectory), n_blocks=1).times_s)


def route_correct(cfg: DictConfig, dep: Deployed) -> np.ndarray:
    """(N, C) bool: whether each inference's image is classified correctly at each cut, as deployed."""
    images = route_images(n_inferences(cfg), len(dep.route.correct), cfg.evaluation.image_seed)
    return dep.route.correct[images]


# -- cut tables ----------------------------------------------------------------------------
def tables(cfg: DictConfig, model: SplitCNN, dep: Deployed | None = None, every_parameter: bool = False) -> CutTable:
    """Per-cut processing energy (eqs. 1, 2, 6), payloads (eq. 4) and compute times of a model;
    with ``dep``, of the model as deployed: its client's weights, its payloads (per inference
    under sparse coding: the route's images'), the cuts within selection.max_accuracy_drop.
    ``every_parameter``: the client is costed with every parameter stored, zeros included
    (pipeline.model.uncompressed_reference; PSNC of a model trained sparse)."""
    c = cfg.channel
    client = model if dep is None else dep.deployment.client
    p = processing_table(uncompressed_reference(client) if every_parameter else client, cfg.energy)
    extra = {}
    if dep is not None:
        accuracy = dep.val.accuracy  # cut "input" runs the unquantised model on the server
        extra = {"accuracy": accuracy,
                 "accurate": accurate_cuts(accuracy, accuracy[0], cfg.selection.max_accuracy_drop)}
        if c.activation_coding == "sparse":
            images = route_images(n_inferences(cfg), len(dep.route.body_bits), cfg.evaluation.image_seed)
            extra.update(body_bits=dep.route.body_bits[images], expected_body_bits=dep.val.body_bits.mean(axis=0))
    return cut_table(p.names, p.processing_j, p.out_elements, p.macs, p.layers,
                     bits_per_element=c.activation_bits, input_bits_per_element=c.input_bits_per_element,
                     candidates=cfg.selection.candidates, fixed_cuts_send_index=c.fixed_cuts_send_index,
                     client_macs_per_s=c.client_macs_per_s, **extra)


# -- models --------------------------------------------------------------------------------
@dataclass
class Models:
    dense: SplitCNN
    pruned: SplitCNN
    train_run_id: str | None  # the run the models come from (train.py's or a sweep trial's)


SOURCES = ("train_run_id", "model_uri", "checkpoint")


def load_models(cfg: DictConfig) -> Models:
    """From ``train_run_id`` (a train.py run's checkpoints, or a sweep trial run's pruned model and
    the dense model it was pruned from), ``model_uri`` (a registered version, ``models:/<name>@<alias>``
    or ``models:/<name>/<version>``: see pipeline.front) or ``checkpoint`` (dense file, or a folder
    with both)."""
    given = [k for k in SOURCES if cfg.get(k)]
    if len(given) > 1:
        raise ConfigError(f"give one model to evaluate, not {' and '.join(given)}")
    if cfg.train_run_id or cfg.model_uri:
        setting = "train_run_id" if cfg.train_run_id else "model_uri"
        if cfg.model_uri:
            front.parse_model_uri(cfg.model_uri)
        if not tracking.store_exists(cfg.tracking.uri):  # reading it would create an empty store
            raise ConfigError(f"{setting}={cfg[setting]}: tracking.uri={cfg.tracking.uri} does not exist "
                              f"(set tracking.uri to the store the run was recorded in)")
        tracking.use(cfg.tracking.uri, cfg.tracking.sqlite_wal)  # the run is read from the configured store, not MLflow's default
        if cfg.train_run_id:
            return Models(*front.run_models(cfg.train_run_id, cfg.cache.dir), cfg.train_run_id)
        return Models(*front.registered_models(cfg.model_uri, cfg.cache.dir))
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        try:
            if path.is_dir() and (path / "dense.pt").exists() and (path / "pruned.pt").exists():
                return Models(load_checkpoint(path / "dense.pt"), load_checkpoint(path / "pruned.pt"), None)
            if path.is_file():
                from .stages import load_data, prune_model
                dense = load_checkpoint(path)
                return Models(dense, prune_model(cfg, dense, load_data(cfg)), None)
        except CheckpointError as exc:
            raise ConfigError(f"checkpoint={exc}") from None
        raise ConfigError(f"checkpoint={path}: not a checkpoint file nor a folder with dense.pt and pruned.pt")
    raise ConfigError("give the model to evaluate: train_run_id=<MLflow run id of train.py or of a sweep trial>, "
                      "model_uri=models:/<name>@<alias> or checkpoint=<path>")


# the settings that choose a run's validation images (``data.split_train_val``; train_repeat tiles
# after the split, test_subset is the test set's)
SPLIT_KEYS = ("data.val_fraction", "data.split_seed", "data.train_per_class", "data.train_subset")


def held_out_as_trained(cfg: DictConfig, run_id: str) -> None:
    """Make ``cfg``'s validation images the ones the run held out: its logged ``SPLIT_KEYS`` replace
    differing values, with a warning naming them. Otherwise another split (e.g. ``data.split_seed=7``,
    or a preset's ``data.train_subset`` missing) would measure "validation" accuracy, which
    ``selection.max_accuracy_drop`` acts on, on images the model was trained on."""
    from mlflow.tracking import MlflowClient

    params = MlflowClient().get_run(run_id).data.params
    changed = []
    for key in SPLIT_KEYS:
        if key not in params:  # a run from before the key existed: its default
            continue
        logged = _param_value(params[key])
        if logged != OmegaConf.select(cfg, key):
            changed.append(f"{key}={OmegaConf.select(cfg, key)} -> {logged}")
            OmegaConf.update(cfg, key, logged, force_add=True)
    if changed:
        validate_training(cfg)  # the run's values, checked as the command's own are
        log.warning("data: the validation images are those run %s held out, so its split settings are used: %s",
                    run_id, ", ".join(changed))


def _param_value(text: str):
    """A logged param back as the value it was: None, an int, a float (1e-05 too, which YAML 1.1
    reads as text), else the text."""
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# -- the evaluation itself ------------------------------------------------------------------
@dataclass
class Evaluation:
    compressed: CutTable
    uncompressed: CutTable
    scenario: Scenario  # the first realisation (times and positions are those of every realisation)
    results: dict[float, dict]  # bandwidth_hz -> method -> [MethodResult per realisation]
    deployed: tuple[Deployed, Deployed] | None = None  # (pruned, dense) as deployed, when measured


def evaluate_models(cfg: DictConfig, dense: SplitCNN, pruned: SplitCNN, bandwidths, methods=METHODS,
                    realisations: int | None = None, deployed: tuple[Deployed, Deployed] | None = None,
                    data: MnistSplits | None = None) -> Evaluation:
    """Every method on the trajectory. ``deployed`` (pruned, dense): the models as deployed; one not
    given (None) when the settings are not the paper's representation is deployed and measured on
    ``data``'s validation images (loaded when not given), which then also go along the route. The
    dense model only runs PSNC: without it in ``methods`` it is not deployed. A dense model whose
    training zeroed parameters (proximal L1, gradual pruning) is costed with every parameter stored,
    as deployed too (int8 and fp16 round the stand-ins for its zeros back to 0; ``tables``)."""
    trained_sparse = count_nonzero(dense) < count_parameters(dense)
    deployed = list(deployed or (None, None))
    if not paper_representation(cfg):
        for i, (model, needed) in enumerate(((pruned, True), (dense, "psnc" in methods))):
            if deployed[i] is None and needed:
                from .stages import load_data
                data = data or load_data(cfg)
                deployed[i] = deployed_model(cfg, model, data, "val")
    deployed = None if deployed == [None, None] else tuple(deployed)
    compressed, uncompressed = (tables(cfg, pruned, deployed and deployed[0]),
                                tables(cfg, dense, deployed and deployed[1], every_parameter=trained_sparse))
    scenario, results = simulate(
        compressed, uncompressed, route_from_config(cfg.trajectory),
        [link_from_config(cfg.channel, bw) for bw in bandwidths], timing_from_config(cfg),
        realisations or cfg.evaluation.realisations, cfg.selection.candidates,
        causal=cfg.channel.decision == "causal", methods=methods)
    return Evaluation(compressed, uncompressed, scenario, results, deployed)


PAPER_REPRESENTATION = {"energy": {"precision": "fp32"}, "channel": {"activation_bits": 32, "activation_coding": "dense"}}


def energy_terms(cfg: DictConfig, dense: SplitCNN, pruned: SplitCNN, data: MnistSplits | None = None) -> dict[str, float]:
    """The energy terms of eq. (8) at the default bandwidth, each averaged over
    ``evaluation.objective_realisations`` fading realisations (the same for every trial):
    trajectory-average PS energy of the compressed model as deployed and, as the normaliser, PSNC's
    of the uncompressed model under the paper's representation (fp32 arithmetic, 32-bit dense
    payloads) whatever the trial's own. A fixed yardstick: were PSNC deployed like PS, an int8 client
    would make both cheaper and the ratio would hide it, and trials searching the representation
    (experiment=beyond) would not compare on one scale. Beyond the paper's representation the
    compressed model is deployed on ``data``'s validation images (never the test set), which also
    go along the route, and ``route_accuracy_ps`` is the share of them PS classifies correctly at
    the cuts it chose (the accuracy of what is deployed)."""
    bw = float(cfg.channel.bandwidth_hz)
    n = cfg.evaluation.objective_realisations

    def mean_energy(results) -> float:
        return float(np.mean([r.means()["energy_total_j"] for r in results]))

    if paper_representation(cfg):
        results = evaluate_models(cfg, dense, pruned, [bw], methods=("ps", "psnc"), realisations=n).results[bw]
        return {"energy_total_j_ps": mean_energy(results["ps"]), "energy_total_j_psnc": mean_energy(results["psnc"])}
    ev = evaluate_models(cfg, dense, pruned, [bw], methods=("ps",), realisations=n, data=data)
    paper = OmegaConf.merge(cfg, PAPER_REPRESENTATION)
    reference = evaluate_models(paper, dense, pruned, [bw], methods=("psnc",), realisations=n).results[bw]
    ps = ev.results[bw]["ps"]
    return {"energy_total_j_ps": mean_energy(ps), "energy_total_j_psnc": mean_energy(reference["psnc"]),
            "route_accuracy_ps": route_accuracy(route_correct(cfg, ev.deployed[0]), ps)[0]}


def location_rows(cfg: DictConfig, ev: Evaluation, carbon: float) -> list[dict]:
    locs = dict(cfg.trajectory.locations)
    idx = nearest_location(ev.scenario.positions_m, np.asarray(list(locs.values()), float),
                           cfg.trajectory.location_radius_m)
    rows = []
    for bw, results in ev.results.items():
        for k, name in enumerate(locs):
            mask = idx == k
            if mask.any():
                for row in table_rows(bw, results, carbon, mask):
                    rows.append({"location": name, "inferences": int(mask.sum()), **row})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows as a markdown table; a ``<key>_ci95`` column is shown as ``± ...`` beside ``<key>``."""
    head = [k for k in rows[0] if not (k.endswith("_ci95") and k[:-5] in rows[0])]

    def cell(r: dict, k: str) -> str:
        v = r[k]
        text = f"{v:.3g}" if isinstance(v, float) else str(v)
        ci = r.get(f"{k}_ci95")
        return text if ci is None or not np.isfinite(ci) else f"{text} ± {ci:.2g}"

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r, k) for k in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig
        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # not under @hydra.main (tests, notebooks)
        return Path(os.getcwd())


DEFAULT_METRIC_KEYS = ("energy_total_j", "co2_kg", "deadline_miss_rate", "duty_cycle")
METRIC_KEYS = ("energy_total_j", "energy_processing_j", "energy_transmission_j", *DEFAULT_METRIC_KEYS[1:])


def bandwidth_label(hz: float) -> str:
    """15e3 -> "15khz", 5e6 -> "5mhz": the bandwidth as it appears in a metric name."""
    for unit, scale in (("ghz", 1e9), ("mhz", 1e6), ("khz", 1e3)):
        if hz >= scale:
            return f"{hz / scale:g}{unit}".replace("+", "")  # 1e+21ghz: MLflow refuses '+' in a name
    return f"{hz:g}hz"


def method_rows(cfg: DictConfig, ev: Evaluation, bandwidth_hz: float, carbon: float) -> list[dict]:
    """table_rows at one bandwidth plus, when the models were deployed and measured, each method's
    ``route_accuracy``: the share of the route's images it classifies correctly at the cuts it chose
    (PSNC with the dense model, every other method with the pruned one)."""
    results = ev.results[bandwidth_hz]
    rows = table_rows(bandwidth_hz, results, carbon)
    if ev.deployed is not None:
        correct = {i: route_correct(cfg, dep) for i, dep in enumerate(ev.deployed) if dep is not None}
        for row in rows:
            model = 1 if row["method"] == "psnc" else 0  # PSNC runs the dense model (ev.deployed[1])
            row["route_accuracy"], row["route_accuracy_ci95"] = route_accuracy(correct[model], results[row["method"]])
    return rows


def bandwidth_metrics(cfg: DictConfig, ev: Evaluation, carbon: float, default_hz: float) -> dict[str, float]:
    """Every method's trajectory averages at every bandwidth evaluated, named
    ``<key>_<method>_<bandwidth>`` (``energy_total_j_ps_15mhz``), plus the default bandwidth's
    under their unsuffixed names (``energy_total_j_ps``: the sweep's energy term)."""
    metrics = {}
    for bw in ev.results:
        for row in method_rows(cfg, ev, bw, carbon):
            keys = [k for k in (*METRIC_KEYS, "route_accuracy") if k in row]
            metrics.update({f"{k}_{row['method']}_{bandwidth_label(bw)}": row[k] for k in keys})
            if bw == default_hz:
                metrics.update({f"{k}_{row['method']}": row[k] for k in (*DEFAULT_METRIC_KEYS, "route_accuracy")
                                if k in row})
    return metrics


def cut_accuracy_rows(cfg: DictConfig, ev: Evaluation) -> list[dict]:
    """cut_accuracy.csv: per cut, the split model as deployed (client at energy.precision ->
    quantise/encode -> decode/dequantise -> fp32 server): test and validation accuracy of the pruned
    model (PS) and the dense one (PSNC), the validation drop from the unquantised model (cut input)
    behind selection.max_accuracy_drop, and the payload over the route's images (the representation's
    bits, without the cut index; coded_*: the share of images sent in each sparse format)."""
    pruned, dense = ev.deployed
    images = route_images(n_inferences(cfg), len(pruned.route.correct), cfg.evaluation.image_seed)
    rows = []
    for c, name in enumerate(pruned.route.names):
        body = pruned.route.body_bits[images, c]
        coding = pruned.route.coding[images, c]
        row = {"cut": name, f"{pruned.route_split}_accuracy": float(pruned.route.accuracy[c]),
               "val_accuracy": float(pruned.val.accuracy[c]),
               "val_accuracy_drop": float(pruned.val.accuracy[0] - pruned.val.accuracy[c]),
               "within_max_accuracy_drop": bool(ev.compressed.accurate[c]),
               f"{dense.route_split}_accuracy_dense": float(dense.route.accuracy[c]),
               "val_accuracy_dense": float(dense.val.accuracy[c]),
               "within_max_accuracy_drop_dense": bool(ev.uncompressed.accurate[c]),
               "elements": int(pruned.route.elements[c]),
               "nonzero_fraction": float(pruned.route.nonzero[images, c].mean() / max(1, pruned.route.elements[c])),
               "payload_bits_mean": float(body.mean()), "payload_bits_min": int(body.min()),
               "payload_bits_max": int(body.max())}
        sparse = cfg.channel.activation_coding == "sparse" and c > 0  # the raw image is always dense
        for k, fmt in enumerate(CODING_FORMATS):
            row[f"coded_{fmt}"] = float(np.mean(coding == k)) if sparse else None
        rows.append(row)
    return rows


def run_evaluate(cfg: DictConfig) -> dict[str, float]:
    validate_evaluation(cfg)
    tracking.check_configured_server(cfg)
    validate_training(cfg)
    models = load_models(cfg)
    if models.train_run_id:
        held_out_as_trained(cfg, models.train_run_id)
    # before the work: a deleted experiment is refused now, not after it
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location,
                                        cfg.tracking.sqlite_wal)
    from .stages import load_data
    data = load_data(cfg)
    # accuracy measured, never assumed: both models as deployed, on the test images along the route
    deployed = (deployed_model(cfg, models.pruned, data), deployed_model(cfg, models.dense, data))
    bandwidths = list(dict.fromkeys([float(b) for b in cfg.channel.bandwidths_hz] + [float(cfg.channel.bandwidth_hz)]))
    ev = evaluate_models(cfg, models.dense, models.pruned, bandwidths, deployed=deployed)
    carbon = carbon_index(cfg)
    setting = {"scenario": cfg.scenario, "candidates": cfg.selection.candidates}
    table = [{**row, **setting} for bw in cfg.channel.bandwidths_hz for row in method_rows(cfg, ev, float(bw), carbon)]
    metrics = bandwidth_metrics(cfg, ev, carbon, float(cfg.channel.bandwidth_hz))
    accuracy = cut_accuracy_rows(cfg, ev)
    for row in accuracy:
        metrics[f"cut_test_accuracy_{row['cut']}"] = row["test_accuracy"]
        metrics[f"cut_val_accuracy_{row['cut']}"] = row["val_accuracy"]
    metrics["test_accuracy_unquantised"] = accuracy[0]["test_accuracy"]  # cut input: the fp32 model on the server
    cells = versus_paper(table)
    totals = [c["ours_over_paper"] for c in cells if c["quantity"] == "energy_total_j"]
    if totals:  # how far from the paper's Table III in one figure: mean |log10(ours / paper)| of its E cells
        metrics["table3_mean_abs_log10_vs_paper"] = float(np.mean(np.abs(np.log10(totals))))
    metrics["inferences"] = len(ev.scenario.times_s)
    metrics["realisations"] = int(cfg.evaluation.realisations)
    # against every parameter: the paper's trained model has no exact zero, so its non-zeros are all of
    # them, and a model trained sparse (proximal L1, gradual pruning) gets train.py's C_r, not a ratio
    # to its own zeros (pipeline.stages.c_r_reference)
    metrics["compression_ratio"] = compression_ratio(count_parameters(models.dense), count_nonzero(models.pruned))

    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    files = _write_tables(out, table, location_rows(cfg, ev, carbon), ev)
    (out / "cut_accuracy.csv").write_text(tracking.rows_to_csv(accuracy))
    files.append(out / "cut_accuracy.csv")
    files.extend(_sensitivity(cfg, out, ev, carbon))
    files.append(_fig3(out, ev))
    files.append(_fig4(cfg, out, ev))
    files.extend(_fig5(cfg, out, models, data))

    tags = {"stage": "evaluate", "ecosplit.train_run_id": models.train_run_id or "",
            **({"ecosplit.model_uri": cfg.model_uri} if cfg.model_uri else {})}
    with tracking.run(experiment_id, cfg.tracking.run_name or "evaluate", tags, parent_run_id=models.train_run_id) as active:
        tracking.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
        tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracking.log_metrics(metrics)
        for f in files:
            tracking.log_file(f)
        metrics["run_id"] = active.info.run_id
    for row in table:
        log.info("W=%-8g %-8s E=%.3e J  E_p=%.3e J  E_tr=%.3e J  misses=%.1f%%  duty=%.2f  CO2=%.3e kg",
                 row["bandwidth_hz"], row["method"], row["energy_total_j"], row["energy_processing_j"],
                 row["energy_transmission_j"], 100 * row["deadline_miss_rate"], row["duty_cycle"], row["co2_kg"])
    log.info("outputs in %s (scenario=%s, selection.candidates=%s, %d realisations)", out, cfg.scenario,
             cfg.selection.candidates, cfg.evaluation.realisations)
    return metrics


def _write_tables(out: Path, table, loc_rows, ev: Evaluation) -> list[Path]:
    files = []
    cut_shares = cut_share_rows(ev.compressed.names, ev.results)
    for name, rows in (("table3", table), ("locations", loc_rows), ("layers_energy", _layer_rows(ev)),
                       ("cut_shares", cut_shares)):
        (out / f"{name}.csv").write_text(tracking.rows_to_csv(rows))
        files.append(out / f"{name}.csv")
    (out / "table3.md").write_text(markdown_table(table))
    files.append(out / "table3.md")
    cells = versus_paper(table)
    if cells:
        (out / "table3_vs_paper.csv").write_text(tracking.rows_to_csv(cells))
        (out / "table3_vs_paper.md").write_text(markdown_table(cells))
        files += [out / "table3_vs_paper.csv", out / "table3_vs_paper.md"]
    return files


def _layer_rows(ev: Evaluation) -> list[dict]:
    """Per layer, dense and pruned, each costed as part of the whole client model: the rows of
    processing_j_<model> sum to that model's full-pass E_p."""
    rows = []
    for i, name in enumerate(ev.compressed.names[1:]):
        row = {"layer": name, "processing_j_dense": None, "processing_j_pruned": None}  # first columns
        for key, values in ev.uncompressed.layers.items():
            row[f"{key}_dense"] = values[i].item() if hasattr(values[i], "item") else values[i]
            pruned = ev.compressed.layers[key][i]
            row[f"{key}_pruned"] = pruned.item() if hasattr(pruned, "item") else pruned
        row["out_elements_dense"] = int(ev.uncompressed.out_elements[i + 1])
        row["out_elements_pruned"] = int(ev.compressed.out_elements[i + 1])
        dense_j = float(ev.uncompressed.layers["processing_j"][i])
        row["reduction"] = 1 - float(ev.compressed.layers["processing_j"][i]) / dense_j if dense_j else 0.0
        rows.append(row)
    return rows


def _sensitivity(cfg: DictConfig, out: Path, ev: Evaluation, carbon: float) -> list[Path]:
    """Table III's energies again with the path-loss exponent or the reference distance changed
    one at a time (``evaluation.sensitivity``), on the same realisations and cut tables."""
    from .plots import sensitivity_plot
    sens = cfg.evaluation.sensitivity
    base = route_from_config(cfg.trajectory)
    links = [link_from_config(cfg.channel, bw) for bw in cfg.channel.bandwidths_hz]
    rows = []
    for field, values in (("path_loss_exponent", sens.path_loss_exponents),
                          ("reference_distance_m", sens.reference_distances_m)):
        for value in values or []:
            _, results = simulate(ev.compressed, ev.uncompressed, replace(base, **{field: float(value)}), links,
                                  timing_from_config(cfg), cfg.evaluation.realisations, cfg.selection.candidates,
                                  causal=cfg.channel.decision == "causal")
            for bw, by_method in results.items():
                rows += [{"parameter": field, "value": float(value), **row} for row in table_rows(bw, by_method, carbon)]
    if not rows:
        return []
    (out / "sensitivity.csv").write_text(tracking.rows_to_csv(rows))
    return [out / "sensitivity.csv", sensitivity_plot(rows, out / "sensitivity.png")]


def _fig3(out: Path, ev: Evaluation) -> Path:
    from .plots import fig3_layers
    return fig3_layers(ev.compressed.names[1:], ev.uncompressed.layers["processing_j"], ev.compressed.layers["processing_j"],
                       ev.uncompressed.out_elements[1:], ev.compressed.out_elements[1:], out / "fig3_layers.png")


def _fig4(cfg: DictConfig, out: Path, ev: Evaluation) -> Path:
    from .plots import fig4_trajectory
    bw = float(cfg.channel.bandwidths_hz[-1])
    locs = {k: tuple(v) for k, v in cfg.trajectory.locations.items()}
    idx = nearest_location(ev.scenario.positions_m, np.asarray(list(locs.values()), float), cfg.trajectory.location_radius_m)
    # location averages over every realisation; the route's colours show the first one's choices
    per_loc = {m: {name: {k2: float(np.mean([r.means(idx == k)[k2] for r in runs])) for k2 in STAT_KEYS}
                   for k, name in enumerate(locs) if (idx == k).any()}
               for m, runs in ev.results[bw].items()}
    if missed := [name for k, name in enumerate(locs) if not (idx == k).any()]:
        log.warning("trajectory.locations %s: the route passes none within trajectory.location_radius_m=%g m; "
                    "left out of fig. 4 and locations.csv", ", ".join(missed), cfg.trajectory.location_radius_m)
    return fig4_trajectory(ev.scenario.positions_m, cfg.trajectory.server_m, locs, ev.results[bw]["ps"][0].choice,
                           ev.compressed.names, ev.scenario.times_s, per_loc, bw, out / "fig4_trajectory.png")


def _fig5(cfg: DictConfig, out: Path, models: Models, data: MnistSplits) -> list[Path]:
    """Fig. 5 from one trained model pruned at each global threshold (no per-layer thresholds,
    no fine-tuning: the paper's procedure, and cheap)."""
    from .plots import fig5_compression
    from .training import evaluate
    dense_nnz = count_parameters(models.dense)  # as compression_ratio in report()
    rows = []
    for threshold in cfg.fig5_thresholds:
        pruned = prune(models.dense, float(threshold))
        rows.append({
            "threshold": float(threshold),
            "compression_ratio": compression_ratio(dense_nnz, count_nonzero(pruned)),
            "test_accuracy": evaluate(pruned, data.test).accuracy,
            "energy_total_j_ps": energy_terms(cfg, models.dense, pruned, data)["energy_total_j_ps"],
        })
    (out / "fig5.csv").write_text(tracking.rows_to_csv(rows))
    columns = ([r[k] for r in rows] for k in ("compression_ratio", "energy_total_j_ps", "test_accuracy"))
    return [out / "fig5.csv", fig5_compression(*columns, out / "fig5_compression.png")]
