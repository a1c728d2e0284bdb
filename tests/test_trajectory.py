import numpy as np
import pytest

from pipeline.trajectory import (
    block_gains,
    distance_m,
    inference_times_s,
    nearest_location,
    path_loss_gain,
    positions_m,
    rayleigh_power_gain,
    route_length_m,
)

ROUTE = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])  # 3 m east, then 4 m north


def test_route_length():
    assert route_length_m(ROUTE) == pytest.approx(3 + 4, rel=1e-12)


def test_positions_along_two_segments_at_2_mps():
    got = positions_m(ROUTE, 2.0, np.array([0.0, 1.0, 1.5, 2.5, 3.5]))
    # travelled 0, 2, 3 (corner), 5 (2 m up the second leg), 7 (the end)
    np.testing.assert_allclose(got, [[0, 0], [2, 0], [3, 0], [3, 2], [3, 4]], rtol=0, atol=1e-12)


def test_positions_stay_at_the_end_and_at_start_when_still():
    np.testing.assert_allclose(positions_m(ROUTE, 2.0, np.array([10.0, 1e6])), [[3, 4], [3, 4]], atol=1e-12)
    np.testing.assert_allclose(positions_m(ROUTE, 0.0, np.array([0.0, 5.0])), [[0, 0], [0, 0]], atol=1e-12)


def test_positions_ignore_repeated_waypoints():
    route = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(positions_m(route, 1.0, np.array([1.0])), [[1.0, 0.0]], atol=1e-12)


def test_distance():
    np.testing.assert_allclose(distance_m(np.array([[3.0, 4.0], [1.0, 1.0]]), np.array([0.0, 0.0])), [5.0, 2 ** 0.5],
                               rtol=1e-12)


def test_path_loss():
    d = np.array([10.0, 20.0, 1.0])
    # unit gain at the reference distance, (10/20)^2 at twice it, the 1 m point clamped to 5 m: (10/5)^2
    np.testing.assert_allclose(path_loss_gain(d, 2.0, 10.0, 5.0), [1.0, 0.25, 4.0], rtol=1e-12)
    np.testing.assert_allclose(path_loss_gain(d, 0.0, 10.0, 5.0), [1.0, 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1.0, 10.0, 5.0), "trajectory.path_loss_exponent must be finite and >= 0"),
        ((float("nan"), 10.0, 5.0), "trajectory.path_loss_exponent"),
        ((2.0, 0.0, 5.0), "trajectory.reference_distance_m must be finite and > 0"),
        ((2.0, 10.0, 0.0), "trajectory.min_distance_m must be finite and > 0"),
    ],
)
def test_path_loss_rejects_bad_settings(args, match):
    with pytest.raises(ValueError, match=match):
        path_loss_gain(np.array([10.0]), *args)


def test_rayleigh_power_is_unit_mean_exponential():
    g = rayleigh_power_gain(np.random.default_rng(1), 200_000)
    assert g.shape == (200_000,)
    assert np.all(g >= 0)
    # exponential(1): mean 1 (std of the sample mean 1/sqrt(2e5) = 0.0022), P(g > 1) = e^-1
    assert abs(g.mean() - 1.0) < 0.01
    assert abs(np.mean(g > 1.0) - np.exp(-1.0)) < 0.005


def test_block_gains_prefix_determinism():
    args = (ROUTE, 1.0, np.array([10.0, 10.0]), 0.5)
    kwargs = dict(exponent=3.0, reference_distance_m=5.0, min_distance_m=1.0)
    short = block_gains(*args, 10, np.random.default_rng(7), **kwargs)
    longer = block_gains(*args, 25, np.random.default_rng(7), **kwargs)
    np.testing.assert_array_equal(longer[:10], short)
    other_seed = block_gains(*args, 10, np.random.default_rng(8), **kwargs)
    assert not np.array_equal(other_seed, short)


def test_block_gains_use_path_loss_at_block_midpoints():
    # 10 m/s from x=10 to x=30, server at the origin, 1 s blocks: midpoints 0.5, 1.5, 2.5 s are at
    # x = 15, 25 and 30 (the route ended at 2 s)
    route = np.array([[10.0, 0.0], [30.0, 0.0]])
    got = block_gains(route, 10.0, np.array([0.0, 0.0]), 1.0, 3, np.random.default_rng(3),
                      exponent=2.0, reference_distance_m=10.0, min_distance_m=1.0)
    fading = np.random.default_rng(3).standard_exponential(3)
    np.testing.assert_allclose(got / fading, [(10 / 15) ** 2, (10 / 25) ** 2, (10 / 30) ** 2], rtol=1e-12)


def test_inference_times():
    np.testing.assert_allclose(inference_times_s(1.0, 4.0), [0.0, 0.25, 0.5, 0.75], rtol=0, atol=1e-15)
    np.testing.assert_allclose(inference_times_s(0.3, 10.0), [0.0, 0.1, 0.2], rtol=0, atol=1e-15)
    assert inference_times_s(1.05, 10.0).size == 10  # only whole 0.1 s slots: last start 0.9 s
    with pytest.raises(ValueError, match="simulation.inference_rate_hz"):
        inference_times_s(1.0, 0.0)
    with pytest.raises(ValueError, match="simulation.duration_s"):
        inference_times_s(-1.0, 1.0)


def test_nearest_location():
    positions = np.array([[0.0, 0.0], [5.0, 0.0], [9.0, 0.0], [100.0, 100.0]])
    locations = np.array([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_array_equal(nearest_location(positions, locations, 2.0), [0, -1, 1, -1])
    # (5, 0) is 5 m from both: the lower index wins
    np.testing.assert_array_equal(nearest_location(positions[1:2], locations, 5.0), [0])


def test_trajectory_bad_inputs():
    with pytest.raises(ValueError, match="trajectory.speed_mps"):
        positions_m(ROUTE, -1.0, np.array([0.0]))
    with pytest.raises(ValueError, match="trajectory.waypoints_m"):
        route_length_m(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="channel.coherence_time_s"):
        block_gains(ROUTE, 1.0, np.array([0.0, 0.0]), 0.0, 3, 1, 2.0, 1.0, 1.0)
