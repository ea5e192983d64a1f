"""One class balancer for any selection method (small-text's ClassBalancer, DeepCore's class-balanced setting).

`class_balanced(method)` splits the budget over the classes in proportion to
how many free positions each has (largest remainders get the spare ones,
ties to the lower class), runs `method` on each class's positions alone, and
interleaves the picks by their rank within their class. The classes are the
pool's given labels (a labeled set, for a core-set) or, without labels, the
classes the proxy predicts (an unlabeled pool).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.score import PoolScores
from engine.selection.kcenter import check_selection

Strategy = Callable[..., np.ndarray]

__all__ = ["class_balanced", "class_shares"]


def class_shares(counts: np.ndarray, budget: int) -> np.ndarray:
    """int64 [C]: how many of `budget` picks each class gets, in proportion to its `counts` (free positions
    per class): the whole parts, then one more each for the largest remainders (ties to the lower class)."""
    counts = np.asarray(counts, dtype=np.int64)
    if budget < 0 or budget > counts.sum():
        raise ValueError(f"cannot pick {budget} of {int(counts.sum())} positions")
    if budget == 0:
        return np.zeros(len(counts), np.int64)
    shares, remainders = np.divmod(budget * counts, counts.sum())  # exact: budget * count / total
    spare = budget - int(shares.sum())  # the fractional parts add up to it: fewer than the classes
    # each fractional part is under one, so `spare` classes have one, and room for one more pick
    shares[np.lexsort((np.arange(len(counts)), -remainders))[:spare]] += 1
    return shares


def pool_classes(pool: PoolScores) -> np.ndarray:
    """The class of every position: its given label, else the proxy's prediction."""
    if pool.labels is not None:
        return np.asarray(pool.labels)
    return np.asarray(pool.probs).argmax(axis=1)


def class_balanced(method: Strategy) -> Strategy:
    """`method` with its budget shared out over the classes (see the module docstring)."""

    def balanced(pool: PoolScores, labeled, budget: int, *, rng=None) -> np.ndarray:
        taken = check_selection(len(pool.probs), labeled, budget)
        classes = pool_classes(pool)
        free = np.ones(len(classes), bool)
        free[taken] = False
        names = np.unique(classes)
        members = [np.flatnonzero(classes == c) for c in names]
        shares = class_shares(np.array([free[m].sum() for m in members]), budget)
        picks, ranks = [], []
        for positions, share in zip(members, shares, strict=True):
            if share == 0:
                continue
            own_taken = np.flatnonzero(~free[positions])
            chosen = method(pool.subset(positions), own_taken, int(share), rng=rng)
            picks.append(positions[chosen])
            ranks.append(np.arange(len(chosen)))
        if not picks:
            return np.empty(0, np.int64)
        chosen, rank = np.concatenate(picks), np.concatenate(ranks)
        return chosen[np.argsort(rank, kind="stable")].astype(np.int64)

    balanced.__name__ = f"class_balanced_{getattr(method, '__name__', 'method')}"
    balanced.__doc__ = f"{method.__doc__ or ''} Balanced over classes (engine.selection.balance)."
    return balanced
