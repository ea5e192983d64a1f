"""Core-set methods: which examples of a labeled set to keep, from one proxy run.

`labeled_pool` turns `engine.example_stats.score_labeled_set`'s result into
the `PoolScores` every strategy reads (with the labels and the training
statistics), so core-set methods share the strategies' registry and signature
`(pool, taken, budget, *, rng) -> positions`, most worth keeping first. The
uncertainty strategies, random and k-center serve both modes as they are;
these read the statistics the proxy gathered while it trained:

- forgetting (Toneva et al. 2019; kept first: the most forgotten, and the
  never learned before all);
- EL2N (Paul et al. 2021) and last-layer GraNd: the largest early error and
  gradient norm first.

Equal statistics (many examples are never forgotten) are ordered at random
with `rng`, so a tie never favours the order of the files. Balance over
classes with `engine.selection.balance.class_balanced` (DeepCore's setting).
"""

from __future__ import annotations

import numpy as np

from engine.example_stats import LabeledSetScores
from engine.score import PoolScores
from engine.selection.kcenter import check_selection

__all__ = ["STATISTICS", "el2n", "forgetting", "grand", "labeled_pool"]

STATISTICS = ("forgetting", "el2n", "grand")


def labeled_pool(scored: LabeledSetScores, labels: np.ndarray) -> PoolScores:
    """The labeled set as a pool: the trained proxy's scores, the labels and the training statistics."""
    labels = np.asarray(labels)
    if labels.shape != (len(scored.final.probs),):
        raise ValueError(f"labels must have shape ({len(scored.final.probs)},), got {labels.shape}")
    training = scored.training
    per_example = {
        "forgetting": training.forgetting,
        "el2n": training.el2n,
        "grand": training.grand,
        "right_share": training.right_share,
    }
    return PoolScores(scored.final.probs, scored.final.embeddings, labels=labels, per_example=per_example)


def statistic(pool: PoolScores, name: str) -> np.ndarray:
    """The training statistic `name` of every position; ValueError when the pool has none (an unlabeled
    pool, or a labeled set scored without training statistics)."""
    values = pool.per_example.get(name)
    if values is None:
        raise ValueError(
            f"{name} needs the statistics a proxy gathers while it trains on the labeled set "
            "(a core-set run); these scores have none: choose random, an uncertainty method or kcenter"
        )
    if np.isnan(values).all():
        raise ValueError(f"{name} was not recorded in this run (no early training step saw the examples)")
    return np.asarray(values, dtype=np.float64)


def top_k_random_ties(scores: np.ndarray, taken, budget: int, rng: np.random.Generator | None) -> np.ndarray:
    """The `budget` free positions with the highest scores (nan lowest), int64, best first; equal scores in
    an order drawn with `rng` (ascending position without one)."""
    taken = check_selection(len(scores), taken, budget)
    free = np.ones(len(scores), bool)
    free[taken] = False
    candidates = np.flatnonzero(free)
    values = np.nan_to_num(scores[candidates], nan=-np.inf)
    tiebreak = rng.permutation(len(candidates)) if rng is not None else np.arange(len(candidates))
    return candidates[np.lexsort((tiebreak, -values))[:budget]].astype(np.int64)


def _by_statistic(pool: PoolScores, name: str, taken, budget: int, rng) -> np.ndarray:
    check_selection(len(pool.probs), taken, budget)  # a bad argument is named before a missing statistic
    return top_k_random_ties(statistic(pool, name), taken, budget, rng)


def forgetting(pool: PoolScores, taken, budget: int, *, rng=None) -> np.ndarray:
    """Most forgotten first (never learned before all): Toneva et al.'s forgetting events."""
    return _by_statistic(pool, "forgetting", taken, budget, rng)


def el2n(pool: PoolScores, taken, budget: int, *, rng=None) -> np.ndarray:
    """Largest early error first: EL2N, |softmax - one_hot| early in training."""
    return _by_statistic(pool, "el2n", taken, budget, rng)


def grand(pool: PoolScores, taken, budget: int, *, rng=None) -> np.ndarray:
    """Largest early last-layer gradient norm first: GraNd."""
    return _by_statistic(pool, "grand", taken, budget, rng)
