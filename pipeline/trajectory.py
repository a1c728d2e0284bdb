"""Client trajectory and the channel gains it sees (Fig. 4a), pure numpy.

The paper shows the route (Fig. 4a) and says only h ~ CN(0, 1) (Sec. II-C). The rest is ours:
the client moves at constant speed along straight segments between waypoints, the mean channel
gain follows a power-law path loss normalised to 1 at a reference distance, and on top of it
the fading is Rayleigh, independent from one coherence block to the next.
"""

from __future__ import annotations

import math

import numpy as np


def _check_number(value, name: str, *, low: float, strict: bool) -> float:
    value = float(value)
    ok = value > low if strict else value >= low
    if not math.isfinite(value) or not ok:
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {low:g} (got {value})")
    return value


def _check_points(points, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(f"{name} must have shape (K, 2) with K >= 1 (got {points.shape})")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must be finite")
    return points


def route_length_m(waypoints_m) -> float:
    """Length of the polyline through the waypoints, (K, 2) metres -> metres."""
    waypoints_m = _check_points(waypoints_m, "trajectory.waypoints_m")
    return float(np.sum(np.linalg.norm(np.diff(waypoints_m, axis=0), axis=1)))


def positions_m(waypoints_m, speed_mps, times_s) -> np.ndarray:
    """Client position at each time, (N,) seconds -> (N, 2) metres.

    The client is at waypoint 0 at t = 0, moves along the segments at constant speed and, once
    the last waypoint is reached, stays there.
    """
    waypoints_m = _check_points(waypoints_m, "trajectory.waypoints_m")
    speed_mps = _check_number(speed_mps, "trajectory.speed_mps", low=0.0, strict=False)
    times_s = np.asarray(times_s, dtype=float)
    if not np.all(np.isfinite(times_s)) or np.any(times_s < 0):
        raise ValueError("times_s must be finite and >= 0")

    seg_m = np.linalg.norm(np.diff(waypoints_m, axis=0), axis=1)
    keep = np.concatenate(([True], seg_m > 0))  # repeated waypoints would make the interpolation ambiguous
    points = waypoints_m[keep]
    arc_m = np.concatenate(([0.0], np.cumsum(seg_m[seg_m > 0])))
    if points.shape[0] == 1:
        return np.broadcast_to(points[0], times_s.shape + (2,)).copy()
    travelled_m = speed_mps * times_s  # np.interp holds the end value beyond the route
    return np.stack(
        [np.interp(travelled_m, arc_m, points[:, 0]), np.interp(travelled_m, arc_m, points[:, 1])],
        axis=-1,
    )


def distance_m(positions_m, server_m) -> np.ndarray:
    """Euclidean client-server distance, (N, 2) and (2,) metres -> (N,) metres."""
    positions_m = np.asarray(positions_m, dtype=float)
    server_m = np.asarray(server_m, dtype=float)
    if server_m.shape != (2,) or not np.all(np.isfinite(server_m)):
        raise ValueError(f"trajectory.server_m must be 2 finite coordinates (got {server_m.tolist()})")
    return np.linalg.norm(positions_m - server_m, axis=-1)


def path_loss_gain(distance_m, exponent, reference_distance_m, min_distance_m) -> np.ndarray:
    """Mean channel power gain (reference_distance_m / max(d, min_distance_m)) ** exponent.

    Equal to 1 at the reference distance, so the paper's unit-variance h ~ CN(0, 1) (Sec. II-C)
    holds there. The clamp keeps the gain finite when the client passes next to the server.
    """
    exponent = _check_number(exponent, "trajectory.path_loss_exponent", low=0.0, strict=False)
    reference_distance_m = _check_number(reference_distance_m, "trajectory.reference_distance_m", low=0.0, strict=True)
    min_distance_m = _check_number(min_distance_m, "trajectory.min_distance_m", low=0.0, strict=True)
    distance_m = np.asarray(distance_m, dtype=float)
    if not np.all(np.isfinite(distance_m)) or np.any(distance_m < 0):
        raise ValueError("distance_m must be finite and >= 0")
    return (reference_distance_m / np.maximum(distance_m, min_distance_m)) ** exponent


def rayleigh_power_gain(rng, shape) -> np.ndarray:
    """|h|^2 with h ~ CN(0, 1) (Sec. II-C): exponentially distributed with mean 1."""
    return np.random.default_rng(rng).standard_exponential(shape)


def block_gains(
    waypoints_m,
    speed_mps,
    server_m,
    coherence_time_s,
    n_blocks,
    rng,
    exponent,
    reference_distance_m,
    min_distance_m,
) -> np.ndarray:
    """|h|^2 for fading blocks 0..n_blocks-1 on the global time axis, shape (n_blocks,).

    Block k covers [k*Tc, (k+1)*Tc). Its gain is the path loss at the client's position at the
    block midpoint times an independent Rayleigh power draw. Fading is drawn in block order, so
    the same seed gives the same first blocks however many blocks are asked for: a trace that
    turned out too short can be regenerated longer without changing the beginning.
    `rng` is a numpy Generator or a seed.
    """
    coherence_time_s = _check_number(coherence_time_s, "channel.coherence_time_s", low=0.0, strict=True)
    if isinstance(n_blocks, bool) or int(n_blocks) != n_blocks or n_blocks < 1:
        raise ValueError(f"n_blocks must be an integer >= 1 (got {n_blocks!r})")
    midpoints_s = (np.arange(int(n_blocks)) + 0.5) * coherence_time_s
    distances = distance_m(positions_m(waypoints_m, speed_mps, midpoints_s), server_m)
    mean_gain = path_loss_gain(distances, exponent, reference_distance_m, min_distance_m)
    return mean_gain * rayleigh_power_gain(rng, int(n_blocks))


def inference_times_s(duration_s, inference_rate_hz) -> np.ndarray:
    """Start times of the inferences, t_k = k / inference_rate_hz.

    Each inference owns a slot of 1 / rate seconds and only whole slots inside [0, duration_s)
    are used: k = 0 .. floor(duration_s * rate) - 1. A product within 1e-9 (relative) of an
    integer counts as that integer, so 0.3 s at 10 Hz gives 3 inferences despite float rounding.
    """
    duration_s = _check_number(duration_s, "simulation.duration_s", low=0.0, strict=True)
    inference_rate_hz = _check_number(inference_rate_hz, "simulation.inference_rate_hz", low=0.0, strict=True)
    slots = duration_s * inference_rate_hz
    nearest = round(slots)
    n = nearest if abs(slots - nearest) <= 1e-9 * max(1.0, slots) else math.floor(slots)
    return np.arange(n) / inference_rate_hz


def nearest_location(positions_m, locations_m, radius_m) -> np.ndarray:
    """Index of the closest named location (P1, P2, ... of Fig. 4) within radius_m, else -1.

    (N, 2) positions and (L, 2) locations -> (N,) int. Equidistant locations go to the lower index.
    """
    positions_m = np.asarray(positions_m, dtype=float)
    if positions_m.ndim != 2 or positions_m.shape[1] != 2:
        raise ValueError(f"positions_m must have shape (N, 2) (got {positions_m.shape})")
    locations_m = _check_points(locations_m, "report.locations_m")
    radius_m = _check_number(radius_m, "report.location_radius_m", low=0.0, strict=False)
    d = np.linalg.norm(positions_m[:, None, :] - locations_m[None, :, :], axis=-1)
    closest = np.argmin(d, axis=1)
    within = d[np.arange(positions_m.shape[0]), closest] <= radius_m
    return np.where(within, closest, -1)
