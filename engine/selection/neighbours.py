"""Nearest neighbours for selection, with FAISS: one exact search and the sparse similarity graph built on it.

Never an N x N matrix: each point keeps its `k` nearest, so facility location
and graph cut (engine.selection.submodular) run on 100,000 images.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from engine.selection.kcenter import check_embeddings

__all__ = ["SimilarityGraph", "nearest", "normalized", "similarity_graph"]


def normalized(embeddings) -> np.ndarray:
    """float32 [N, D] rows scaled to unit length (zero rows stay zero)."""
    x = check_embeddings(embeddings)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def nearest(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices [N, k] of each row's k nearest rows (itself first), exact."""
    k = min(k, len(x))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, idx = index.search(x, k)
    return np.maximum(dist, 0.0), idx


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
