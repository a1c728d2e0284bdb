"""Cut selection (Sec. III-B), fixed-cut baselines (Sec. IV) and CO2 accounting, pure numpy.

Shapes: C cut points, N inferences. processing_j is (C,), per-inference quantities are (N, C).
"""

from __future__ import annotations

import math

import numpy as np

from . import channel

J_PER_KWH = 3.6e6


def total_energy_j(processing_j, transmission_j) -> np.ndarray:
    """Eq. (6): E = E_p + E_tr for every inference and cut, (C,) + (N, C) -> (N, C)."""
    processing_j = np.asarray(processing_j, dtype=float)
    transmission_j = np.asarray(transmission_j, dtype=float)
    if processing_j.ndim != 1 or transmission_j.ndim != 2 or transmission_j.shape[1] != processing_j.size:
        raise ValueError(
            f"need processing_j (C,) and transmission_j (N, C) (got {processing_j.shape} and {transmission_j.shape})"
        )
    return transmission_j + processing_j[None, :]


def _candidate_mask(candidates, shape: tuple[int, int]) -> np.ndarray:
    if candidates is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(candidates, dtype=bool)
    if mask.shape not in (shape, (shape[1],)):
        raise ValueError(f"candidates must have shape (C,) or (N, C) = {shape} (got {mask.shape})")
    return np.broadcast_to(mask, shape)


def _argmin_within(cost, candidates, fallback) -> np.ndarray:
    """Per row, the first argmin of ``cost`` over the ``candidates`` mask; rows with no candidate
    take the first argmin over ``fallback`` (the cheapest of the cuts still allowed)."""
    choice = np.argmin(np.where(candidates, cost, np.inf), axis=1)
    empty = ~candidates.any(axis=1)
    if np.any(empty):
        choice[empty] = np.argmin(np.where(fallback[empty], cost[empty], np.inf), axis=1)
    return choice


def select_min_energy(total_j, candidates=None, allowed=None) -> np.ndarray:
    """PS (Sec. III-B): the cut minimising E_i of eq. (6) for each inference, (N, C) -> (N,) int.

    Uses the true E_tr of every cut, i.e. perfect knowledge of h(t) over the upload (Remark 1).
    ``allowed`` (C,) bool: the candidate set (e.g. the layers without the raw input; None: all).
    ``candidates`` (N, C) or (C,) bool: the allowed cuts that also meet the latency deadline;
    an inference with none of them takes the cheapest allowed cut (a deadline miss).
    Exact ties go to the earliest cut (fewest layers on the client); no tolerance is applied.
    """
    total_j = np.asarray(total_j, dtype=float)
    if total_j.ndim != 2 or total_j.shape[1] == 0:
        raise ValueError(f"total_j must have shape (N, C) with C >= 1 (got {total_j.shape})")
    if np.any(np.isnan(total_j)):
        raise ValueError("total_j contains NaN")
    allowed = _candidate_mask(allowed, total_j.shape)
    if not allowed.any(axis=1).all():
        raise ValueError("allowed must leave at least one cut")
    return _argmin_within(total_j, allowed & _candidate_mask(candidates, total_j.shape), allowed)


