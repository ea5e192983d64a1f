"""Nearest neighbours for selection, with FAISS: one exact search, the sparse similarity graph built on it,
and SEALS's candidate pool.

Never an N x N matrix: each point keeps its `k` nearest, so facility location
and graph cut (engine.selection.submodular) run on 100,000 images, and a
round on a huge pool may choose among the labeled images' neighbours only
(`SealsCandidates`; Coleman et al., "Similarity Search for Efficient Active
Learning and Search of Rare Concepts", AAAI 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from engine.selection.kcenter import check_embeddings

__all__ = ["SealsCandidates", "SimilarityGraph", "nearest", "nearest_among", "normalized", "similarity_graph"]

QUERY_CHUNK = 4096  # rows searched at once: bounds the [chunk, k] results, never the pool


def normalized(embeddings) -> np.ndarray:
    """float32 [N, D] rows scaled to unit length (zero rows stay zero)."""
    x = check_embeddings(embeddings)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def nearest(x: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices [Q, k] of the k nearest rows of `x` (float32 [N, D]) to each of `x[rows]`
    (default: every row, Q = N), itself first, exact. The rows are searched in place: no copy of `x` is made."""
    k = min(k, len(x))
    queries = x if rows is None else x[np.asarray(rows, dtype=np.int64)]
    dist, idx = faiss.knn(queries, x, k)
    return np.maximum(dist, 0.0), idx


def nearest_among(x: np.ndarray, base: np.ndarray, k: int, rows: np.ndarray | None = None):
    """Squared distances and pool positions [Q, k] of the k nearest of the rows `base` of `x` (float32 [N, D])
    to each of `x[rows]` (default: every row), exact; k is cut to len(base)."""
    base = np.asarray(base, dtype=np.int64)
    k = min(k, len(base))
    queries = x if rows is None else x[np.asarray(rows, dtype=np.int64)]
    dist, idx = faiss.knn(np.ascontiguousarray(queries), np.ascontiguousarray(x[base]), k)
    return np.maximum(dist, 0.0), base[idx]


@dataclass(frozen=True)
class SimilarityGraph:
    """Symmetric sparse similarities in CSR form: row j's neighbours are `members[starts[j]:starts[j + 1]]`
    with `weights` in [0, 1]; every point is its own neighbour with weight 1."""

    starts: np.ndarray  # int64 [N + 1]
    members: np.ndarray  # int64 [E]
    weights: np.ndarray  # float64 [E]

    def __len__(self) -> int:
        return len(self.starts) - 1

    def row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        return self.members[self.starts[j] : self.starts[j + 1]], self.weights[self.starts[j] : self.starts[j + 1]]


def similarity_graph(embeddings, k: int = 10) -> SimilarityGraph:
    """Cosine similarities (clipped at 0) between each point and its `k` nearest, made symmetric (an edge
    found from either end, with its one weight)."""
    x = normalized(embeddings)
    dist, idx = nearest(x, k + 1)
    sources = np.repeat(np.arange(len(x)), idx.shape[1])
    targets, sims = idx.ravel(), np.clip(1.0 - dist.ravel() / 2.0, 0.0, 1.0)  # unit vectors: |a-b|^2 = 2 - 2cos
    keep = targets >= 0
    rows = np.concatenate([sources[keep], targets[keep], np.arange(len(x))])
    cols = np.concatenate([targets[keep], sources[keep], np.arange(len(x))])
    values = np.concatenate([sims[keep], sims[keep], np.ones(len(x))])
    values[rows == cols] = 1.0
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    first = np.r_[True, (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])]  # one edge per pair
    rows, cols, values = rows[first], cols[first], values[first]
    starts = np.searchsorted(rows, np.arange(len(x) + 1)).astype(np.int64)
    return SimilarityGraph(starts, cols.astype(np.int64), values.astype(np.float64))


class SealsCandidates:
    """SEALS's candidate pool over fixed embeddings of `n` rows: the union of the `k` nearest neighbours of every
    labeled row, less the rows already taken.

    As in the paper, each labeled row is searched once, the first time it is seen labeled, so the pool grows
    incrementally as labels arrive and a round searches only its new labels; the neighbours are found among
    every row (a neighbour labeled later simply leaves the pool). The instance keeps only that state (two
    flags per row), not the embeddings: each call passes them, and they must be the same fixed space every
    time (a backbone's, not a retrained proxy's). A labeled row that lost its label starts the search over.
    """

    def __init__(self, n: int, k: int):
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        self.k = int(k)
        self.searched = np.zeros(n, bool)  # rows whose neighbours are in `near`
        self.near = np.zeros(n, bool)  # the union of those neighbours
        self.queries = 0  # rows searched so far (each once)

    def __len__(self) -> int:
        return len(self.near)

    def candidates(self, embeddings, labeled, taken=()) -> np.ndarray:
        """int64 positions, ascending: the neighbours of the `labeled` rows of `embeddings` (float32 [n, D]) that
        are not in `taken` (the labeled rows are taken too: never a candidate)."""
        labeled = self._positions(labeled, "labeled")
        if self.searched.any() and not np.isin(np.flatnonzero(self.searched), labeled).all():
            self.searched[:] = False  # a label was removed: its neighbours no longer belong
            self.near[:] = False
        new = labeled[~self.searched[labeled]]
        if len(new):
            x = check_embeddings(embeddings)
            if len(x) != len(self):
                raise ValueError(f"embeddings have {len(x)} rows; this candidate pool has {len(self)}")
            for start in range(0, len(new), QUERY_CHUNK):
                chunk = new[start : start + QUERY_CHUNK]
                _, idx = nearest(x, self.k + 1, chunk)  # k + 1: each row finds itself first
                self.near[idx[idx >= 0]] = True
                self.searched[chunk] = True
                self.queries += len(chunk)
        free = self.near.copy()
        free[labeled] = False
        free[self._positions(taken, "taken")] = False
        return np.flatnonzero(free).astype(np.int64)

    def _positions(self, rows, name: str) -> np.ndarray:
        rows = np.unique(np.asarray(rows, dtype=np.int64).ravel())
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self)):
            raise ValueError(f"{name} positions must lie in 0..{len(self) - 1}")
        return rows
