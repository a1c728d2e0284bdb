"""The client's trajectory over a fading channel, and what each method spends at every inference.

Pure numpy: arrays of per-cut processing energy and payload bits in, per-inference choices and
energies out (eqs. 3-6). Methods of Sec. IV: PS (min over cuts, Sec. III-B), fixed cuts (Pool-1,
softmax, full offload), and PSNC (PS on the uncompressed model's tables).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import channel, selection, trajectory


@dataclass(frozen=True)
class Route:
    """Client motion and the channel it sees (Fig. 4a); every field is a named config value."""

    waypoints_m: np.ndarray
    server_m: np.ndarray
    speed_mps: float
    inference_rate_hz: float
    coherence_time_s: float
    path_loss_exponent: float
    reference_distance_m: float
    min_distance_m: float
    seed: int
    duration_s: float | None = None  # None: the time to walk the route once


@dataclass
class Scenario:
    """Inference start times, client positions and the global block-fading trace."""

    route: Route
    times_s: np.ndarray
    positions_m: np.ndarray
    gains: np.ndarray  # |h|^2 per fading block of route.coherence_time_s

    @property
    def block_s(self) -> float:
        return self.route.coherence_time_s


def build_scenario(route: Route, n_blocks: int | None = None) -> Scenario:
    duration_s = route.duration_s or trajectory.route_length_m(route.waypoints_m) / route.speed_mps
    times = trajectory.inference_times_s(duration_s, route.inference_rate_hz)
    if n_blocks is None:
        n_blocks = int(np.ceil(duration_s / route.coherence_time_s)) + 1
    gains = trajectory.block_gains(
        route.waypoints_m, route.speed_mps, route.server_m, route.coherence_time_s, n_blocks,
        np.random.default_rng(route.seed), route.path_loss_exponent, route.reference_distance_m,
        route.min_distance_m,
    )
    return Scenario(route, times, trajectory.positions_m(route.waypoints_m, route.speed_mps, times), gains)


@dataclass(frozen=True)
class Link:
    bandwidth_hz: float
    power_w: float
    noise_psd_w_per_hz: float


def transmission_times_s(scenario: Scenario, link: Link, bits: np.ndarray) -> tuple[Scenario, np.ndarray]:
    """Eq. (4) for every inference x cut. A trace too short for the slowest upload is regrown
    (doubling; block_gains draws in order, so the blocks already used do not change)."""
    channel.validate_link(link.bandwidth_hz, link.power_w, link.noise_psd_w_per_hz)
    while True:
        rates = channel.rate_bps(scenario.gains, link.bandwidth_hz, link.power_w, link.noise_psd_w_per_hz)
        cum = channel.cumulative_bits(rates, scenario.block_s)
        try:
            return scenario, channel.transmission_time_s(cum, rates, scenario.block_s, scenario.times_s, bits)
        except channel.TraceTooShortError:
            scenario = build_scenario(scenario.route, 2 * len(scenario.gains))


@dataclass
class MethodResult:
    """Per-inference outcome of one method: chosen cut index and energies in J (eq. 6)."""

    choice: np.ndarray
    processing_j: np.ndarray
    transmission_j: np.ndarray

    @property
    def total_j(self) -> np.ndarray:
        return self.processing_j + self.transmission_j

    def means(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Averages over the trajectory (eq. 8's (1/I) sum_i E_i), or over ``rows`` of it."""
        sl = slice(None) if rows is None else rows
        return {
            "energy_total_j": float(np.mean(self.total_j[sl])),
            "energy_processing_j": float(np.mean(self.processing_j[sl])),
            "energy_transmission_j": float(np.mean(self.transmission_j[sl])),
        }


def run_method(
    processing_j: np.ndarray,
    tau_s: np.ndarray,
    power_w: float,
    fixed_cut: int | None = None,
    start_rate_bps: np.ndarray | None = None,
    bits: np.ndarray | None = None,
) -> MethodResult:
    """Choose a cut per inference and charge its true cost.

    fixed_cut: a baseline that always sends that cut. Otherwise PS: the cut minimising
    E_p + E_tr with the true channel over [0, tau) (Remark 1), or, when ``start_rate_bps`` is
    given, the causal variant that decides on the rate seen at the start.
    """
    e_tr = channel.transmission_energy_j(tau_s, power_w)  # (N, C)
    n = tau_s.shape[0]
    if fixed_cut is not None:
        choice = selection.select_fixed(n, fixed_cut, tau_s.shape[1])
    elif start_rate_bps is not None:
        choice = selection.select_causal(processing_j, bits, start_rate_bps, power_w)
    else:
        choice = selection.select_min_energy(selection.total_energy_j(processing_j, e_tr))
    return MethodResult(choice, np.asarray(processing_j)[choice], selection.gather(e_tr, choice))


def start_rates_bps(scenario: Scenario, link: Link) -> np.ndarray:
    """R(t_i) at each inference's start block, what a causal client observes."""
    k = np.minimum((scenario.times_s // scenario.block_s).astype(int), len(scenario.gains) - 1)
    return channel.rate_bps(scenario.gains[k], link.bandwidth_hz, link.power_w, link.noise_psd_w_per_hz)
