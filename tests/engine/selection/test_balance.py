"""The class balancer: proportional shares by hand, and any method run per class with its picks interleaved."""

from __future__ import annotations

import numpy as np
import pytest

from engine.score import PoolScores
from engine.selection.balance import class_balanced, class_shares
from engine.selection.coreset import forgetting
from engine.selection.strategies import least_confidence, random_sample


@pytest.mark.parametrize(
    "counts, budget, expected",
    [
        ([6, 3, 3], 6, [3, 2, 1]),  # 3, 1.5, 1.5: the spare pick to the lower of the tied classes
        ([1, 10], 6, [1, 5]),  # 0.55 and 5.45: the larger remainder wins
        ([2, 2, 20], 20, [2, 2, 16]),  # 1.67, 1.67, 16.67: two spare picks, to the first two
        ([4, 4], 8, [4, 4]),  # everything
        ([5, 0, 5], 3, [2, 0, 1]),  # a class with nothing free gets nothing
        ([3, 3], 0, [0, 0]),
    ],
)
def test_shares_are_proportional_with_the_spare_picks_to_the_largest_remainders(counts, budget, expected):
    shares = class_shares(np.array(counts), budget)
    assert shares.tolist() == expected and shares.sum() == budget


def test_shares_never_exceed_a_class_on_many_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(500):
        counts = rng.integers(0, 20, rng.integers(1, 8))
        if counts.sum() == 0:
            continue
        budget = int(rng.integers(0, counts.sum() + 1))
        shares = class_shares(counts, budget)
        assert shares.sum() == budget and (shares <= counts).all() and (shares >= 0).all()
        assert (np.abs(shares - budget * counts / counts.sum()) < 1).all()


def test_more_picks_than_positions_is_refused():
    with pytest.raises(ValueError, match="cannot pick 7 of 6 positions"):
        class_shares(np.array([3, 3]), 7)


def _pool(labels, forgetting_events, probs=None):
    n = len(labels)
    probs = np.full((n, 2), 0.5) if probs is None else np.asarray(probs, float)
    stats = {"forgetting": np.asarray(forgetting_events, float)}
    return PoolScores(probs, np.zeros((n, 2), np.float32), labels=np.asarray(labels), per_example=stats)


def test_a_method_runs_within_each_class_and_its_picks_interleave_by_rank():
    #        class:     0  0  0  0  1  1
    pool = _pool([0, 0, 0, 0, 1, 1], [1, 5, 0, 3, 2, 9])
    picks = class_balanced(forgetting)(pool, [], 3, rng=np.random.default_rng(0))
    # shares 2 and 1; class 0's two most forgotten are 1 (5) then 3 (3), class 1's is 5 (9)
    assert picks.tolist() == [1, 5, 3]
    assert picks.dtype == np.int64


def test_taken_positions_stay_out_and_shrink_their_class():
    pool = _pool([0, 0, 0, 0, 1, 1], [1, 5, 0, 3, 2, 9])
    picks = class_balanced(forgetting)(pool, [1, 3], 2, rng=np.random.default_rng(0))
    assert picks.tolist() == [0, 5]  # 2 free in each class: one each


def test_without_labels_the_predicted_classes_are_balanced():
    probs = [[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]]
    pool = PoolScores(np.array(probs), np.zeros((6, 2), np.float32))
    picks = class_balanced(least_confidence)(pool, [], 2)
    assert sorted(picks.tolist()) == [2, 4]  # the least confident predicted 0, and predicted 1


def test_a_seeded_random_method_stays_seeded_and_balanced():
    pool = _pool([0] * 8 + [1] * 4, np.zeros(12))
    first = class_balanced(random_sample)(pool, [], 6, rng=np.random.default_rng(3))
    again = class_balanced(random_sample)(pool, [], 6, rng=np.random.default_rng(3))
    assert first.tolist() == again.tolist()
    assert np.bincount(pool.labels[first]).tolist() == [4, 2]
