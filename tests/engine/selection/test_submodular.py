"""Facility location and graph cut: lazy greedy against hand-computed gains and against plain greedy, the
sparse similarity graph, and a pool of 20,000 points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.score import PoolScores
from engine.selection.neighbours import SimilarityGraph, similarity_graph
from engine.selection.submodular import (
    facility_location,
    facility_location_functions,
    gains_in_order,
    graph_cut,
    graph_cut_functions,
    greedy,
)


def graph_of(dense: np.ndarray) -> SimilarityGraph:
    """The CSR form of a dense symmetric similarity matrix (zeros are no edge; the diagonal is 1)."""
    rows, cols = np.nonzero(dense)
    return SimilarityGraph(
        np.searchsorted(rows, np.arange(len(dense) + 1)).astype(np.int64), cols.astype(np.int64), dense[rows, cols]
    )


# points 0, 1, 2: a tight cluster (0.9 apart); point 3 alone
CLUSTER = np.array(
    [
        [1.0, 0.9, 0.9, 0.0],
        [0.9, 1.0, 0.9, 0.0],
        [0.9, 0.9, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def run(functions, dense, taken=(), budget=None):
    gain, add = functions(graph_of(dense))
    return greedy(
        len(dense), np.asarray(taken, np.int64), len(dense) - len(taken) if budget is None else budget, gain, add
    )


def test_facility_location_covers_the_cluster_then_the_loner_by_hand():
    chosen, gains = run(facility_location_functions, CLUSTER)
    # 0 covers 1 + 0.9 + 0.9 = 2.8 (1 and 2 tie with it: the lower position); then 3 covers itself: 1;
    # then 1 and 2 each add 1 - 0.9 = 0.1 (covering themselves)
    assert chosen.tolist() == [0, 3, 1, 2]
    assert gains == pytest.approx([2.8, 1.0, 0.1, 0.1])


def test_graph_cut_prefers_the_dense_cluster_by_hand():
    chosen, gains = run(graph_cut_functions, CLUSTER)
    # degree 2.8 minus 0.5 x (2 x sim to the chosen + 1): 2.3 for 0; then 1: 2.8 - 0.5 x 2.8 = 1.4 against
    # 3's 0.5; then 2: 2.8 - 0.5 x 4.6 = 0.5, tied with 3 (0.5): the lower position
    assert chosen.tolist() == [0, 1, 2, 3]
    assert gains == pytest.approx([2.3, 1.4, 0.5, 0.5])


def test_taken_points_count_as_chosen_and_are_never_picked():
    chosen, gains = run(facility_location_functions, CLUSTER, taken=[1], budget=2)
    assert chosen.tolist() == [3, 0] and gains == pytest.approx([1.0, 0.1])


def plain_greedy(functions, dense, budget):
    """Every gain recomputed at every step: what lazy greedy must equal."""
    gain, add = functions(graph_of(dense))
    chosen = []
    for _ in range(budget):
        best = max((j for j in range(len(dense)) if j not in chosen), key=lambda j: (gain(j), -j))
        add(best)
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("functions", [facility_location_functions, graph_cut_functions])
def test_lazy_greedy_picks_what_plain_greedy_picks(functions):
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        dense = np.triu(rng.uniform(0, 1, (n, n)) * (rng.uniform(0, 1, (n, n)) < 0.5), 1)
        dense = np.round(dense + dense.T, 2) + np.eye(n)  # rounded: ties happen
        budget = int(rng.integers(1, n + 1))
        assert run(functions, dense, budget=budget)[0].tolist() == plain_greedy(functions, dense, budget)


def test_the_similarity_graph_is_sparse_symmetric_and_in_unit_range():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    graph = similarity_graph(x, k=5)
    rows = np.repeat(np.arange(200), np.diff(graph.starts))
    edges = dict(zip(zip(rows.tolist(), graph.members.tolist(), strict=True), graph.weights.tolist(), strict=True))
    assert all(edges[(j, i)] == w for (i, j), w in edges.items())  # symmetric, one weight per pair
    assert all(edges[(i, i)] == 1.0 for i in range(200))
    assert (graph.weights >= 0).all() and (graph.weights <= 1).all()
    assert len(graph.weights) <= 200 * 6 * 2  # never dense
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = next((i, j) for (i, j) in edges if i != j)
    assert edges[(i, j)] == pytest.approx(max(0.0, float(unit[i] @ unit[j])), abs=1e-5)


def test_on_embeddings_the_first_picks_spread_over_the_clusters():
    rng = np.random.default_rng(2)
    centres = np.eye(4, 16) * 10
    x = np.concatenate([c + rng.normal(0, 0.5, (25, 16)) for c in centres]).astype(np.float32)
    pool = PoolScores(np.full((100, 2), 0.5), x)
    for method in (facility_location, graph_cut):
        picks = method(pool, [], 4)
        assert sorted((picks // 25).tolist()) == [0, 1, 2, 3], method.__name__  # one per cluster
    gains = gains_in_order("facility_location", pool, facility_location(pool, [], 4), [])
    assert all(a >= b for a, b in itertools.pairwise(gains)) and gains[-1] > 0


def test_twenty_thousand_points_select_without_a_dense_matrix():
    x = np.random.default_rng(3).normal(size=(20_000, 32)).astype(np.float32)
    pool = PoolScores(np.full((20_000, 2), 0.5), x)
    picks = facility_location(pool, [], 500)
    assert len(set(picks.tolist())) == 500
