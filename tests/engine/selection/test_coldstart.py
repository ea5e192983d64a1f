"""TypiClust and ProbCover on hand-built clusters whose right picks are known."""

from __future__ import annotations

import numpy as np
import pytest

from engine.score import PoolScores
from engine.selection.coldstart import choose_delta, hybrid, probcover, typicality, typiclust
from engine.selection.neighbours import normalized
from engine.selection.strategies import STRATEGIES, strategy_scores

R = 0.01  # ring radius: small against the distance between clusters (~1.4)


def _ring(direction: int, sides: int, radius: float = R, extra: tuple[float, ...] = ()) -> np.ndarray:
    """A centre on axis `direction` of R^4, then `sides` points on a circle around it, then points further out."""
    centre = np.zeros(4)
    centre[direction] = 1.0
    a, b = [axis for axis in range(4) if axis != direction][:2]
    points = [centre]
    for k in range(sides):
        p = centre.copy()
        p[a] += radius * np.cos(2 * np.pi * k / sides)
        p[b] += radius * np.sin(2 * np.pi * k / sides)
        points.append(p)
    for far in extra:
        p = centre.copy()
        p[a] += far
        points.append(p)
    return np.array(points)


def _pool(*clusters: np.ndarray, classes: int = 3) -> tuple[PoolScores, list[int]]:
    """The clusters stacked; returns the pool and the position of each cluster's centre."""
    starts = np.cumsum([0] + [len(c) for c in clusters])[:-1].tolist()
    x = np.concatenate(clusters).astype(np.float32)
    return PoolScores(probs=np.full((len(x), classes), 1 / classes, np.float32), embeddings=x), starts


@pytest.fixture
def three_clusters():
    # sizes 8, 7 and 6: a pentagon around each centre (its most typical point), far points in the bigger two
    big = _ring(0, 5, extra=(4 * R, -4 * R))
    middle = _ring(1, 5, extra=(4 * R,))
    small = _ring(2, 5)
    return _pool(small, big, middle)  # stacked out of size order on purpose: small at 0, big at 6, middle at 14


def test_typicality_prefers_the_centre_of_a_pentagon():
    x = normalized(_ring(0, 5))
    assert np.argmax(typicality(x, 3)) == 0


def test_typiclust_takes_the_centres_of_the_largest_unlabeled_clusters_first(three_clusters):
    pool, (small, big, middle) = three_clusters
    clusters = np.repeat([2, 0, 1], [6, 8, 7])
    assert typiclust(pool, [], 3, clusters=clusters).tolist() == [big, middle, small]
    # a cluster that already holds a label waits until every other cluster had its turn
    assert typiclust(pool, [big + 1], 2, clusters=clusters).tolist() == [middle, small]


def test_typiclust_clusters_by_itself(three_clusters):
    pool, (small, big, middle) = three_clusters
    picks = typiclust(pool, [], 3, rng=np.random.default_rng(0))
    assert picks.tolist() == [big, middle, small]


def test_typiclust_never_picks_a_taken_point_and_fills_the_budget(three_clusters):
    pool, (small, big, middle) = three_clusters
    taken = [small, big, middle]
    picks = typiclust(pool, taken, 10, rng=np.random.default_rng(1))
    assert len(picks) == 10 and len(set(picks.tolist())) == 10
    assert not set(picks.tolist()) & set(taken)


def test_probcover_covers_the_densest_balls_first():
    a = _ring(0, 5)  # centre's ball (delta 1.05 R) holds 6; each ring point's 2
    b = _ring(1, 4)  # centre's ball holds 5
    singles = np.array([[0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    pool, (first_single, a0, b0) = _pool(singles, a, b)
    picks = probcover(pool, [], 3, delta=1.05 * R).tolist()
    assert picks[:2] == [a0, b0] and picks[2] in (first_single, first_single + 1)  # a tie between the singles
    # the labeled centre's ball counts as covered: the next densest goes first
    assert probcover(pool, [a0], 2, delta=1.05 * R).tolist()[0] == b0


def test_probcover_breaks_ties_at_random_not_by_position():
    # 40 isolated points: every ball holds only its centre; lowest-position ties would take 0..9
    pool, _ = _pool(np.eye(40))
    picks = [probcover(pool, [], 10, delta=0.1, rng=np.random.default_rng(seed)).tolist() for seed in (0, 1)]
    assert picks[0] != list(range(10)) and picks[0] != picks[1]


def test_probcover_draws_at_random_once_everything_is_covered():
    pool, _ = _pool(_ring(0, 5))
    picks = probcover(pool, [], 4, delta=10.0, rng=np.random.default_rng(0))
    assert len(set(picks.tolist())) == 4  # one ball covers all 6; three more drawn at random


def test_choose_delta_stays_inside_the_clusters(three_clusters):
    pool, _ = three_clusters
    delta = choose_delta(normalized(pool.embeddings), 3)
    # clusters lie ~1.41 apart on the unit sphere: a pure ball never reaches another cluster
    assert 0.05 <= delta < 1.41


def test_cold_start_strategies_are_registered_with_scores(three_clusters):
    pool, (_small, _big, _middle) = three_clusters
    for name in ("typiclust", "probcover", "hybrid"):
        picks = STRATEGIES[name](pool, [], 3, rng=np.random.default_rng(0))
        scores = strategy_scores(name, pool, picks, labeled=[])
        assert len(scores) == 3 and np.isfinite(scores).all()


def test_hybrid_switches_to_least_confidence_once_labels_are_many():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    probs = np.full((200, 2), 0.5, np.float32)
    probs[:, 0] = np.linspace(0.99, 0.51, 200)  # the last rows are the least sure
    pool = PoolScores(probs=probs, embeddings=x)
    many = list(range(40))  # 20 per class for 2 classes: uncertainty's turn
    assert hybrid(pool, many, 3, rng=rng).tolist() == [199, 198, 197]
    few = hybrid(pool, list(range(5)), 3, rng=np.random.default_rng(0))
    assert few.tolist() == typiclust(pool, list(range(5)), 3, rng=np.random.default_rng(0)).tolist()


def test_probcover_scores_are_measured_with_the_radius_that_picked(monkeypatch):
    """Issue 25: the score beside an image came from a radius chosen again with k-means seed 0, not the one
    the picks used. One radius now serves both."""
    from engine.selection import coldstart
    from engine.selection.strategies import select_with_scores

    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    pool = PoolScores(np.full((120, 3), 1 / 3, np.float32), x)
    chosen_radii: list[float] = []

    def by_seed(x, k, seed=0, alpha=coldstart.ALPHA):  # another seed, another radius, as k-means may give
        delta = float(coldstart.DELTAS[2 if seed == 0 else 5])
        chosen_radii.append(delta)
        return delta

    monkeypatch.setattr(coldstart, "choose_delta", by_seed)
    picks, scores, note = select_with_scores("probcover", pool, [], 5, rng=np.random.default_rng(7))
    assert len(chosen_radii) == 1 and note == f"radius {chosen_radii[0]:g}"  # chosen once, recorded
    starts, _ = coldstart.ball_graph(coldstart.normalized(x), chosen_radii[0])
    assert scores.tolist() == np.diff(starts)[picks].astype(float).tolist()
    expected = coldstart.probcover(pool, [], 5, rng=np.random.default_rng(7))  # the same picks as before
    assert picks.tolist() == expected.tolist()
