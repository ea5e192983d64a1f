"""Cold-start selection on embeddings: TypiClust and ProbCover, for the first labels.

With few labels an uncertain model's questions carry no information; what
helps then is covering the pool's dense regions with typical examples.

- TypiClust (Hacohen, Dekel and Weinshall, ICML 2022, "Active Learning on a
  Budget"): cluster the pool into labeled + budget clusters (at most
  MAX_CLUSTERS), then take, from the largest clusters that hold no label
  yet, the most typical point: the one whose mean distance to its
  K_TYPICAL nearest cluster-mates is smallest.
- ProbCover (Yehuda, Dekel, Hacohen and Weinshall, NeurIPS 2022): pick the
  points whose delta-balls cover the most not-yet-covered points. delta is
  the largest radius at which ALPHA of the balls are "pure" (all their
  points fall in one k-means cluster, k = the number of classes).

Both read L2-normalised embeddings (the papers use self-supervised features)
and follow engine.selection.strategies's signature: `(pool, labeled, budget, *, rng)` ->
int64 pool positions, best first. `hybrid` switches from TypiClust to
least confidence once SWITCH_PER_CLASS labels per class exist, as DCoM
(Mishal and Weinshall, 2024) switches from typicality to uncertainty.
"""

from __future__ import annotations

import faiss
import numpy as np

from engine.selection.kcenter import check_selection
from engine.selection.neighbours import nearest, normalized

MAX_CLUSTERS = 500  # TypiClust's cap on k-means clusters
MIN_CLUSTER_SIZE = 5  # ... and on the size of a cluster worth a pick
K_TYPICAL = 20  # neighbours that define typicality
ALPHA = 0.95  # ProbCover: share of pure balls the radius must keep
NEIGHBOURS = 100  # ProbCover: nearest points searched per ball (caps the graph's size)
DELTAS = np.round(np.arange(0.05, 1.51, 0.05), 2)
SWITCH_PER_CLASS = 20  # hybrid: labels per class from which uncertainty takes over
KMEANS_ITERATIONS = 25
KMEANS_RESTARTS = 3


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster index int64 [N] of each row of `x` (FAISS k-means, best of KMEANS_RESTARTS)."""
    k = max(1, min(k, len(x)))
    if k == 1:
        return np.zeros(len(x), np.int64)
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=KMEANS_ITERATIONS,
        nredo=KMEANS_RESTARTS,
        seed=int(seed) % (2**31),
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, len(x) // k + 1),
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def typicality(x: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other rows + 1e-5), float64 [N]."""
    n = len(x)
    if n == 1:
        return np.ones(1)
    k = max(1, min(k, n - 1))
    if n <= 4096:
        x64 = x.astype(np.float64)
        norms = (x64 * x64).sum(1)
        sq = np.maximum(norms[:, None] + norms[None, :] - 2 * x64 @ x64.T, 0.0)
        np.fill_diagonal(sq, np.inf)
        distances = np.sqrt(np.partition(sq, k - 1, axis=1)[:, :k])
    else:
        distances = np.sqrt(nearest(x, k + 1)[0][:, 1:])
    return 1.0 / (distances.mean(axis=1) + 1e-5)