def select_causal(processing_j, bits, start_rate_bps, power_w, allowed=None, budget_s=None, start_penalty=None,
                  expected_transmissions=1.0) -> np.ndarray:
    """Remark 1 relaxed: choose with only the rate seen when the inference starts, (N,) int.

    Estimates tau_hat = bits / R(t_i) and E_hat = E_p + P * tau_hat (eqs. 4-6 with R frozen at
    t_i); the caller then charges the true cost of the chosen cut. Ties go to the earliest cut.
    power_w is the radio's draw while it transmits (P / eta + P_c). Finite blocklength:
    ``start_penalty`` (N,) D(t_i) makes tau_hat one codeword's time (channel.time_for_bits_s),
    times ``expected_transmissions``.
    ``allowed`` (C,) bool restricts the candidate set; ``budget_s`` (C,) is the time each cut
    leaves for its upload before the deadline: only cuts with tau_hat <= budget are chosen, and an
    inference where none fits takes the cheapest estimate (it will miss).
    With R(t_i) = 0 every upload looks infinitely long, so the limit R -> 0 is taken: fewest bits,
    then least processing energy.
    """
    processing_j = np.asarray(processing_j, dtype=float)
    bits = np.asarray(bits, dtype=float)
    rate = np.asarray(start_rate_bps, dtype=float)
    if processing_j.ndim != 1 or bits.shape != processing_j.shape:
        raise ValueError(f"processing_j and bits must both have shape (C,) (got {processing_j.shape}, {bits.shape})")
    if rate.ndim != 1 or not np.all(np.isfinite(rate)) or np.any(rate < 0):
        raise ValueError("start_rate_bps must be a 1-D array of finite rates >= 0")
    power_w = float(power_w)
    if not math.isfinite(power_w) or power_w <= 0:
        raise ValueError(f"channel.power_w must be finite and > 0 (got {power_w})")
    shape = (rate.size, bits.size)
    allowed = _candidate_mask(allowed, shape)

    live = rate > 0
    penalty = None if start_penalty is None else np.asarray(start_penalty, dtype=float)[:, None]
    tau_hat_s = np.where(live[:, None], channel.time_for_bits_s(bits[None, :], rate[:, None], penalty), np.inf)
    tau_hat_s = tau_hat_s * float(expected_transmissions)
    tau_hat_s[:, bits == 0] = 0.0
    fits = np.ones(shape, dtype=bool) if budget_s is None else tau_hat_s <= np.asarray(budget_s, float)[None, :]
    choice = _argmin_within(np.where(live[:, None], processing_j[None, :] + power_w * tau_hat_s, 0.0),
                            allowed & fits, allowed)
    if not np.all(live):
        # lexsort orders by the last key first: fewest bits, then least E_p, then earliest cut
        order = np.lexsort((np.arange(bits.size), processing_j, bits))
        for row in np.flatnonzero(~live):
            pool = (allowed & fits)[row] if (allowed & fits)[row].any() else allowed[row]
            choice[row] = next(c for c in order if pool[c])
    return choice


def select_fixed(n_inferences: int, cut: int, n_cuts: int) -> np.ndarray:
    """A fixed-cut baseline (Pool-1, softmax of Sec. IV): the same cut for every inference."""
    if not 0 <= cut < n_cuts:
        raise ValueError(f"cut index must be in [0, {n_cuts - 1}] (got {cut})")
    return np.full(int(n_inferences), cut, dtype=np.int64)


def gather(values, choice) -> np.ndarray:
    """The value of the chosen cut for each inference, (N, C) and (N,) -> (N,)."""
    values = np.asarray(values)
    choice = np.asarray(choice)
    if values.ndim != 2 or choice.shape != (values.shape[0],):
        raise ValueError(f"need values (N, C) and choice (N,) (got {values.shape} and {choice.shape})")
    if not np.issubdtype(choice.dtype, np.integer) or np.any(choice < 0) or np.any(choice >= values.shape[1]):
        raise ValueError(f"choice must be integer cut indices in [0, {values.shape[1] - 1}]")
    return values[np.arange(values.shape[0]), choice]


def validate_carbon_index(carbon_kg_per_kwh) -> float:
    """The carbon index CI in kg CO2e per kWh (Sec. IV, [17]; EU average 0.275): finite and >= 0."""
    try:
        value = float(carbon_kg_per_kwh)
    except (TypeError, ValueError):
        raise ValueError(f"co2.carbon_kg_per_kwh must be a finite number >= 0 (got {carbon_kg_per_kwh!r})") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"co2.carbon_kg_per_kwh must be finite and >= 0 (got {value})")
    return value


def co2_kg(energy_j, carbon_kg_per_kwh):
    """CO2e of an energy (Sec. IV): E[kWh] * CI, with 1 kWh = 3.6e6 J. Arrays ok."""
    carbon_kg_per_kwh = validate_carbon_index(carbon_kg_per_kwh)
    return np.asarray(energy_j, dtype=float) / J_PER_KWH * carbon_kg_per_kwh
