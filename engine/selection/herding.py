"""Herding: the examples whose mean stays closest to the mean of the whole set (Welling 2009; DeepCore's Herding).

Greedy: with t examples chosen (their embeddings summing to S) and the mean
mu of all N embeddings, the next is the free x that brings the chosen mean
closest to mu:

    argmin_x |(S + x) / (t + 1) - mu|^2 = argmin_x |r - x|^2 = argmin_x (|x|^2 - 2 x.r),  r = (t + 1) mu - S

so each pick is one matrix-vector product X r (float32), never an N x N
matrix. Positions already taken count as chosen (they are in S and t). Equal
distances are broken with `rng` (the lowest position without one). Balance
over classes with `engine.selection.balance.class_balanced` (each class then
matches its own mean).
"""

from __future__ import annotations

import numpy as np

from engine.score import PoolScores
from engine.selection.kcenter import check_embeddings, check_selection

__all__ = ["herding", "herding_distances", "herding_order"]

COMPACT_SHARE = 0.25  # drop the chosen rows from the working copy once they are this share of it


def herding(pool: PoolScores, taken, budget: int, *, rng=None) -> np.ndarray:
    """Herding on the embeddings: the example that brings the chosen mean closest to the mean of all first."""
    taken = check_selection(len(pool.probs), taken, budget)
    return herding_order(check_embeddings(pool.embeddings), taken, budget, rng)


def herding_order(X: np.ndarray, taken: np.ndarray, budget: int, rng: np.random.Generator | None) -> np.ndarray:
    """`budget` positions of float32 `X` [N, D] (none of `taken`), int64, in the order herding picks them."""
    n = len(X)
    chosen = np.empty(budget, np.int64)
    if budget == 0:
        return chosen
    mu = X.mean(axis=0, dtype=np.float64)
    total = X[taken].sum(axis=0, dtype=np.float64)  # S, in float64: it grows with every pick
    count = len(taken)  # t
    free = np.ones(n, bool)
    free[taken] = False
    rows = np.flatnonzero(free)  # the working copy's positions in X
    work = X[rows]  # float32, only the free rows (compacted as picks accumulate)
    sq = np.einsum("ij,ij->i", work, work)  # |x|^2
    alive = np.ones(len(rows), bool)
    for i in range(budget):
        r = ((count + 1) * mu - total).astype(np.float32)
        score = sq - 2.0 * (work @ r)  # |r - x|^2 - |r|^2
        score[~alive] = np.inf
        best = score.min()
        ties = np.flatnonzero(score == best)
        at = int(ties[0] if rng is None or len(ties) == 1 else ties[rng.integers(len(ties))])
        position = int(rows[at])
        chosen[i] = position
        total += X[position]
        count += 1
        alive[at] = False
        if (~alive).sum() > COMPACT_SHARE * len(alive) and i + 1 < budget:  # stop multiplying chosen rows
            rows, work, sq = rows[alive], work[alive], sq[alive]
            alive = np.ones(len(rows), bool)
    return chosen


def herding_distances(pool: PoolScores, chosen, taken) -> np.ndarray:
    """float64 [len(chosen)]: how far the chosen mean was from the mean of all (Euclidean) once each of
    `chosen` was added, in that order after `taken` (the score the pages show)."""
    X = check_embeddings(pool.embeddings)
    taken = np.asarray([] if taken is None else taken, np.int64)
    chosen = np.asarray(chosen, np.int64)
    mu = X.mean(axis=0, dtype=np.float64)
    sums = X[taken].sum(axis=0, dtype=np.float64) + np.cumsum(X[chosen].astype(np.float64), axis=0)
    counts = len(taken) + np.arange(1, len(chosen) + 1)
    return np.linalg.norm(sums / counts[:, None] - mu, axis=1)