def typiclust(
    pool, labeled, budget: int, *, rng: np.random.Generator | None = None, clusters: np.ndarray | None = None
) -> np.ndarray:
    """TypiClust picks: the most typical point of each large cluster without a label, largest first.

    `clusters` (int [N]) replaces the k-means step (tests, callers that
    cluster once). Clusters are visited by (labels in them, then size
    descending, then index); when every cluster has had its turn the visit
    starts over, so a budget larger than the clusters still fills.
    """
    x = normalized(pool.embeddings)
    taken = check_selection(len(x), labeled, budget)
    if budget == 0:
        return np.empty(0, np.int64)
    if clusters is None:
        seed = int(rng.integers(2**31)) if rng is not None else 0
        clusters = kmeans(x, min(len(taken) + budget, MAX_CLUSTERS), seed)
    clusters = np.asarray(clusters, dtype=np.int64)
    free = np.ones(len(x), bool)
    free[taken] = False
    picked = np.zeros(len(x), bool)
    ids, sizes = np.unique(clusters, return_counts=True)
    held = np.bincount(clusters[taken], minlength=ids.max() + 1)[ids]
    order = np.lexsort((ids, -sizes, held))
    big = order[sizes[order] >= MIN_CLUSTER_SIZE]
    visit = ids[big if len(big) else order]
    chosen: list[int] = []
    stalled = 0
    i = 0
    while len(chosen) < budget and stalled < len(visit):
        members = np.flatnonzero((clusters == visit[i % len(visit)]) & ~picked)  # labeled ones count for density
        i += 1
        if not free[members].any():
            stalled += 1
            continue
        stalled = 0
        scores = typicality(x[members], K_TYPICAL if len(members) > 2 * K_TYPICAL else max(1, len(members) // 2))
        scores[~free[members]] = -np.inf
        pick = int(members[np.argmax(scores)])
        chosen.append(pick)
        free[pick] = False
        picked[pick] = True
    return np.asarray(chosen, dtype=np.int64)


def typiclust_scores(pool, chosen: np.ndarray, labeled) -> np.ndarray:
    """Typicality of each chosen point among its K_TYPICAL nearest pool neighbours (the UI's score)."""
    x = normalized(pool.embeddings)
    if not len(chosen):
        return np.zeros(0)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    k = max(1, min(K_TYPICAL, len(x) - 1))
    dist, _ = index.search(x[np.asarray(chosen)], k + 1)
    return 1.0 / (np.sqrt(np.maximum(dist[:, 1:], 0.0)).mean(axis=1) + 1e-5)


# ---------------------------------------------------------------- ProbCover


def ball_graph(x: np.ndarray, delta: float, neighbours: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """CSR (starts int64 [N+1], members int64 [E]): the points within `delta` of each point, itself included.

    Only the `neighbours` nearest points of each are searched, which bounds
    the graph; a ball holding more is cut to them.
    """
    dist, idx = nearest(x, neighbours)
    inside = (dist <= delta * delta) & (idx >= 0)
    counts = inside.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return starts, idx[inside].astype(np.int64)


def choose_delta(x: np.ndarray, num_clusters: int, seed: int = 0, alpha: float = ALPHA) -> float:
    """The largest radius in DELTAS whose balls are pure for at least `alpha` of the points.

    A ball is pure when every point in it shares its centre's k-means cluster
    (k = `num_clusters`, the number of classes): the paper's way to choose
    delta without labels.
    """
    clusters = kmeans(x, num_clusters, seed)
    dist, idx = nearest(x, NEIGHBOURS)
    other = clusters[idx] != clusters[:, None]
    # distance to the nearest point of another cluster (inf when none is among the neighbours)
    nearest_other = np.where(other, dist, np.inf).min(axis=1)
    best = float(DELTAS[0])
    for delta in DELTAS:
        if np.mean(nearest_other > delta * delta) >= alpha:
            best = float(delta)
    return best


def probcover(
    pool, labeled, budget: int, *, rng: np.random.Generator | None = None, delta: float | None = None
) -> np.ndarray:
    """ProbCover picks: greedy maximum coverage of delta-balls, the labeled points' balls covered first.

    Each pick is the free point whose ball holds the most uncovered points;
    ties go to a random order drawn from `rng`, not to the lowest position:
    pools are often stored class folder by class folder, and with a small
    radius most balls tie. Once everything is covered the rest of the budget
    is drawn at random with `rng`, as the paper does.
    """
    x = normalized(pool.embeddings)
    taken = check_selection(len(x), labeled, budget)
    if budget == 0:
        return np.empty(0, np.int64)
    rng = rng if rng is not None else np.random.default_rng(0)
    if delta is None:
        classes = max(2, np.asarray(pool.probs).shape[1])
        delta = choose_delta(x, classes, seed=int(rng.integers(2**31)))
    tiebreak = rng.permutation(len(x)).astype(np.int64)  # higher wins among equal gains
    starts, members = ball_graph(x, delta)
    owners = np.repeat(np.arange(len(x)), np.diff(starts))  # edge e: members[e] lies in ball owners[e]
    by_member = np.argsort(members, kind="stable")
    member_starts = np.searchsorted(members[by_member], np.arange(len(x) + 1))
    degree = np.diff(starts).astype(np.int64)  # uncovered points in each ball
    covered = np.zeros(len(x), bool)
    free = np.ones(len(x), bool)
    free[taken] = False

    def cover(centre: int) -> None:
        new = members[starts[centre] : starts[centre + 1]]
        new = new[~covered[new]]
        covered[new] = True
        for point in new:  # every ball holding a newly covered point loses it
            balls = owners[by_member[member_starts[point] : member_starts[point + 1]]]
            degree[balls] -= 1

    for point in taken:
        cover(int(point))
    chosen: list[int] = []
    while len(chosen) < budget:
        gains = np.where(free, degree, -1)
        best = int(np.argmax(gains * len(x) + tiebreak))
        if gains[best] <= 0:
            break
        chosen.append(best)
        free[best] = False
        cover(best)
    if len(chosen) < budget:
        rest = np.flatnonzero(free)
        chosen += rng.permutation(rest)[: budget - len(chosen)].tolist()
    return np.asarray(chosen, dtype=np.int64)


def probcover_scores(pool, chosen: np.ndarray, labeled, delta: float | None = None) -> np.ndarray:
    """The number of pool points within `delta` of each chosen point (the UI's score). Give the radius the
    picks used (`probcover_with_radius`); without one it is chosen again with k-means seed 0, which need not
    be the picks' radius."""
    x = normalized(pool.embeddings)
    if not len(chosen):
        return np.zeros(0)
    if delta is None:
        delta = choose_delta(x, max(2, np.asarray(pool.probs).shape[1]))
    starts, _ = ball_graph(x, delta)
    return np.diff(starts)[np.asarray(chosen)].astype(np.float64)


def probcover_with_radius(
    pool, labeled, budget: int, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """ProbCover's picks, their scores and the one radius that chose the picks and measures the scores (issue 25:
    the number shown beside an image came from a radius chosen again with another k-means seed). The picks are
    those of `probcover(pool, labeled, budget, rng=rng)`."""
    rng = rng if rng is not None else np.random.default_rng(0)
    classes = max(2, np.asarray(pool.probs).shape[1])
    delta = choose_delta(normalized(pool.embeddings), classes, seed=int(rng.integers(2**31)))
    picks = probcover(pool, labeled, budget, rng=rng, delta=delta)
    return picks, probcover_scores(pool, picks, labeled, delta=delta), delta


def hybrid(pool, labeled, budget: int, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """TypiClust while fewer than SWITCH_PER_CLASS labels per class exist, then least confidence."""
    from engine.selection.strategies import least_confidence

    if use_typicality(pool, labeled):
        return typiclust(pool, labeled, budget, rng=rng)
    return least_confidence(pool, labeled, budget, rng=rng)


def use_typicality(pool, labeled) -> bool:
    """Whether `hybrid` still picks by typicality for this many labels."""
    classes = max(2, np.asarray(pool.probs).shape[1])
    return len(np.asarray(labeled).reshape(-1)) < SWITCH_PER_CLASS * classes
