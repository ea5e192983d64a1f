"""k-center greedy selection, exact and fast.

The greedy of Sener & Savarese, "Active Learning for Convolutional Neural
Networks: A Core-Set Approach" (ICLR 2018), as used in Algorithm 1 of Coleman
et al., "Selection via Proxy" (ICLR 2020): repeatedly pick the candidate whose
Euclidean distance to its nearest chosen point (labeled or already picked) is
largest, ties to the lowest pool position.

Every path compares one distance: the squared Euclidean distance summed in
float64 over the float32 coordinates (`sq_distances`). Faster arithmetic
(FAISS's float32 ||x||^2 - 2x.c + ||c||^2, float64 BLAS) is only used to bound
that value, never to decide a pick, so all paths pick identically.

Paths: `k_center_lazy` (FAISS for the nearest labeled point, then a lazy greedy
over upper bounds; the CPU default), `k_center_torch` (one vectorized pass over
the pool per pick; for CUDA), `k_center_numpy` (the SVP reference's way, a
baseline for benchmarks).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import torch

# Relative error bounds of the fast arithmetic, about 4x the worst case of a
# length-D float32 / float64 dot product, so bounds stay valid with margin.
F32_REL = 2.0**-21
F64_REL = 2.0**-50
FAISS_K = 8  # nearest labeled points fetched per candidate
CHUNK_BYTES = 4 << 20  # float32 rows per FAISS search / norm block: caps temporaries
# float64 temporaries per torch update: cache-sized on CPU (3x faster than
# whole-pool passes there), large on CUDA where launches cost more than bytes.
TORCH_CHUNK_BYTES = {"cpu": 4 << 20, "cuda": 256 << 20}

__all__ = [
    "check_embeddings",
    "check_selection",
    "k_center_distances",
    "k_center_greedy",
    "k_center_lazy",
    "k_center_numpy",
    "k_center_torch",
    "sq_distances",
]


def check_embeddings(embeddings, *, keep_tensor: bool = False):
    """Validated float32 [N, D] embeddings: C-contiguous numpy, or (with
    keep_tensor and a tensor given) a tensor on its own device."""
    if isinstance(embeddings, torch.Tensor):
        t = embeddings.detach()
        if not keep_tensor:
            return check_embeddings(t.cpu().numpy())
        _check_shape(tuple(t.shape))
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ValueError("embeddings contain NaN or inf; rescore the pool (did the proxy diverge?)")
        return t
    X = np.asarray(embeddings)
    _check_shape(X.shape)
    if X.dtype.kind not in "fiu":
        raise ValueError(f"embeddings must be numeric, got dtype {X.dtype}")
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        X = np.ascontiguousarray(X, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise ValueError(
            f"embeddings contain NaN or inf (in float32) in {len(bad)} rows, "
            f"e.g. rows {bad[:5].tolist()}; rescore the pool (did the proxy diverge?)"
        )
    return X


def _check_shape(shape: tuple) -> None:
    if len(shape) != 2 or shape[1] == 0:
        raise ValueError(f"embeddings must be a 2-D array [N, D] with D >= 1, got shape {shape}")


def check_selection(n: int, labeled, budget: int) -> np.ndarray:
    """Validated `labeled` as int64 [L] for a pool of n positions, and a budget
    within 0..n - L. Raises ValueError saying what is wrong."""
    if labeled is None:
        labeled = np.empty(0, np.int64)
    if isinstance(labeled, torch.Tensor):
        labeled = labeled.detach().cpu().numpy()
    lab = np.asarray(labeled)
    if lab.ndim != 1:
        raise ValueError(f"labeled must be a 1-D array of pool positions, got shape {lab.shape}")
    if lab.size == 0:
        lab = np.empty(0, np.int64)
    elif lab.dtype.kind not in "iu":
        raise ValueError(f"labeled must hold integer pool positions, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    out = lab[(lab < 0) | (lab >= n)]
    if len(out):
        raise ValueError(f"labeled positions out of range 0..{n - 1}: {out[:5].tolist()}")
    uniq, counts = np.unique(lab, return_counts=True)
    if len(uniq) != len(lab):
        raise ValueError(f"labeled positions repeat: {uniq[counts > 1][:5].tolist()}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be an integer, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if budget > n - len(lab):
        raise ValueError(
            f"budget {budget} is larger than the {n - len(lab)} candidates ({n} pool positions, {len(lab)} labeled)"
        )
    return lab


def draw_first(taken: np.ndarray, rng: np.random.Generator | None) -> int:
    """The first center when nothing is labeled: a uniform draw among the
    positions not taken (the same draw in every path)."""
    if rng is None:
        raise ValueError("nothing is labeled, so the first center is drawn at random: pass rng")
    cand = np.flatnonzero(~taken)
    return int(cand[rng.integers(len(cand))])


def sq_distances(rows: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, [k] float64, from rows [k, D] to point [D].

    The one definition of distance for every path: float64 differences,
    squared and summed per row (bit-identical whatever the row's position).
    """
    diff = np.asarray(rows, dtype=np.float64) - np.asarray(point, dtype=np.float64)
    np.square(diff, out=diff)
    return diff.sum(axis=1)


