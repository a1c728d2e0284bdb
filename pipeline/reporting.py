"""``evaluate.py``: energy of every method over the trajectory, Table III, Figs. 3-5, in MLflow.

Edges only: loads models and data, calls the numpy math (evaluation, simulation), writes files
to the Hydra output dir and records them in one MLflow run linked to the training run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import tracking
from .config import ConfigError, check_range, validate_training
from .evaluation import METHODS, CutTable, EnergyConstants, cut_table, run_methods, table_rows
from .model import SplitCNN, count_nonzero, load_checkpoint
from .pruning import compression_ratio, prune
from .simulation import Link, Route, Scenario, build_scenario
from .trajectory import nearest_location

log = logging.getLogger(__name__)


# -- configuration -------------------------------------------------------------------------
def _one_of(cfg, key: str, options) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in options:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, options))} (got {value!r})")


def validate_evaluation(cfg: DictConfig) -> None:
    """Every energy, channel, trajectory and CO2 setting, before any work or recording."""
    e, c, t = cfg.energy, cfg.channel, cfg.trajectory
    _one_of(cfg, "energy.precision", list(e.operations_pj))
    _one_of(cfg, "energy.weight_memory", list(e.memory_pj_per_64bit))
    if e.activation_memory is not None:
        _one_of(cfg, "energy.activation_memory", list(e.memory_pj_per_64bit))
    for key in ("channel.power_w", "channel.noise_psd_w_per_hz", "channel.bandwidth_hz"):
        check_range(cfg, key, 0, low_open=True)
    for i, _ in enumerate(c.bandwidths_hz):
        check_range(cfg, f"channel.bandwidths_hz.{i}", 0, low_open=True)
    check_range(cfg, "channel.bits_per_element", 1, integer=True)
    _one_of(cfg, "channel.decision", ["oracle", "causal"])
    for key in ("trajectory.speed_mps", "trajectory.inference_rate_hz", "trajectory.coherence_time_s",
                "trajectory.reference_distance_m", "trajectory.min_distance_m", "trajectory.location_radius_m",
                "trajectory.duration_s"):
        check_range(cfg, key, 0, low_open=True)
    check_range(cfg, "trajectory.path_loss_exponent", 0)
    if len(t.waypoints_m) < 2:
        raise ConfigError(f"trajectory.waypoints_m needs at least 2 points (got {len(t.waypoints_m)})")
    _one_of(cfg, "co2.region", list(cfg.co2.carbon_kg_per_kwh))
    check_range(cfg, f"co2.carbon_kg_per_kwh.{cfg.co2.region}", 0)
    for i, _ in enumerate(cfg.get("fig5_thresholds") or []):
        check_range(cfg, f"fig5_thresholds.{i}", 0)


def route_from_config(t: DictConfig) -> Route:
    return Route(
        waypoints_m=np.asarray(t.waypoints_m, float), server_m=np.asarray(t.server_m, float),
        speed_mps=t.speed_mps, inference_rate_hz=t.inference_rate_hz, coherence_time_s=t.coherence_time_s,
        path_loss_exponent=t.path_loss_exponent, reference_distance_m=t.reference_distance_m,
        min_distance_m=t.min_distance_m, seed=t.seed, duration_s=t.duration_s,
    )


def link_from_config(c: DictConfig, bandwidth_hz: float) -> Link:
    return Link(float(bandwidth_hz), c.power_w, c.noise_psd_w_per_hz)


def carbon_index(cfg: DictConfig) -> float:
    return float(cfg.co2.carbon_kg_per_kwh[cfg.co2.region])


# -- models --------------------------------------------------------------------------------
@dataclass
class Models:
    dense: SplitCNN
    pruned: SplitCNN
    train_run_id: str | None


def load_models(cfg: DictConfig) -> Models:
    """From ``train_run_id`` (its checkpoints) or ``checkpoint`` (dense file, or a folder with both)."""
    if cfg.train_run_id:
        if not tracking.store_exists(cfg.tracking.uri):  # reading it would create an empty store
            raise ConfigError(f"train_run_id={cfg.train_run_id}: tracking.uri={cfg.tracking.uri} does not exist "
                              f"(set tracking.uri to the store train.py recorded the run in)")
        tracking.use(cfg.tracking.uri)  # the run is read from the configured store, not MLflow's default
        try:
            folder = tracking.download(cfg.train_run_id, "checkpoints")
        except Exception as exc:  # MLflow raises several types for a bad id
            raise ConfigError(f"train_run_id={cfg.train_run_id}: no checkpoints found in "
                              f"{tracking.mask_secrets(cfg.tracking.uri)} "
                              f"({type(exc).__name__})") from None
        return Models(load_checkpoint(folder / "dense.pt"), load_checkpoint(folder / "pruned.pt"), cfg.train_run_id)
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if path.is_dir() and (path / "dense.pt").exists() and (path / "pruned.pt").exists():
            return Models(load_checkpoint(path / "dense.pt"), load_checkpoint(path / "pruned.pt"), None)
        if path.is_file():
            from .stages import load_data, prune_model
            dense = load_checkpoint(path)
            return Models(dense, prune_model(cfg, dense, load_data(cfg)), None)
        raise ConfigError(f"checkpoint={path}: not a checkpoint file nor a folder with dense.pt and pruned.pt")
    raise ConfigError("give the model to evaluate: train_run_id=<MLflow run id of train.py> or checkpoint=<path>")


# -- the evaluation itself ------------------------------------------------------------------
@dataclass
class Evaluation:
    compressed: CutTable
    uncompressed: CutTable
    scenario: Scenario
    results: dict[float, dict]  # bandwidth_hz -> method -> MethodResult


def evaluate_models(cfg: DictConfig, dense: SplitCNN, pruned: SplitCNN, bandwidths, methods=METHODS) -> Evaluation:
    constants = EnergyConstants.from_config(cfg.energy)
    compressed = cut_table(pruned, constants, cfg.channel.bits_per_element)
    uncompressed = cut_table(dense, constants, cfg.channel.bits_per_element)
    scenario = build_scenario(route_from_config(cfg.trajectory))
    results = {}
    for bw in bandwidths:
        scenario, results[bw] = run_methods(compressed, uncompressed, scenario, link_from_config(cfg.channel, bw),
                                            causal=cfg.channel.decision == "causal", methods=methods)
    return Evaluation(compressed, uncompressed, scenario, results)


def energy_terms(cfg: DictConfig, dense: SplitCNN, pruned: SplitCNN) -> dict[str, float]:
    """The energy terms of eq. (8) at the default bandwidth: trajectory-average PS energy of the
    compressed model and of the uncompressed one (PSNC, the normaliser)."""
    bw = float(cfg.channel.bandwidth_hz)
    results = evaluate_models(cfg, dense, pruned, [bw], methods=("ps", "psnc")).results[bw]
    return {"energy_total_j_ps": results["ps"].means()["energy_total_j"],
            "energy_total_j_psnc": results["psnc"].means()["energy_total_j"]}


def ps_energy_j(cfg: DictConfig, dense: SplitCNN, pruned: SplitCNN) -> float:
    """Trajectory-average PS energy at the default bandwidth: the energy term of eq. (8)."""
    ev = evaluate_models(cfg, dense, pruned, [cfg.channel.bandwidth_hz], methods=("ps",))
    return ev.results[cfg.channel.bandwidth_hz]["ps"].means()["energy_total_j"]


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
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines) + "\n"


def output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig
        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # not under @hydra.main (tests, notebooks)
        return Path(os.getcwd())


def run_evaluate(cfg: DictConfig) -> dict[str, float]:
    validate_evaluation(cfg)
    validate_training(cfg)
    models = load_models(cfg)
    bandwidths = list(dict.fromkeys([float(b) for b in cfg.channel.bandwidths_hz] + [float(cfg.channel.bandwidth_hz)]))
    ev = evaluate_models(cfg, models.dense, models.pruned, bandwidths)
    carbon = carbon_index(cfg)
    table = [row for bw in cfg.channel.bandwidths_hz for row in table_rows(float(bw), ev.results[float(bw)], carbon)]
    default = ev.results[float(cfg.channel.bandwidth_hz)]
    metrics = {}
    for row in table_rows(float(cfg.channel.bandwidth_hz), default, carbon):
        metrics[f"energy_total_j_{row['method']}"] = row["energy_total_j"]
        metrics[f"co2_kg_{row['method']}"] = row["co2_kg"]
    metrics["inferences"] = len(ev.scenario.times_s)
    metrics["compression_ratio"] = compression_ratio(count_nonzero(models.dense), count_nonzero(models.pruned))

    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    files = _write_tables(out, table, location_rows(cfg, ev, carbon), ev)
    files.append(_fig3(out, ev))
    files.append(_fig4(cfg, out, ev))
    files.extend(_fig5(cfg, out, models))

    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    with tracking.run(experiment_id, cfg.tracking.run_name or "evaluate", {"stage": "evaluate",
                      "ecosplit.train_run_id": models.train_run_id or ""}, parent_run_id=models.train_run_id) as active:
        tracking.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
        tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracking.log_metrics(metrics)
        for f in files:
            tracking.log_file(f)
        metrics["run_id"] = active.info.run_id
    for row in table:
        log.info("W=%-8g %-8s E=%.3e J  E_p=%.3e J  E_tr=%.3e J  CO2=%.3e kg", row["bandwidth_hz"], row["method"],
                 row["energy_total_j"], row["energy_processing_j"], row["energy_transmission_j"], row["co2_kg"])
    log.info("outputs in %s", out)
    return metrics


def _write_tables(out: Path, table, loc_rows, ev: Evaluation) -> list[Path]:
    files = []
    for name, rows in (("table3", table), ("locations", loc_rows), ("layers_energy", _layer_rows(ev))):
        (out / f"{name}.csv").write_text(tracking.rows_to_csv(rows))
        files.append(out / f"{name}.csv")
    (out / "table3.md").write_text(markdown_table(table))
    files.append(out / "table3.md")
    return files


def _layer_rows(ev: Evaluation) -> list[dict]:
    rows = []
    for i, name in enumerate(ev.compressed.names[1:]):
        rows.append({
            "layer": name,
            "processing_j_dense": float(ev.uncompressed.layers["processing_j"][i]),
            "processing_j_pruned": float(ev.compressed.layers["processing_j"][i]),
            "out_elements_dense": int(ev.uncompressed.out_elements[i + 1]),
            "out_elements_pruned": int(ev.compressed.out_elements[i + 1]),
            "reduction": 1 - float(ev.compressed.layers["processing_j"][i]) / float(ev.uncompressed.layers["processing_j"][i]),
        })
    return rows


def _fig3(out: Path, ev: Evaluation) -> Path:
    from .plots import fig3_layers
    return fig3_layers(ev.compressed.names[1:], ev.uncompressed.layers["processing_j"], ev.compressed.layers["processing_j"],
                       ev.uncompressed.out_elements[1:], ev.compressed.out_elements[1:], out / "fig3_layers.png")


def _fig4(cfg: DictConfig, out: Path, ev: Evaluation) -> Path:
    from .plots import fig4_trajectory
    bw = float(cfg.channel.bandwidths_hz[-1])
    locs = {k: tuple(v) for k, v in cfg.trajectory.locations.items()}
    idx = nearest_location(ev.scenario.positions_m, np.asarray(list(locs.values()), float), cfg.trajectory.location_radius_m)
    per_loc = {m: {name: r.means(idx == k) for k, name in enumerate(locs) if (idx == k).any()}
               for m, r in ev.results[bw].items()}
    return fig4_trajectory(ev.scenario.positions_m, cfg.trajectory.server_m, locs, ev.results[bw]["ps"].choice,
                           ev.compressed.names, ev.scenario.times_s, per_loc, bw, out / "fig4_trajectory.png")


def _fig5(cfg: DictConfig, out: Path, models: Models) -> list[Path]:
    """Fig. 5 from one trained model pruned at each global threshold (no per-layer thresholds,
    no fine-tuning: the paper's procedure, and cheap)."""
    from .plots import fig5_compression
    from .stages import load_data
    from .training import evaluate
    data = load_data(cfg)
    dense_nnz = count_nonzero(models.dense)
    rows = []
    for threshold in cfg.fig5_thresholds:
        pruned = prune(models.dense, float(threshold))
        rows.append({
            "threshold": float(threshold),
            "compression_ratio": compression_ratio(dense_nnz, count_nonzero(pruned)),
            "test_accuracy": evaluate(pruned, data.test).accuracy,
            "energy_total_j_ps": ps_energy_j(cfg, models.dense, pruned),
        })
    (out / "fig5.csv").write_text(tracking.rows_to_csv(rows))
    columns = ([r[k] for r in rows] for k in ("compression_ratio", "energy_total_j_ps", "test_accuracy"))
    return [out / "fig5.csv", fig5_compression(*columns, out / "fig5_compression.png")]
