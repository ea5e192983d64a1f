"""FAISS nearest neighbours: searching chosen rows, and SEALS's candidate pool on hand-built points."""

from __future__ import annotations

import numpy as np
import pytest

import engine.selection.neighbours as neighbours
from engine.selection.neighbours import SealsCandidates, nearest


def _line(*values: float) -> np.ndarray:
    """Points on a line, as [N, 2] float32 embeddings."""
    return np.array([[v, 0.0] for v in values], dtype=np.float32)


def test_nearest_of_chosen_rows_is_those_rows_of_the_full_search():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    rows = np.array([7, 3, 41])
    dist, idx = nearest(x, 5, rows)
    full_dist, full_idx = nearest(x, 5)
    np.testing.assert_array_equal(idx, full_idx[rows])
    np.testing.assert_allclose(dist, full_dist[rows])
    assert idx[:, 0].tolist() == [7, 3, 41]  # each row finds itself first


# two clusters far apart: 0..4 near 0, 5..9 near 100
POINTS = _line(0, 1, 2, 3, 4, 100, 101, 102, 103, 104)


def test_seals_candidates_are_the_labeled_rows_k_nearest_less_the_taken():
    assert SealsCandidates(10, k=2).candidates(POINTS, [0]).tolist() == [1, 2]  # 0's two nearest others
    assert SealsCandidates(10, k=2).candidates(POINTS, [0], taken=[2]).tolist() == [1]  # a taken one is none
    assert SealsCandidates(10, k=2).candidates(POINTS, [0, 9]).tolist() == [1, 2, 7, 8]  # the union


def test_seals_searches_each_labeled_row_once_and_grows_with_the_labels(monkeypatch):
    searched: list[list[int]] = []
    real = neighbours.nearest

    def spy(x, k, rows=None):
        searched.append(np.asarray(rows).tolist())
        return real(x, k, rows)

    monkeypatch.setattr(neighbours, "nearest", spy)
    seals = SealsCandidates(10, k=2)
    assert seals.candidates(POINTS, [0]).tolist() == [1, 2]
    # 2 is labeled now: only it is searched; its neighbours (1, 3) join, the labeled rows leave
    assert seals.candidates(POINTS, [0, 2]).tolist() == [1, 3]
    assert searched == [[0], [2]] and seals.queries == 2
    assert seals.candidates(POINTS, [0, 2], taken=[3]).tolist() == [1]  # nothing new to search
    assert searched == [[0], [2]]


def test_seals_starts_over_when_a_label_is_removed():
    seals = SealsCandidates(10, k=2)
    seals.candidates(POINTS, [0, 9])
    # 9's label was cleared: its neighbours 7 and 8 are no longer candidates
    assert seals.candidates(POINTS, [0]).tolist() == [1, 2]


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_seals_needs_a_whole_k_of_at_least_one(k):
    with pytest.raises(ValueError, match="k must be a whole number"):
        SealsCandidates(10, k=k)


def test_seals_refuses_positions_outside_the_pool_and_embeddings_of_another():
    with pytest.raises(ValueError, match=r"labeled positions must lie in 0\.\.9"):
        SealsCandidates(10, k=2).candidates(POINTS, [10])
    with pytest.raises(ValueError, match="embeddings have 9 rows; this candidate pool has 10"):
        SealsCandidates(10, k=2).candidates(POINTS[:9], [0])
