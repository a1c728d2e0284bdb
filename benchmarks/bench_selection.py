"""Benchmark the vectorised per-inference cut selection against a plain Python reference loop.

Synthetic but paper-shaped problem: the 14 cut points of the paper CNN (Sec. IV) with a pruned
model's processing energies (eqs. 1, 2, 6), a client walking a route with path loss and Rayleigh
block fading, and the two bandwidths of Table III. For each bandwidth it times

  (a) the vectorised path: rate_bps -> cumulative_bits -> transmission_time_s -> total_energy_j
      -> select_min_energy, over all inferences;
  (b) a reference loop that, for each inference and cut, walks the fading blocks one by one,

checks they agree (same choices, taus to rtol 1e-9) on the inferences the loop ran, and prints
inferences/s of each.

    python benchmarks/bench_selection.py [--inferences 100000] [--loop-inferences 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from pipeline.channel import cumulative_bits, payload_bits, rate_bps, transmission_energy_j, transmission_time_s  # noqa: E402
from pipeline.energy import (  # noqa: E402
    FP32_ADD_J,
    FP32_MUL_J,
    LayerShape,
    cut_names,
    cut_out_elements,
    element_access_energy_j,
    processing_energy_per_cut_j,
)
from pipeline.selection import select_min_energy, total_energy_j  # noqa: E402
from pipeline.trajectory import block_gains, inference_times_s, route_length_m  # noqa: E402

POWER_W = 1e-3  # Sec. IV
NOISE_PSD_W_PER_HZ = 1e-9  # Sec. IV
BANDWIDTHS_HZ = (15e3, 15e6)  # Table III
COHERENCE_TIME_S = 0.02  # walking speed at 2.4 GHz: Doppler ~11 Hz
INFERENCE_RATE_HZ = 10.0
SEED = 2021


def paper_cnn(keep: float) -> list[LayerShape]:
    """The Sec. IV CNN (5x5 convs 16/32/48/64 + 2x2 pools, fc 512/256/128/64/10) at a kept-weight fraction."""

    def conv(name, c_in, c_out, hw):
        return LayerShape(name, "conv", c_in * hw * hw, c_out * hw * hw, hw * hw,
                          round(keep * c_in * c_out * 25), c_out, relu=True)

    def pool(name, c, hw_in, hw_out):
        return LayerShape(name, "pool", c * hw_in * hw_in, c * hw_out * hw_out, hw_out * hw_out, 0, 0, relu=False, pool_window=4)

    def fc(name, n_in, n_out, relu=True):
        return LayerShape(name, "fc", n_in, n_out, 1, round(keep * n_in * n_out), n_out, relu=relu)

    return [
        conv("conv1", 1, 16, 28), pool("pool1", 16, 28, 14),
        conv("conv2", 16, 32, 14), pool("pool2", 32, 14, 7),
        conv("conv3", 32, 48, 7), pool("pool3", 48, 7, 4),
        conv("conv4", 48, 64, 4), pool("pool4", 64, 4, 2),
        fc("fc1", 256, 512), fc("fc2", 512, 256), fc("fc3", 256, 128), fc("fc4", 128, 64),
        fc("fc5", 64, 10, relu=False),
    ]


def lawnmower_route_m(width_m=600.0, height_m=600.0, spacing_m=50.0) -> np.ndarray:
    xs = np.arange(0.0, width_m + spacing_m / 2, spacing_m)
    points = []
    for i, x in enumerate(xs):
        ys = (0.0, height_m) if i % 2 == 0 else (height_m, 0.0)
        points += [(x, ys[0]), (x, ys[1])]
    return np.array(points)


def reference_choice(rates, block_s, start_s, bits, processing_j, power_w):
    """Walk the fading blocks one at a time: (cut, tau per cut) for one inference."""
    taus = []
    for b in bits:
        remaining, tau, k = float(b), 0.0, int(start_s // block_s)
        t = start_s
        while remaining > 0:
            if k >= len(rates):
                raise RuntimeError("reference: trace too short")
            block_end = (k + 1) * block_s
            dt = max(block_end - t, 0.0)
            sendable = rates[k] * dt
            if sendable >= remaining:
                tau += remaining / rates[k]
                remaining = 0.0
            else:
                tau += dt
                remaining -= sendable
                t = block_end
                k += 1
        taus.append(tau)
    best = 0
    for c in range(1, len(bits)):
        if processing_j[c] + power_w * taus[c] < processing_j[best] + power_w * taus[best]:
            best = c
    return best, taus


def vectorised(gains, start_s, bits, processing_j, bandwidth_hz):
    rate = rate_bps(gains, bandwidth_hz, POWER_W, NOISE_PSD_W_PER_HZ)
    cum = cumulative_bits(rate, COHERENCE_TIME_S)
    tau = transmission_time_s(cum, rate, COHERENCE_TIME_S, start_s, bits)
    total = total_energy_j(processing_j, transmission_energy_j(tau, POWER_W))
    return select_min_energy(total), tau, total, rate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inferences", type=int, default=100_000)
    parser.add_argument("--loop-inferences", type=int, default=2_000)
    args = parser.parse_args(argv)
    n = args.inferences
    n_loop = min(args.loop_inferences, n)

    layers = paper_cnn(keep=0.33)
    names = cut_names(layers)
    processing_j = processing_energy_per_cut_j(layers, FP32_MUL_J, FP32_ADD_J, element_access_energy_j(2.6e-9, 32))
    bits = payload_bits(cut_out_elements(layers), 32, n_cuts=len(names)).astype(float)

    start_s = inference_times_s(n / INFERENCE_RATE_HZ, INFERENCE_RATE_HZ)
    route = lawnmower_route_m()
    speed_mps = route_length_m(route) / (n / INFERENCE_RATE_HZ)  # the walk spans the whole run
    server_m = np.array([300.0, 300.0])
    channel = dict(exponent=2.5, reference_distance_m=100.0, min_distance_m=10.0)

    # Size the trace: the last upload has the least trace left, so extend until it completes
    # at the lowest bandwidth. Fading is drawn in block order, so extending keeps earlier blocks.
    n_blocks = int(np.ceil((start_s[-1] + 60.0) / COHERENCE_TIME_S))
    while True:
        gains = block_gains(route, speed_mps, server_m, COHERENCE_TIME_S, n_blocks, np.random.default_rng(SEED),
                            **channel)
        rate = rate_bps(gains, min(BANDWIDTHS_HZ), POWER_W, NOISE_PSD_W_PER_HZ)
        try:
            transmission_time_s(cumulative_bits(rate, COHERENCE_TIME_S), rate, COHERENCE_TIME_S, start_s[-1:], bits)
            break
        except ValueError:
            n_blocks *= 2

    print(f"{n} inferences x {len(names)} cuts x {len(BANDWIDTHS_HZ)} bandwidths; {n_blocks} fading blocks "
          f"of {COHERENCE_TIME_S * 1e3:g} ms; E_p per cut {processing_j[1] * 1e6:.2f}..{processing_j[-1] * 1e6:.1f} uJ")

    total_vec_s = 0.0
    for bandwidth_hz in BANDWIDTHS_HZ:
        t0 = time.perf_counter()
        choice, tau, total, rate = vectorised(gains, start_s, bits, processing_j, bandwidth_hz)
        vec_s = time.perf_counter() - t0
        total_vec_s += vec_s

        t0 = time.perf_counter()
        vectorised(gains, start_s[:n_loop], bits, processing_j, bandwidth_hz)
        vec_small_s = time.perf_counter() - t0

        rates_list = rate.tolist()  # the loop reads plain floats, as a naive implementation would
        t0 = time.perf_counter()
        ref = [reference_choice(rates_list, COHERENCE_TIME_S, float(s), bits.tolist(), processing_j.tolist(), POWER_W)
               for s in start_s[:n_loop]]
        loop_s = time.perf_counter() - t0

        ref_choice = np.array([c for c, _ in ref])
        ref_tau = np.array([t for _, t in ref])
        np.testing.assert_allclose(tau[:n_loop], ref_tau, rtol=1e-9, atol=0)
        assert np.array_equal(choice[:n_loop], ref_choice), "vectorised and loop choices differ"

        counts = np.bincount(choice, minlength=len(names))
        top = ", ".join(f"{names[c]} {counts[c] / n:.1%}" for c in np.argsort(-counts)[:3] if counts[c])
        print(f"W = {bandwidth_hz:g} Hz: mean E = {total[np.arange(n), choice].mean():.3g} J; chosen: {top}")
        print(f"  vectorised: {n} inf in {vec_s:.3f} s = {n / vec_s:,.0f} inf/s "
              f"(first {n_loop}: {n_loop / vec_small_s:,.0f} inf/s)")
        print(f"  loop:       {n_loop} inf in {loop_s:.3f} s = {n_loop / loop_s:,.0f} inf/s")
        print(f"  speed-up on the same {n_loop} inferences: {loop_s / vec_small_s:,.0f}x; "
              f"full-run vs loop rate: {(n / vec_s) / (n_loop / loop_s):,.0f}x; "
              f"choices identical, tau within rtol 1e-9")
    print(f"vectorised total for both bandwidths: {total_vec_s:.3f} s")


if __name__ == "__main__":
    main()
