"""The client's trajectory over a fading channel, and what each method spends at every inference.

Pure numpy: arrays of per-cut processing energy and payload bits in, per-inference choices and
energies out (eqs. 3-6). Methods of Sec. IV: PS (min over cuts, Sec. III-B), fixed cuts (Pool-1,
softmax, full offload), and PSNC (PS on the uncompressed model's tables).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
    """The radio link of eqs. (3)-(5); the defaults after the first three fields are the paper's."""

    bandwidth_hz: float
    power_w: float  # P, radiated (eq. 3)
    noise_psd_w_per_hz: float
    rate_model: str = "shannon"  # channel.RATE_MODELS: eq. (3), or the finite-blocklength normal approximation
    block_error_rate: float = 1e-3  # epsilon per codeword (finite_blocklength only)
    pa_efficiency: float = 1.0  # eta: the radio draws P / eta + P_c while it transmits
    circuit_power_w: float = 0.0  # P_c

    def __post_init__(self):
        if self.rate_model not in channel.RATE_MODELS:
            raise ValueError(f"channel.rate_model must be one of {', '.join(channel.RATE_MODELS)} "
                             f"(got {self.rate_model!r})")
        channel.check_block_error_rate(self.block_error_rate)
        channel.radio_power_w(self.power_w, self.pa_efficiency, self.circuit_power_w)

    @property
    def finite_blocklength(self) -> bool:
        return self.rate_model == "finite_blocklength"

    @property
    def radio_power_w(self) -> float:
        """P / eta + P_c: what E_tr charges per second of radio time (eq. 5 generalised)."""
        return channel.radio_power_w(self.power_w, self.pa_efficiency, self.circuit_power_w)

    @property
    def expected_transmissions(self) -> float:
        """Sends per codeword on average: 1 / (1 - epsilon) under finite blocklength (ARQ); 1 under
        Shannon's rate, which is error-free in the limit it describes."""
        return channel.expected_transmissions(self.block_error_rate) if self.finite_blocklength else 1.0

    def rates(self, gains) -> tuple[np.ndarray, np.ndarray | None]:
        """Eq. (3)'s rate of each fading gain, and the finite-blocklength penalty D (None: Shannon)."""
        args = (gains, self.bandwidth_hz, self.power_w, self.noise_psd_w_per_hz)
        penalty = channel.dispersion_penalty(*args, self.block_error_rate) if self.finite_blocklength else None
        return channel.rate_bps(*args), penalty


def transmission_times_s(scenario: Scenario, link: Link, bits: np.ndarray,
                         compute_s: np.ndarray | None = None) -> tuple[Scenario, np.ndarray]:
    """Eq. (4) for every inference x cut, each upload starting when the client has computed its
    cut (t_i + compute_s[c]). A trace too short for the slowest upload is regrown (doubling;
    block_gains draws in order, so the blocks already used do not change).

    Finite blocklength: one codeword per fading block the upload occupies (channel.transmission_time_s),
    and the time of the expected retransmissions: tau / (1 - epsilon), each codeword sent
    1 / (1 - epsilon) times on average, the resends as long as the first send and at its rate.
    """
    channel.validate_link(link.bandwidth_hz, link.power_w, link.noise_psd_w_per_hz)
    start_s = scenario.times_s if compute_s is None else scenario.times_s[:, None] + np.asarray(compute_s)[None, :]
    while True:
        rates, penalty = link.rates(scenario.gains)
        cum = channel.cumulative_bits(rates, scenario.block_s, penalty)
        try:
            tau_s = channel.transmission_time_s(cum, rates, scenario.block_s, start_s, bits, penalty)
        except channel.TraceTooShortError:
            scenario = build_scenario(scenario.route, 2 * len(scenario.gains))
            continue
        return scenario, tau_s * link.expected_transmissions if link.finite_blocklength else tau_s


LATE_UPLOADS = ("complete", "abort")
# Slack on the deadline test, so an upload that ends exactly on it (up to float rounding) meets it.
DEADLINE_TOL_S = 1e-12


