"""Herding: picks by hand on a tiny 2-D case, the chosen mean nearing the mean of all faster than random, taken
positions, the budget's ends, ties, class balance and the registry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.names import LABELING_STRATEGIES, STRATEGY_INFO
from engine.score import PoolScores
from engine.selection.balance import class_balanced
from engine.selection.herding import herding, herding_distances
from engine.selection.strategies import STRATEGIES, strategy_scores


def pool_of(points, labels=None) -> PoolScores:
    points = np.asarray(points, np.float32)
    probs = np.full((len(points), 2), 0.5, np.float32)
    return PoolScores(probs, points, labels=None if labels is None else np.asarray(labels))


# mean (1, 0); by hand: (1, 0.2) is nearest it; then r = 2 mu - S = (1, -0.2), nearest (1, -0.3) (distance 0.1)
SQUARE = [[0.0, 0.0], [2.0, 1.0], [1.0, 0.2], [1.0, -0.3], [2.0, -1.0], [0.0, 0.1]]


def brute_force(points, taken, budget):
    """Herding by enumeration: the point that brings the chosen mean closest to the mean of all, each time."""
    points = np.asarray(points, np.float64)
    mu, chosen = points.mean(0), list(taken)
    for _ in range(budget):
        free = [j for j in range(len(points)) if j not in chosen]
        chosen.append(min(free, key=lambda j: np.linalg.norm(points[[*chosen, j]].mean(0) - mu)))
    return chosen[len(taken) :]


def test_picks_by_hand_on_a_tiny_2d_case():
    picks = herding(pool_of(SQUARE), [], 6).tolist()
    assert picks[:2] == [2, 3]
    # third: r = 3 mu - S = (1, 0.1); |r - x|^2 is 1.0 for (0, 0.1), 1.01 for (0, 0), 1.81 for (2, 1)
    assert picks[2] == 5
    assert picks == brute_force(SQUARE, [], 6)
    assert sorted(picks) == list(range(6))


def test_agrees_with_enumeration_on_random_sets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = rng.normal(size=(30, 4)).astype(np.float32)
        taken = rng.choice(30, 3, replace=False).tolist()
        assert herding(pool_of(points), taken, 12).tolist() == brute_force(points, taken, 12)


def test_the_chosen_mean_nears_the_mean_of_all_faster_than_random():
    rng = np.random.default_rng(1)
    points = rng.lognormal(size=(2000, 8)).astype(np.float32)  # skewed: a random draw's mean wanders
    mu = points.mean(0)
    picks = herding(pool_of(points), [], 50)
    for k in (5, 10, 50):
        herded = np.linalg.norm(points[picks[:k]].mean(0) - mu)
        drawn = [np.linalg.norm(points[rng.choice(2000, k, replace=False)].mean(0) - mu) for _ in range(200)]
        assert herded < np.quantile(drawn, 0.01)
    distances = herding_distances(pool_of(points), picks, [])
    assert distances[-1] < distances[0]
    assert distances[-1] == pytest.approx(np.linalg.norm(points[picks].mean(0, dtype=np.float64) - mu), rel=1e-5)


def test_taken_positions_count_as_chosen_and_are_never_picked():
    points = np.asarray(SQUARE, np.float32)
    picks = herding(pool_of(points), [2, 4], 3).tolist()
    assert not {2, 4} & set(picks)
    assert picks == brute_force(SQUARE, [2, 4], 3)
    # with (1, 0.2) and (2, -1) already chosen, the mean is pulled right and down: (0, 0.1) comes first,
    # not (1, -0.3), which herding from nothing picks second
    assert picks[0] == 5


def test_budget_zero_and_budget_everything():
    pool = pool_of(SQUARE)
    assert herding(pool, [], 0).tolist() == []
    assert herding(pool, [1], 0).dtype == np.int64
    assert sorted(herding(pool, [1, 3], 4).tolist()) == [0, 2, 4, 5]
    with pytest.raises(ValueError, match="budget 5 is larger than the 4 candidates"):
        herding(pool, [1, 3], 5)


def test_equal_distances_are_drawn_with_the_rng():
    # four copies of the mean: each is the best first pick, and only the rng decides which
    points = np.array([[0.0, 0.0]] * 4 + [[1.0, 0.0], [-1.0, 0.0]], np.float32)
    firsts = {int(herding(pool_of(points), [], 1, rng=np.random.default_rng(seed))[0]) for seed in range(20)}
    assert firsts == {0, 1, 2, 3}
    assert herding(pool_of(points), [], 1)[0] == 0  # without an rng: the lowest position
    seeded = [herding(pool_of(points), [], 6, rng=np.random.default_rng(3)).tolist() for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_balanced_over_classes_each_class_matches_its_own_mean():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], [40, 20, 40])
    points = (rng.normal(size=(100, 3)) + labels[:, None] * 5).astype(np.float32)
    pool = pool_of(points, labels)
    picks = class_balanced(herding)(pool, [], 10, rng=np.random.default_rng(0))
    assert np.bincount(labels[picks]).tolist() == [4, 2, 4]
    for c in range(3):
        own = np.flatnonzero(labels == c)
        expected = own[brute_force(points[own], [], int((labels[picks] == c).sum()))]
        assert picks[labels[picks] == c].tolist() == expected.tolist()


def test_registered_as_a_core_set_method_that_reads_distances():
    assert STRATEGIES["herding"] is herding
    assert STRATEGY_INFO["herding"].reads_distances and not STRATEGY_INFO["herding"].labeling
    assert "herding" not in LABELING_STRATEGIES
    pool = pool_of(SQUARE)
    picks = herding(pool, [], 3)
    expected = [np.linalg.norm(np.mean(np.asarray(SQUARE)[picks[:k]], 0) - np.mean(SQUARE, 0)) for k in (1, 2, 3)]
    assert strategy_scores("herding", pool, picks) == pytest.approx(expected)
    assert STRATEGY_INFO["herding"].caption(0.25) == "chosen mean 0.25 from the mean"


def test_refuses_bad_embeddings():
    with pytest.raises(ValueError, match="NaN or inf"):
        herding(pool_of([[0.0, np.nan], [1.0, 1.0]]), [], 1)


@pytest.mark.parametrize("n, budget", list(itertools.product([1, 2, 7], [0, 1])))
def test_tiny_pools(n, budget):
    assert len(herding(pool_of(np.arange(2 * n).reshape(n, 2)), [], min(budget, n))) == min(budget, n)
