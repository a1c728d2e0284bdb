"""Print PS's trajectory-average energy and accuracy under each representation and precision (issue 11).

    python docs/representation_table.py train_run_id=<id> [evaluate.py overrides shared by every row]

Rows: the paper's representation (fp32, 32-bit dense payloads), then 8-bit activations, 8-bit sparse,
4-bit sparse, int8 client, fp16 client, int8 + 8-bit sparse. Each row deploys both models (calibrated
on the validation images), measures every cut on the test set and runs PS and PSNC over the
trajectory at 5 and 15 MHz as evaluate.py does (same realisations, same route images); columns are
means over the fading realisations in uJ, PS's route accuracy (the share of the route's test images
classified correctly at the cuts PS chose) and the unquantised model's test accuracy. Skips Fig. 5,
the sensitivity runs and MLflow: evaluate.py with the same overrides gives every file of one row.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from pipeline.config import carbon_index, validate_evaluation  # noqa: E402
from pipeline.reporting import deployed_model, evaluate_models, load_models, method_rows  # noqa: E402
from pipeline.stages import load_data  # noqa: E402

ROWS = {
    "paper (fp32, 32-bit dense)": [],
    "8-bit activations": ["channel.activation_bits=8"],
    "8-bit sparse": ["channel.activation_bits=8", "channel.activation_coding=sparse"],
    "4-bit sparse": ["channel.activation_bits=4", "channel.activation_coding=sparse"],
    "int8 client": ["energy.precision=int8"],
    "fp16 client": ["energy.precision=fp16"],
    "int8 + 8-bit sparse": ["energy.precision=int8", "channel.activation_bits=8", "channel.activation_coding=sparse"],
}
BANDWIDTHS_HZ = (5e6, 15e6)


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        configs = {name: compose("evaluate", [*overrides, *extra]) for name, extra in ROWS.items()}
    first = next(iter(configs.values()))
    models, data = load_models(first), load_data(first)
    print("| setting | W | PS E (uJ) | PS E_p (uJ) | PS E_tr (uJ) | PS misses | PS route accuracy | "
          "unquantised test accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, cfg in configs.items():
        validate_evaluation(cfg)
        deployed = (deployed_model(cfg, models.pruned, data), deployed_model(cfg, models.dense, data))
        ev = evaluate_models(cfg, models.dense, models.pruned, list(BANDWIDTHS_HZ), methods=("ps", "psnc"),
                             deployed=deployed)
        for bw in BANDWIDTHS_HZ:
            ps = next(r for r in method_rows(cfg, ev, bw, carbon_index(cfg)) if r["method"] == "ps")
            cells = [f"{ps[k] * 1e6:.3g} ± {ps[f'{k}_ci95'] * 1e6:.1g}" for k in
                     ("energy_total_j", "energy_processing_j", "energy_transmission_j")]
            print(f"| {name} | {bw / 1e6:g} MHz | {' | '.join(cells)} | {ps['deadline_miss_rate']:.1%} | "
                  f"{ps['route_accuracy']:.2%} | {deployed[0].route.accuracy[0]:.2%} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