def _screened_min(rows64: np.ndarray, rows_sq: np.ndarray, x64: np.ndarray, x_sq: float, current: float) -> float:
    """min(current, min exact sq distance from x to rows), computing exact
    distances only for rows whose float64-BLAS estimate could beat `current`."""
    if len(rows64) == 0:
        return current
    if len(rows64) <= 16:
        return min(current, float(sq_distances(rows64, x64).min()))
    approx = rows_sq + x_sq - 2.0 * (rows64 @ x64)
    slack = (len(x64) + 8) * F64_REL * (rows_sq + x_sq)
    near = np.flatnonzero(approx - slack < current)
    if len(near) == 0:
        return current
    return min(current, float(sq_distances(rows64[near], x64).min()))


class _Seeds:
    """The starting centers (labeled points) behind a FAISS index.

    `search` gives float32 estimates of each query's nearest seeds; `exact_min`
    turns them into the exact (float64) squared distance to the nearest seed.
    """

    def __init__(self, X: np.ndarray, seeds: np.ndarray):
        self.rows64 = X[seeds].astype(np.float64)  # [L, D]
        self.sq = np.einsum("ij,ij->i", self.rows64, self.rows64)
        self.k = min(FAISS_K, len(seeds))
        self.rel = F32_REL
        self.index: Any = faiss.IndexFlatL2(X.shape[1])  # a GpuIndex when moved to the GPU
        self.index.add(np.ascontiguousarray(X[seeds]))
        if _faiss_gpus() > 0:
            # this process's GPU (torchrun gives each rank its own), not always GPU 0
            gpu = torch.cuda.current_device() if torch.cuda.is_available() else 0
            self.index = faiss.index_cpu_to_gpu(_faiss_resources(), gpu, self.index)
            self.rel = 2.0**-9  # cuBLAS may use TF32 products

    def slack(self, x_sq: np.ndarray | float) -> np.ndarray | float:
        """Bound on |FAISS estimate - exact| for queries with squared norms x_sq."""
        return (self.rows64.shape[1] + 8) * self.rel * (x_sq + self.sq.max())

    def search(self, X: np.ndarray, rows: np.ndarray | None = None):
        """For pool rows (default all): (nearest estimate [n], k-th estimate
        [n], seed ids [n, k]), float32, float32, int64."""
        n = len(X) if rows is None else len(rows)
        first, kth = np.empty(n, np.float32), np.empty(n, np.float32)
        ids = np.empty((n, self.k), np.int64)
        for s, block in _blocks(X, rows):
            dist, idx = self.index.search(np.ascontiguousarray(block), self.k)
            first[s : s + len(block)], kth[s : s + len(block)], ids[s : s + len(block)] = dist[:, 0], dist[:, -1], idx
        return first, kth, ids

    def exact_min(self, x64: np.ndarray, x_sq: float, kth: float, ids: np.ndarray) -> float:
        """Exact squared distance from x to its nearest seed.

        Seeds outside the FAISS top-k have estimates >= kth, so exact values
        >= kth - slack; if the best of the top-k is below that, it is the min.
        """
        best = float(sq_distances(self.rows64[ids], x64).min())
        if self.k == len(self.rows64) or best <= kth - self.slack(x_sq):
            return best
        return _screened_min(self.rows64, self.sq, x64, x_sq, best)


def _faiss_gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


_GPU_RESOURCES: list = []


def _faiss_resources():
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    return _GPU_RESOURCES[0]


