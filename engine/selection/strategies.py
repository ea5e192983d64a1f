"""Selection strategies: plain functions from pool scores to pool positions.

Every strategy is `strategy(pool, labeled, budget, *, rng) -> int64 [budget]`:
pool positions, most informative first, never one of `labeled` (the positions
that count as already chosen). A higher score always means more informative;
equal scores go to the lowest position. `STRATEGIES` maps names to functions;
`strategy_scores` gives the per-item score the UI shows.

Uncertainty sampling follows Settles, "Active Learning Literature Survey"
(2009, section 3.1): least confidence, margin (Scheffer et al. 2001) and
entropy (Shannon). Its batches are balanced across predicted classes
(`balanced_top_k`): a proxy unsure of one class would otherwise fill a batch
with it, which is how uncertainty sampling falls below random (Emam et al.
2021, "Active learning at the ImageNet scale", balanced selection).
k-center greedy is Sener & Savarese (ICLR 2018), as in Coleman et al.,
"Selection via Proxy" (ICLR 2020); see `engine.selection.kcenter`.
TypiClust, ProbCover and the hybrid of TypiClust then least confidence are
cold-start strategies for embeddings from a backbone (`engine.selection.coldstart`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.names import COLD_START, DISTANCE_STRATEGIES
from engine.score import PoolScores
from engine.selection.coldstart import (
    hybrid,
    probcover,
    probcover_scores,
    probcover_with_radius,
    typiclust,
    typiclust_scores,
    use_typicality,
)
from engine.selection.coreset import el2n, forgetting, grand, statistic, top_k_random_ties
from engine.selection.herding import herding, herding_distances
from engine.selection.kcenter import check_selection, k_center_distances, k_center_greedy
from engine.selection.submodular import facility_location, gains_in_order, graph_cut

Strategy = Callable[..., np.ndarray]

__all__ = [
    "COLD_START",
    "DISTANCE_STRATEGIES",
    "SCORES",
    "STRATEGIES",
    "Strategy",
    "balanced_top_k",
    "entropy",
    "entropy_scores",
    "hybrid",
    "k_center_greedy",
    "kcenter",
    "least_confidence",
    "least_confidence_scores",
    "margin",
    "margin_scores",
    "probcover",
    "random_sample",
    "select_with_scores",
    "strategy_scores",
    "top_k",
    "typiclust",
]


def check_probs(probs) -> np.ndarray:
    """Validated probabilities as float64 [N, C]; ValueError if not 2-D or not finite."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"probs must be a 2-D array [N, C] with C >= 1, got shape {p.shape}")
    if p.dtype.kind not in "fiu":
        raise ValueError(f"probs must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if len(bad):
        raise ValueError(
            f"probs contain NaN or inf in {len(bad)} rows, e.g. rows {bad[:5].tolist()}; "
            "rescore the pool (did the proxy diverge?)"
        )
    return p


def least_confidence_scores(probs) -> np.ndarray:
    """1 - max class probability, float64 [N]: 0 when sure, up to 1 - 1/C."""
    return 1.0 - check_probs(probs).max(axis=1)


def margin_scores(probs) -> np.ndarray:
    """1 - (top probability - second probability), float64 [N]; with one class, 1 - p."""
    p = check_probs(probs)
    if p.shape[1] == 1:
        return 1.0 - p[:, 0]
    top2 = -np.partition(-p, 1, axis=1)[:, :2]  # [N, 2], largest first
    return 1.0 - (top2[:, 0] - top2[:, 1])


def entropy_scores(probs) -> np.ndarray:
    """Shannon entropy in nats, float64 [N], with 0 log 0 = 0."""
    p = check_probs(probs)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logp).sum(axis=1)


def top_k(scores: np.ndarray, labeled, budget: int) -> np.ndarray:
    """The `budget` unlabeled positions with the highest scores, int64, best
    first, equal scores in ascending position (a stable sort)."""
    scores = np.asarray(scores)
    lab = check_selection(len(scores), labeled, budget)
    free = np.ones(len(scores), bool)
    free[lab] = False
    cand = np.flatnonzero(free)
    order = np.argsort(-scores[cand], kind="stable")[:budget]
    return cand[order].astype(np.int64)


