"""Eq. (8) as a search objective, and the accuracy/energy Pareto front with a selection rule.

Pure numpy: works on arrays and on plain row dicts, so fronts can be recomputed from trials of
one study or from MLflow runs of several sweeps (pipeline.front).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def scalar_objective(loss: float, energy_j: float, reference_energy_j: float, lam: float) -> float:
    """Eq. (8): lambda * loss + (1 - lambda) * E_bar / E_ref.

    E_bar is the trajectory-average PS energy; dividing by a reference energy (the uncompressed
    model's PS energy on the same trajectory and bandwidth, i.e. PSNC) makes both terms O(1), so
    lambda weighs comparable quantities instead of joules against nats.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"objective.lam must be in [0, 1] (got {lam})")
    if not (reference_energy_j > 0 and math.isfinite(reference_energy_j)):
        raise ValueError(f"reference energy must be finite and > 0 (got {reference_energy_j})")
    return lam * loss + (1.0 - lam) * energy_j / reference_energy_j


def pareto_mask(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """True for the rows of ``points`` (N, k) that no other row dominates.

    Row a dominates b if a is no worse in every objective and strictly better in one; each
    column is minimised or maximised as ``directions`` says. Non-finite rows are never on it.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != len(directions):
        raise ValueError(f"points must be (N, {len(directions)}) (got {pts.shape})")
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    p = pts * sign  # now everything is minimised
    finite = np.all(np.isfinite(p), axis=1)
    no_worse = np.all(p[:, None, :] <= p[None, :, :], axis=2)  # [a, b]: a no worse than b
    better = np.any(p[:, None, :] < p[None, :, :], axis=2)
    dominates = no_worse & better & finite[:, None]
    return finite & ~dominates.any(axis=0)


def hypervolume_2d(points: np.ndarray, reference: Sequence[float]) -> float:
    """Area dominated by ``points`` (N, 2), both columns minimised, inside the box bounded by
    ``reference`` (the hypervolume indicator of Zitzler & Thiele, 1998, in two dimensions).

    Points not strictly better than the reference in both columns (or not finite) add nothing.
    Sorted by the first column, each front point adds the strip between its second column and the
    lowest second-column value seen so far (or the reference)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    rx, ry = float(reference[0]), float(reference[1])
    pts = pts[np.all(np.isfinite(pts), axis=1) & (pts[:, 0] < rx) & (pts[:, 1] < ry)]
    area, best_y = 0.0, ry
    for x, y in pts[np.lexsort((pts[:, 1], pts[:, 0]))]:
        if y < best_y:
            area += (rx - x) * (best_y - y)
            best_y = y
    return area


def knee_index(x: np.ndarray, y: np.ndarray) -> int:
    """The front point farthest from the line joining its two extremes, both axes scaled to [0, 1]
    (the "kneedle" idea: where trading one objective for the other stops paying)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) <= 2:
        return int(np.argmin(y)) if len(x) else -1
    xs = (x - x.min()) / (np.ptp(x) or 1.0)
    ys = (y - y.min()) / (np.ptp(y) or 1.0)
    order = np.argsort(xs)
    a = np.array([xs[order[0]], ys[order[0]]])
    b = np.array([xs[order[-1]], ys[order[-1]]])
    d = b - a
    norm = np.hypot(*d) or 1.0
    dist = np.abs(d[0] * (ys - a[1]) - d[1] * (xs - a[0])) / norm
    return int(np.argmax(dist))


RULES = ("min_energy", "knee", "best_objective")


def select(rows: Sequence[Mapping], rule: str, energy_key: str, accuracy_key: str,
           min_accuracy: float | None = None, objective_key: str = "objective") -> int:
    """Index (into ``rows``) of the model picked from the accuracy/energy front.

    Every rule considers only the feasible rows, accuracy >= min_accuracy (all when None):
    rule "min_energy": the lowest energy;
    rule "knee": the knee of the front (max accuracy, min energy);
    rule "best_objective": the lowest eq. (8) value (``objective_key``), so lambda decides (the
    row need not be on the accuracy/energy front: eq. (8) weighs the loss, not the accuracy).
    Returns -1 when no row qualifies.
    """
    if rule not in RULES:
        raise ValueError(f"selection.rule must be one of {', '.join(RULES)} (got {rule!r})")
    energy = np.array([r.get(energy_key, np.nan) for r in rows], float)
    acc = np.array([r.get(accuracy_key, np.nan) for r in rows], float)
    ok = np.isfinite(energy) & np.isfinite(acc)
    feasible = ok & (acc >= min_accuracy) if min_accuracy is not None else ok
    if rule == "best_objective":
        value = np.array([r.get(objective_key, np.nan) for r in rows], float)
        feasible &= np.isfinite(value)
        idx = np.flatnonzero(feasible)
        return int(idx[np.argmin(value[idx])]) if len(idx) else -1
    if rule == "min_energy":
        idx = np.flatnonzero(feasible)
        return int(idx[np.argmin(energy[idx])]) if len(idx) else -1
    idx = np.flatnonzero(pareto_mask(np.column_stack([energy, acc]), ["minimize", "maximize"]) & feasible)
    return int(idx[knee_index(energy[idx], acc[idx])]) if len(idx) else -1