def k_center_lazy(
    X: np.ndarray,
    labeled: np.ndarray,
    budget: int,
    rng: np.random.Generator | None = None,
    *,
    shard: tuple[int, int] | None = None,
    best_of: BestOf | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-center greedy with FAISS seeding and lazily refreshed bounds.

    X float32 [N, D]; labeled: validated pool positions. Returns (picks int64
    [budget], squared distances float64 [budget] at pick time; inf for a
    random first center). Extra memory is O(N + (L + budget) * D).

    `shard` (start, stop) and `best_of` split the pool between processes
    (`engine.distributed.kcenter`): this process keeps the candidates of rows
    start..stop only, and `best_of(value, position)` returns the best of every
    process's leader (largest value, ties to the lowest position). Each
    process reads only its rows and the centers from X (a memmap is fine), and
    all of them return the same picks as one process would.
    """
    picks = np.empty(budget, np.int64)
    sqd = np.empty(budget, np.float64)
    if budget == 0:
        return picks, sqd
    N = len(X)
    taken = np.zeros(N, bool)
    taken[labeled] = True
    n = 0
    if len(labeled) == 0:
        picks[0], sqd[0] = draw_first(taken, rng), np.inf
        taken[picks[0]] = True
        n = 1
    start, stop = shard if shard is not None else (0, N)
    cand = start + np.flatnonzero(~taken[start:stop])
    greedy = _LazyGreedy(X, cand, labeled if len(labeled) else picks[:1], budget)
    while n < budget:
        value, pos = greedy.leader()
        if best_of is not None:
            value, pos = best_of(value, pos)
        picks[n], sqd[n] = pos, value
        greedy.add_center(pos)
        n += 1
    return picks, sqd


BestOf = Callable[[float, int], tuple[float, int]]


class _LazyGreedy:
    """The candidates `cand` of X behind a max-heap of upper bounds on their squared distance to the nearest
    center (the seeds, then each center added).

    Min distances only ever shrink as centers are added, so a stale value is an
    upper bound. The heap, keyed (-bound, position), pops the leader; it is
    refreshed against the centers added since its last refresh and leads only
    if it still does with an exact, current value. Ties go to the lowest index
    because the key orders them so.
    """

    def __init__(self, X: np.ndarray, cand: np.ndarray, seeds: np.ndarray, capacity: int):
        self.X = X
        self.seeds = _Seeds(X, seeds)
        self.x_sq = _row_sq(X, cand)
        first, self.kth, self.ids = self.seeds.search(X, cand)
        bound = first + self.seeds.slack(self.x_sq)
        bound[~np.isfinite(bound)] = np.inf
        self.base = int(cand[0]) if len(cand) else 0
        self.slot = np.full(int(cand[-1]) - self.base + 1 if len(cand) else 0, -1, np.int64)
        self.slot[cand - self.base] = np.arange(len(cand))  # candidate position - base -> row in the arrays
        self.fresh = np.full(len(cand), -1, np.int64)  # centers counted in the bound; -1: seeds estimated only
        self.heap = list(zip((-bound).tolist(), cand.tolist(), strict=True))
        heapq.heapify(self.heap)
        self.centers = np.empty((capacity, X.shape[1]), np.float64)
        self.centers_sq = np.empty(capacity, np.float64)
        self.n = 0  # centers added (not counting the seeds)

    def leader(self) -> tuple[float, int]:
        """(exact squared distance to the nearest center, position) of the farthest candidate, ties to the
        lowest position; (-inf, -1) when no candidate is left."""
        heap = self.heap
        while heap:
            neg, pos = heap[0]
            r = self.slot[pos - self.base]
            if self.fresh[r] == self.n:
                return -neg, pos
            x64 = self.X[pos].astype(np.float64)
            value = -neg
            if self.fresh[r] < 0:
                value = self.seeds.exact_min(x64, self.x_sq[r], self.kth[r], self.ids[r])
                self.fresh[r] = 0
            value = _screened_min(
                self.centers[self.fresh[r] : self.n], self.centers_sq[self.fresh[r] : self.n], x64, self.x_sq[r], value
            )
            self.fresh[r] = self.n
            heapq.heapreplace(heap, (-value, pos))
        return -np.inf, -1

    def add_center(self, pos: int) -> None:
        """Make `pos` a center; it leaves the candidates when it is one of them (then it is the leader)."""
        if self.heap and self.heap[0][1] == pos:
            heapq.heappop(self.heap)
        self.centers[self.n] = self.X[pos]
        self.centers_sq[self.n] = _row_sq(self.X, np.array([pos]))[0]
        self.n += 1


def _blocks(X: np.ndarray, rows: np.ndarray | None):
    """(start, rows of X) in blocks of about CHUNK_BYTES; views when rows is None."""
    step = max(256, CHUNK_BYTES // (4 * X.shape[1]))
    n = len(X) if rows is None else len(rows)
    for s in range(0, n, step):
        yield s, (X[s : s + step] if rows is None else X[rows[s : s + step]])


def _row_sq(X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Squared norms float64 [n] of the given rows (default all), blockwise."""
    out = np.empty(len(X) if rows is None else len(rows), np.float64)
    for s, block in _blocks(X, rows):
        part = block.astype(np.float64)
        out[s : s + len(part)] = np.einsum("ij,ij->i", part, part)
    return out


def k_center_torch(
    X,
    labeled: np.ndarray,
    budget: int,
    rng: np.random.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy with one vectorized min-distance update per center.

    X float32 [N, D] (numpy or tensor); runs on `device` (default: X's device).
    Memory-bandwidth bound: meant for CUDA, where a pass over the pool is
    cheap; on CPU it is correct but slow. Float64 distances computed as in
    `sq_distances`; no host sync inside the loop. Returns as `k_center_lazy`.
    """
    Xt = torch.as_tensor(X)
    Xt = Xt.to(device=device if device is not None else Xt.device, dtype=torch.float32)
    N, D = Xt.shape
    min_d = torch.full((N,), float("inf"), dtype=torch.float64, device=Xt.device)
    picks = torch.empty(budget, dtype=torch.int64, device=Xt.device)
    sqd = torch.empty(budget, dtype=torch.float64, device=Xt.device)
    if budget == 0:
        return picks.cpu().numpy(), sqd.cpu().numpy()
    chunk = max(1, TORCH_CHUNK_BYTES.get(Xt.device.type, 4 << 20) // (8 * D))
    lab = torch.as_tensor(labeled, dtype=torch.int64, device=Xt.device)
    for i in range(len(labeled)):
        _torch_update(Xt, min_d, Xt[lab[i]], chunk)
    min_d[lab] = float("-inf")
    start = 0
    if len(labeled) == 0:
        taken = np.zeros(N, bool)
        first = torch.tensor([draw_first(taken, rng)], device=Xt.device)
        picks[0], sqd[0] = first[0], float("inf")
        min_d[first] = float("-inf")
        _torch_update(Xt, min_d, Xt[first[0]], chunk)
        start = 1
    for n in range(start, budget):
        idx = torch.argmax(min_d)  # first maximum: ties to the lowest index
        picks[n], sqd[n] = idx, min_d[idx]
        min_d.index_fill_(0, idx.view(1), float("-inf"))
        _torch_update(Xt, min_d, Xt[idx], chunk)
    return picks.cpu().numpy(), sqd.cpu().numpy()


def _torch_update(Xt: torch.Tensor, min_d: torch.Tensor, c: torch.Tensor, chunk: int) -> None:
    """min_d = min(min_d, sq distance to c), in row chunks to cap temporaries."""
    c64 = c.to(torch.float64)
    for s in range(0, Xt.shape[0], chunk):
        diff = Xt[s : s + chunk].to(torch.float64) - c64
        d = diff.square_().sum(dim=1)
        torch.minimum(min_d[s : s + chunk], d, out=min_d[s : s + chunk])


def k_center_numpy(
    X: np.ndarray, labeled: np.ndarray, budget: int, rng: np.random.Generator | None = None, blas_dtype=None
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: recompute distances from each center to the whole pool.

    The SVP reference's way (its `k_center_greedy` calls scipy's cdist from
    each labeled point and each new center to the pool), keeping one
    min-distance vector instead of its (|labeled|+budget) x N matrix.
    blas_dtype None: direct differences as in `sq_distances`, exact. Else
    ||x||^2 - 2x.c + ||c||^2 by BLAS in that dtype, on a copy of X: a stronger
    baseline, but its rounding breaks exact ties between duplicated
    non-integer points (float64) or flips near-ties (float32).
    Returns as `k_center_lazy`.
    """
    N = len(X)
    update = _direct_update(X) if blas_dtype is None else _blas_update(X, blas_dtype)
    min_d = np.full(N, np.inf)
    for pos in labeled:
        update(min_d, pos)
    min_d[labeled] = -np.inf
    picks = np.empty(budget, np.int64)
    sqd = np.empty(budget, np.float64)
    for n in range(budget):
        if n == 0 and len(labeled) == 0:
            idx, sqd[0] = draw_first(np.zeros(N, bool), rng), np.inf
        else:
            idx = int(np.argmax(min_d))  # first maximum: ties to the lowest index
            sqd[n] = min_d[idx]
        picks[n] = idx
        min_d[idx] = -np.inf
        update(min_d, idx)
    return picks, sqd


def _direct_update(X: np.ndarray):
    """min_d <- min(min_d, sq_distances(X, X[pos])), in cache-sized blocks."""
    step = max(256, CHUNK_BYTES // (8 * X.shape[1]))

    def update(min_d: np.ndarray, pos: int) -> None:
        for s in range(0, len(X), step):
            np.minimum(min_d[s : s + step], sq_distances(X[s : s + step], X[pos]), out=min_d[s : s + step])

    return update


def _blas_update(X: np.ndarray, dtype):
    """min_d <- min(min_d, ||x||^2 - 2 x.c + ||c||^2) with BLAS in dtype."""
    Xd = X.astype(dtype)
    x_sq = np.einsum("ij,ij->i", Xd, Xd)

    def update(min_d: np.ndarray, pos: int) -> None:
        np.minimum(min_d, x_sq - 2 * (Xd @ Xd[pos]) + x_sq[pos], out=min_d)

    return update


def k_center_greedy(
    embeddings,
    labeled,
    budget: int,
    *,
    rng: np.random.Generator | None = None,
    device: str | torch.device | None = None,
    return_distances: bool = False,
):
    """Pool positions chosen by k-center greedy, in the order chosen.

    embeddings: float32 [N, D] (numpy, or a torch tensor); labeled: pool
    positions already chosen (int, unique, in range); budget: how many to pick
    (0 <= budget <= N - len(labeled)). rng draws the first center when nothing
    is labeled (required then). device: None = CUDA torch path if embeddings
    are a CUDA tensor, else FAISS + lazy greedy on CPU; "auto" = CUDA when
    available; "cpu" or "cuda[:i]" force a path.

    Returns int64 [budget]; with return_distances also float64 [budget]: each
    pick's Euclidean distance to its nearest earlier center (inf for a random
    first center). Raises ValueError on bad arguments.
    """
    target = _pick_device(embeddings, device)
    X = check_embeddings(embeddings, keep_tensor=target.type == "cuda")
    lab = check_selection(len(X), labeled, budget)
    if len(lab) == 0 and budget > 0 and rng is None:
        raise ValueError("nothing is labeled, so the first center is drawn at random: pass rng")
    if target.type == "cuda":
        picks, sqd = k_center_torch(X, lab, budget, rng, target)
    else:
        picks, sqd = k_center_lazy(X, lab, budget, rng)
    return (picks, np.sqrt(sqd)) if return_distances else picks


def _pick_device(embeddings, device) -> torch.device:
    if device is None:
        on_cuda = isinstance(embeddings, torch.Tensor) and embeddings.is_cuda
        return embeddings.device if on_cuda else torch.device("cpu")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    if target.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} for k-center; use auto, cpu or cuda")
    return target


def k_center_distances(embeddings, labeled, chosen) -> np.ndarray:
    """Euclidean distance float64 [len(chosen)] from each chosen position to
    the nearest of `labeled` and the chosen positions before it (inf if none):
    what k-center greedy saw when it picked them in this order."""
    X = check_embeddings(embeddings)
    lab = check_selection(len(X), labeled, 0)
    order = check_selection(len(X), chosen, 0)
    if np.isin(order, lab).any():
        raise ValueError("chosen positions must not be labeled ones")
    out = np.full(len(order), np.inf)
    if len(order) == 0:
        return out
    if len(lab):
        seeds = _Seeds(X, lab)
        _first, kth, ids = seeds.search(X, order)
        x_sq = _row_sq(X, order)
        for i, pos in enumerate(order):
            out[i] = seeds.exact_min(X[pos].astype(np.float64), x_sq[i], kth[i], ids[i])
    for i in range(1, len(order)):
        out[i] = min(out[i], float(sq_distances(X[order[:i]], X[order[i]]).min()))
    return np.sqrt(out)
