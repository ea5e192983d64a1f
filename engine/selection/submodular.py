"""Facility location and graph cut: lazy greedy on a sparse similarity graph (engine.selection.neighbours).

Both pick the point whose addition raises a submodular function most, again
and again; a point's gain only shrinks as the set grows, so a heap of stale
gains is re-evaluated only at its top (Minoux's lazy greedy). Similarities
are cosine similarities of the embeddings, kept for each point's nearest
neighbours only.

- facility location: F(S) = sum over every point i of max over s in S of
  sim(i, s): how well S covers the set. The gain of j is the sum over its
  neighbours i of max(0, sim(i, j) - cover(i)).
- graph cut: F(S) = sum over s in S of (sum over i of sim(i, s)) minus LAMBDA
  times sum over s, t in S of sim(s, t): representative points, penalised for
  resembling each other. The gain of j is degree(j) - LAMBDA * (2 * sim(j, S)
  + 1). LAMBDA = 0.5, the largest for which F stays monotone.

Positions already taken count as chosen before the first pick; equal gains go
to the lower position.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from engine.score import PoolScores
from engine.selection.kcenter import check_selection
from engine.selection.neighbours import SimilarityGraph, similarity_graph

__all__ = ["GRAPH_NEIGHBOURS", "LAMBDA", "facility_location", "gains_in_order", "graph_cut", "greedy", "replay"]

GRAPH_NEIGHBOURS = 10  # nearest neighbours kept per point
LAMBDA = 0.5

Gain = Callable[[int], float]


def greedy(
    n: int, taken: np.ndarray, budget: int, gain: Gain, add: Callable[[int], None]
) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy: `budget` positions of `n` (not in `taken`) and the gain each had when picked.

    `gain(j)` is j's gain given everything added so far; `add(j)` adds it. Gains must never grow as
    points are added (a submodular function), so a fresh gain at least the best stale one wins.
    """
    for j in taken.tolist():
        add(j)
    free = np.ones(n, bool)
    free[taken] = False
    heap = [(-gain(j), j) for j in np.flatnonzero(free).tolist()]
    heapq.heapify(heap)
    chosen: list[int] = []
    gains: list[float] = []
    while len(chosen) < budget:
        _, j = heapq.heappop(heap)
        fresh = (-gain(j), j)
        if heap and fresh > heap[0]:  # another's stale bound is higher (or equal, at a lower position)
            heapq.heappush(heap, fresh)
            continue
        add(j)
        chosen.append(j)
        gains.append(-fresh[0])
    return np.asarray(chosen, np.int64), np.asarray(gains, np.float64)


def replay(taken: np.ndarray, chosen: np.ndarray, gain: Gain, add: Callable[[int], None]) -> np.ndarray:
    """The gain each of `chosen` had when added in that order after `taken`."""
    for j in taken.tolist():
        add(j)
    gains = []
    for j in chosen.tolist():
        gains.append(gain(j))
        add(j)
    return np.asarray(gains, np.float64)


def facility_location_functions(graph: SimilarityGraph) -> tuple[Gain, Callable[[int], None]]:
    """(gain, add) of facility location on `graph`."""
    cover = np.zeros(len(graph))

    def gain(j: int) -> float:
        members, weights = graph.row(j)
        return float(np.maximum(weights - cover[members], 0.0).sum())

    def add(j: int) -> None:
        members, weights = graph.row(j)
        cover[members] = np.maximum(cover[members], weights)

    return gain, add


def graph_cut_functions(graph: SimilarityGraph, lam: float = LAMBDA) -> tuple[Gain, Callable[[int], None]]:
    """(gain, add) of graph cut on `graph`."""
    degree = np.add.reduceat(graph.weights, graph.starts[:-1])  # every row holds at least its own point
    to_chosen = np.zeros(len(graph))  # sim(j, S) for every j

    def gain(j: int) -> float:
        return float(degree[j] - lam * (2.0 * to_chosen[j] + 1.0))

    def add(j: int) -> None:
        members, weights = graph.row(j)
        outside = members != j
        to_chosen[members[outside]] += weights[outside]

    return gain, add


FUNCTIONS = {"facility_location": facility_location_functions, "graph_cut": graph_cut_functions}


def facility_location(pool: PoolScores, taken, budget: int, *, rng=None) -> np.ndarray:
    """Facility location on the embeddings' similarity graph: the points that best cover the set first."""
    return _select("facility_location", pool, taken, budget)


def graph_cut(pool: PoolScores, taken, budget: int, *, rng=None) -> np.ndarray:
    """Graph cut on the embeddings' similarity graph: representative, mutually unlike points first."""
    return _select("graph_cut", pool, taken, budget)


def _select(kind: str, pool: PoolScores, taken, budget: int) -> np.ndarray:
    taken = check_selection(len(pool.probs), taken, budget)
    gain, add = FUNCTIONS[kind](similarity_graph(pool.embeddings, GRAPH_NEIGHBOURS))
    return greedy(len(pool.probs), taken, budget, gain, add)[0]


def gains_in_order(kind: str, pool: PoolScores, chosen: np.ndarray, taken) -> np.ndarray:
    """The gain each of `chosen` had, added in that order after `taken` (the score the pages show)."""
    gain, add = FUNCTIONS[kind](similarity_graph(pool.embeddings, GRAPH_NEIGHBOURS))
    taken = np.asarray([] if taken is None else taken, np.int64)
    return replay(taken, np.asarray(chosen, np.int64), gain, add)