def balanced_top_k(scores: np.ndarray, predicted: np.ndarray, labeled, budget: int) -> np.ndarray:
    """`top_k` with equal quotas per predicted class, int64 positions, highest score first.

    Each class predicted among the unlabeled positions gets an equal share of
    the budget (shares differ by at most one, the extra ones to the classes
    whose best score is highest); a class with fewer candidates than its
    share passes the rest on. Within a class the highest scores win; equal
    scores go to the lowest position.
    """
    scores, predicted = np.asarray(scores, dtype=np.float64), np.asarray(predicted)
    lab = check_selection(len(scores), labeled, budget)
    if predicted.shape != scores.shape:
        raise ValueError(f"predicted must have shape {scores.shape}, got {predicted.shape}")
    free = np.ones(len(scores), bool)
    free[lab] = False
    cand = np.flatnonzero(free)
    by_class_then_score = np.lexsort((cand, -scores[cand], predicted[cand]))
    ordered = cand[by_class_then_score]  # grouped by class, best first in each
    classes = predicted[ordered]
    starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
    rank = np.arange(len(ordered)) - np.repeat(starts, np.diff(np.r_[starts, len(ordered)]))  # rank in class
    chosen = ordered[np.lexsort((ordered, -scores[ordered], rank))[:budget]]
    return chosen[np.lexsort((chosen, -scores[chosen]))].astype(np.int64)


def random_sample(pool: PoolScores, labeled, budget: int, *, rng: np.random.Generator) -> np.ndarray:
    """`budget` unlabeled positions drawn uniformly without replacement with `rng`."""
    lab = check_selection(len(pool.probs), labeled, budget)
    if rng is None:
        raise ValueError("random selection needs rng (a numpy Generator)")
    free = np.ones(len(pool.probs), bool)
    free[lab] = False
    return rng.permutation(np.flatnonzero(free))[:budget].astype(np.int64)


def least_confidence(pool: PoolScores, labeled, budget: int, *, rng=None) -> np.ndarray:
    """Least-confidence sampling: lowest top-class probability first (see `_uncertain_first`)."""
    return _uncertain_first(least_confidence_scores(pool.probs), pool, labeled, budget, rng)


def margin(pool: PoolScores, labeled, budget: int, *, rng=None) -> np.ndarray:
    """Margin sampling: smallest gap between the top two classes first (see `_uncertain_first`)."""
    return _uncertain_first(margin_scores(pool.probs), pool, labeled, budget, rng)


def entropy(pool: PoolScores, labeled, budget: int, *, rng=None) -> np.ndarray:
    """Entropy sampling: highest predictive entropy first (see `_uncertain_first`)."""
    return _uncertain_first(entropy_scores(pool.probs), pool, labeled, budget, rng)


def _uncertain_first(scores: np.ndarray, pool: PoolScores, labeled, budget: int, rng) -> np.ndarray:
    """The highest `scores` first. On an unlabeled pool balanced across the classes the proxy predicts
    (`balanced_top_k`, ties by position); on a labeled set (a core-set) the plain top with ties drawn with
    `rng`, as DeepCore's uncertainty methods keep it: balance by the given labels is the class balancer's
    (`engine.selection.balance.class_balanced`), and `--no-balance` means none."""
    if pool.labels is None:
        return balanced_top_k(scores, _predicted(pool), labeled, budget)
    return top_k_random_ties(scores, labeled, budget, rng)


def _predicted(pool: PoolScores) -> np.ndarray:
    return np.asarray(pool.probs).argmax(axis=1)  # [N]


def kcenter(pool: PoolScores, labeled, budget: int, *, rng=None) -> np.ndarray:
    """k-center greedy over the embeddings (rng draws the first center when
    nothing is labeled); across processes for a huge pool when the job runs in several
    (`engine.distributed.launch.k_center_model`, the same picks)."""
    from engine.distributed.launch import k_center_model

    return k_center_model(pool.embeddings, labeled, budget, rng=rng)


