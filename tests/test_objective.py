import numpy as np
import pytest

from pipeline.objective import knee_index, pareto_mask, scalar_objective, select


def test_scalar_objective_eq8_with_reference_normalisation():
    # lam = 0.3, loss 0.2 nats, E = 40 uJ against a 160 uJ reference -> 0.3*0.2 + 0.7*0.25
    assert scalar_objective(0.2, 40e-6, 160e-6, 0.3) == pytest.approx(0.06 + 0.175)
    assert scalar_objective(0.2, 40e-6, 160e-6, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"objective.lam must be in \[0, 1\]"):
        scalar_objective(0.2, 1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="reference energy"):
        scalar_objective(0.2, 1.0, 0.0, 0.5)


def test_pareto_mask_min_energy_max_accuracy():
    pts = np.array([
        [1.0, 0.90],  # front
        [2.0, 0.95],  # front
        [2.5, 0.94],  # dominated by row 1 (more energy, less accuracy)
        [3.0, 0.97],  # front
        [3.0, 0.96],  # dominated by row 3 (same energy, less accuracy)
        [np.nan, 0.99],  # non-finite: never on the front
    ])
    assert pareto_mask(pts, ["minimize", "maximize"]).tolist() == [True, True, False, True, False, False]


def test_duplicates_are_both_on_the_front():
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    assert pareto_mask(pts, ["minimize", "minimize"]).tolist() == [True, True, False]


def test_knee_is_the_point_farthest_from_the_chord():
    # chord from (0, 0) to (1, 1) after scaling; (0.1, 0.9) is farthest from it
    x = np.array([0.0, 0.1, 0.5, 1.0])
    y = np.array([0.0, 0.9, 0.95, 1.0])
    assert knee_index(x, y) == 1


def test_selection_rules():
    rows = [{"e": 1.0, "a": 0.90}, {"e": 2.0, "a": 0.96}, {"e": 5.0, "a": 0.99}, {"e": 1.5, "a": 0.95}]
    assert select(rows, "min_energy", "e", "a", 0.95) == 3   # cheapest with a >= 0.95
    assert select(rows, "min_energy", "e", "a", None) == 0
    assert select(rows, "min_energy", "e", "a", 0.999) == -1
    # all four are on the front; scaled e = (e-1)/4: 0, .25, 1, .125; a = (a-.9)/.09: 0, .667, 1, .556.
    # The chord runs (0,0)-(1,1), distance ~ |a - e|: 0, .417, 0, .431 -> row 3
    assert select(rows, "knee", "e", "a") == 3
    with pytest.raises(ValueError, match="selection.rule must be one of"):
        select(rows, "best", "e", "a")


def test_hypervolume_2d_by_hand():
    from pipeline.objective import hypervolume_2d
    ref = (1.0, 1.0)
    # front (0.2, 0.6), (0.5, 0.3); dominated (0.6, 0.7); outside the box (1.2, 0.1); not finite
    pts = [(0.5, 0.3), (0.6, 0.7), (0.2, 0.6), (1.2, 0.1), (float("nan"), 0.0)]
    # sorted by x: (0.2, 0.6) adds (1 - 0.2) * (1 - 0.6) = 0.32; (0.5, 0.3) adds (1 - 0.5) * (0.6 - 0.3) = 0.15;
    # (0.6, 0.7) adds nothing (0.7 > 0.3): 0.47
    assert hypervolume_2d(pts, ref) == pytest.approx(0.47)
    assert hypervolume_2d([(0.2, 0.6)], ref) == pytest.approx(0.32)
    assert hypervolume_2d([], ref) == 0.0
    assert hypervolume_2d([(1.0, 0.5)], ref) == 0.0  # on the reference's edge: nothing dominated


def test_the_three_rules_pick_three_different_trials_and_only_feasible_ones():
    # min_accuracy 0.9. Row 0 is infeasible (0.85) although cheapest and lowest in eq. (8).
    rows = [{"e": 1.0, "a": 0.85, "obj": 0.10},
            {"e": 2.0, "a": 0.91, "obj": 0.60},   # cheapest feasible -> min_energy
            {"e": 3.0, "a": 0.97, "obj": 0.50},
            {"e": 8.0, "a": 0.98, "obj": 0.40},   # lowest feasible eq. (8) -> best_objective
            {"e": 9.0, "a": 0.95, "obj": 0.45}]   # dominated by rows 2 and 3
    # knee over the feasible front rows 1, 2, 3: e scaled (0, 1/6, 1), a scaled (0, 6/7, 1); the chord is
    # the diagonal, distance ~ |a - e|: 0, 0.69, 0 -> row 2
    picks = {rule: select(rows, rule, "e", "a", 0.9, objective_key="obj") for rule in ("min_energy", "knee", "best_objective")}
    assert picks == {"min_energy": 1, "knee": 2, "best_objective": 3}
    assert select(rows, "best_objective", "e", "a", None, objective_key="obj") == 0  # no floor: row 0
    assert select(rows, "best_objective", "e", "a", 0.99, objective_key="obj") == -1
    no_objective = [{k: v for k, v in r.items() if k != "obj"} for r in rows]
    assert select(no_objective, "best_objective", "e", "a", 0.9, objective_key="obj") == -1