@dataclass(frozen=True)
class Timing:
    """One radio and a latency deadline per inference (Sec. II-C leaves both open).

    Inference i starts at t_i = i / f. The client computes its layers (compute_s per cut), then
    uploads; the result is on time if compute + tau <= deadline_s. With deadline_s <= 1 / f the
    uploads that meet their deadlines never overlap: one radio. A late upload either completes
    (``complete``: the paper's accounting, the full tau is paid and overlaps the next inferences)
    or is abandoned at the deadline so the radio is free for the next one (``abort``: energy up to
    the deadline, the inference is lost). ``enforce``: PS chooses only among cuts that meet it.
    """

    deadline_s: float
    period_s: float  # 1 / f, the inference period
    late_upload: str = "complete"
    enforce: bool = False

    def __post_init__(self):
        if not (np.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise ValueError(f"channel.deadline_s must be > 0 (got {self.deadline_s})")
        if self.late_upload not in LATE_UPLOADS:
            raise ValueError(f"channel.late_upload must be one of {', '.join(LATE_UPLOADS)} (got {self.late_upload!r})")



@dataclass
class MethodResult:
    """Per-inference outcome of one method: chosen cut, energies in J (eq. 6), radio time, misses."""

    choice: np.ndarray
    processing_j: np.ndarray
    transmission_j: np.ndarray
    latency_s: np.ndarray  # compute + tau of the chosen cut (the whole upload, also when aborted)
    radio_s: np.ndarray  # time the radio transmits
    missed: np.ndarray  # bool: the result is not at the server by the deadline
    period_s: float

    @property
    def total_j(self) -> np.ndarray:
        return self.processing_j + self.transmission_j

    def means(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Averages over the trajectory (eq. 8's (1/I) sum_i E_i), or over ``rows`` of it.

        duty_cycle = mean radio time / inference period: above 1, uploads overlap (more than one
        radio would be needed)."""
        sl = slice(None) if rows is None else rows
        return {
            "energy_total_j": float(np.mean(self.total_j[sl])),
            "energy_processing_j": float(np.mean(self.processing_j[sl])),
            "energy_transmission_j": float(np.mean(self.transmission_j[sl])),
            "deadline_miss_rate": float(np.mean(self.missed[sl])),
            "duty_cycle": float(np.mean(self.radio_s[sl]) / self.period_s),
        }


def run_method(
    processing_j: np.ndarray,
    tau_s: np.ndarray,
    power_w: float,
    timing: Timing,
    compute_s: np.ndarray,
    fixed_cut: int | None = None,
    allowed: np.ndarray | None = None,
    start_rate_bps: np.ndarray | None = None,
    bits: np.ndarray | None = None,
    start_penalty: np.ndarray | None = None,
    expected_transmissions: float = 1.0,
) -> MethodResult:
    """Choose a cut per inference and charge its true cost (eqs. 4-6 under ``timing``).

    power_w: what the radio draws while it transmits, Link.radio_power_w (P / eta + P_c; the
    paper's P). compute_s (C,): the client's compute time of each cut (zeros without a
    compute-speed setting). tau_s (N, C): upload times, retransmissions included.

    fixed_cut: a baseline that always sends that cut. Otherwise PS over the ``allowed`` cuts: the
    cut minimising E_p + E_tr with the true channel over [0, tau) (Remark 1), or, when
    ``start_rate_bps`` is given, the causal variant that decides on the rate seen at the start
    (with its finite-blocklength ``start_penalty`` and ``expected_transmissions``, if any).
    With ``timing.enforce`` only cuts that meet the deadline are chosen while any does.
    """
    tau_s = np.asarray(tau_s, dtype=float)
    compute_s = np.asarray(compute_s, dtype=float)
    budget_s = timing.deadline_s - compute_s  # (C,) time left for each cut's upload
    meets = tau_s <= budget_s[None, :] + DEADLINE_TOL_S
    radio_s = tau_s if timing.late_upload == "complete" else np.minimum(tau_s, np.clip(budget_s, 0.0, None)[None, :])
    e_tr = channel.transmission_energy_j(radio_s, power_w)  # eq. (5), (N, C)
    n = tau_s.shape[0]
    if fixed_cut is not None:
        choice = selection.select_fixed(n, fixed_cut, tau_s.shape[1])
    elif start_rate_bps is not None:
        choice = selection.select_causal(processing_j, bits, start_rate_bps, power_w, allowed,
                                         budget_s if timing.enforce else None, start_penalty,
                                         expected_transmissions)
    else:
        # Blind to the deadline (enforce off), PS plans whole uploads (eq. (6) with the full tau):
        # ranked by what an aborted upload is charged, the cuts that miss, whose inference is
        # lost, would look cheapest. Enforcing, the cuts it may choose meet the deadline and pay
        # their full tau anyway; when none does, the cheapest miss as charged.
        plan_j = e_tr if timing.enforce else channel.transmission_energy_j(tau_s, power_w)
        choice = selection.select_min_energy(selection.total_energy_j(processing_j, plan_j),
                                             meets if timing.enforce else None, allowed)
    return MethodResult(
        choice=choice,
        processing_j=np.asarray(processing_j)[choice],
        transmission_j=selection.gather(e_tr, choice),
        latency_s=compute_s[choice] + selection.gather(tau_s, choice),
        radio_s=selection.gather(radio_s, choice),
        missed=~selection.gather(meets, choice),
        period_s=timing.period_s,
    )


def start_rates_bps(scenario: Scenario, link: Link) -> np.ndarray:
    """R(t_i) at each inference's start block, what a causal client observes."""
    return start_link_state(scenario, link)[0]


def start_link_state(scenario: Scenario, link: Link) -> tuple[np.ndarray, np.ndarray | None]:
    """R(t_i) and the finite-blocklength penalty D(t_i) (None: Shannon) at each inference's start block."""
    k = np.minimum(channel.block_index(scenario.times_s, scenario.block_s), len(scenario.gains) - 1)
    return link.rates(scenario.gains[k])


def realisation(route: Route, r: int) -> Route:
    """The route of fading realisation r: the same path and times, the fading seed route.seed + r.
    Every method sees the same realisations (common random numbers)."""
    return replace(route, seed=int(route.seed) + int(r))


def mean_ci95(samples) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval, Student t with R - 1 degrees of freedom
    (t_0.975 * s / sqrt(R), s the sample standard deviation); half-width NaN for R = 1."""
    x = np.asarray(samples, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"samples must be a non-empty 1-D array (got shape {x.shape})")
    if x.size == 1:
        return float(x[0]), float("nan")
    from scipy.special import stdtrit  # inverse Student t CDF; much lighter to import than scipy.stats

    return float(x.mean()), float(stdtrit(x.size - 1, 0.975) * x.std(ddof=1) / np.sqrt(x.size))