STRATEGIES: dict[str, Strategy] = {
    "random": random_sample,
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "kcenter": kcenter,
    "typiclust": typiclust,
    "probcover": probcover,
    "hybrid": hybrid,
    "forgetting": forgetting,
    "el2n": el2n,
    "grand": grand,
    "facility_location": facility_location,
    "graph_cut": graph_cut,
    "herding": herding,
}


def _zeros(pool: PoolScores, chosen: np.ndarray, labeled) -> np.ndarray:
    return np.zeros(len(chosen))


def _from_probs(score_fn) -> Callable[[PoolScores, np.ndarray, object], np.ndarray]:
    return lambda pool, chosen, labeled: score_fn(np.asarray(pool.probs)[chosen])


def _hybrid_scores(pool: PoolScores, chosen: np.ndarray, labeled) -> np.ndarray:
    if use_typicality(pool, labeled if labeled is not None else []):
        return typiclust_scores(pool, chosen, labeled)
    return least_confidence_scores(np.asarray(pool.probs)[chosen])


def _from_statistic(name: str) -> Callable[[PoolScores, np.ndarray, object], np.ndarray]:
    return lambda pool, chosen, labeled: statistic(pool, name)[chosen]


def _gains(kind: str) -> Callable[[PoolScores, np.ndarray, object], np.ndarray]:
    return lambda pool, chosen, labeled: gains_in_order(kind, pool, chosen, labeled)


def _kcenter_scores(pool: PoolScores, chosen: np.ndarray, labeled) -> np.ndarray:
    return k_center_distances(pool.embeddings, labeled, chosen)


# name -> (pool, chosen int64 [k], labeled) -> float64 [k]
SCORES: dict[str, Callable[[PoolScores, np.ndarray, object], np.ndarray]] = {
    "random": _zeros,
    "least_confidence": _from_probs(least_confidence_scores),
    "margin": _from_probs(margin_scores),
    "entropy": _from_probs(entropy_scores),
    "kcenter": _kcenter_scores,
    "typiclust": typiclust_scores,
    "probcover": probcover_scores,
    "hybrid": _hybrid_scores,
    "forgetting": _from_statistic("forgetting"),
    "el2n": _from_statistic("el2n"),
    "grand": _from_statistic("grand"),
    "facility_location": _gains("facility_location"),
    "graph_cut": _gains("graph_cut"),
    "herding": herding_distances,
}


def strategy_scores(name: str, pool: PoolScores, chosen, *, labeled=None) -> np.ndarray:
    """The score shown in the UI for each chosen position, float64 [len(chosen)].

    random: 0; least_confidence, margin, entropy: the strategy's score;
    kcenter: Euclidean distance to the nearest of `labeled` and the chosen
    positions before it, in the order given (inf for the first when nothing is
    labeled) - what k-center greedy saw when it picked it; typiclust: the
    point's typicality; probcover: the pool points within its ball; hybrid:
    the score of the strategy it used; forgetting, el2n, grand: the training
    statistic (engine.selection.coreset); facility_location, graph_cut: the
    gain each point added, in the order given after `labeled`; herding: how far the chosen mean was from
    the mean of all once the point was added, in the order given after `labeled`.
    """
    if name not in SCORES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(SCORES)}")
    order = check_selection(len(pool.probs), chosen, 0)
    return SCORES[name](pool, order, labeled)


def select_with_scores(
    name: str, pool: PoolScores, taken, budget: int, *, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, str]:
    """(picks, the score shown for each, a note for the round's record): `STRATEGIES[name]` then
    `strategy_scores`, except that ProbCover's radius is chosen once and serves both (the note names it)."""
    if name == "probcover":
        picks, scores, delta = probcover_with_radius(pool, taken, budget, rng=rng)
        return picks, scores, f"radius {delta:g}"
    picks = np.asarray(STRATEGIES[name](pool, taken, budget, rng=rng), dtype=np.int64)
    return picks, strategy_scores(name, pool, picks, labeled=taken), ""
