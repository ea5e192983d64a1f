"""Exact k-center greedy with the pool split across the ranks of a job.

Each rank keeps the candidates of its contiguous shard (their bounds and exact minimum distances, as
`engine.selection.kcenter.k_center_lazy` does for the whole pool); each pick is its shard's leader, then
one all-gather (`world.best_of`) to agree on the farthest, ties to the lowest position. Every rank reads
only its rows and the chosen centers from the embeddings (a memmap of the cache file is enough) and
returns the same picks, identical to one process's, ties included.
"""

from __future__ import annotations

import numpy as np

from engine.distributed.world import World, best_of, world
from engine.selection.kcenter import check_embeddings, check_selection, k_center_lazy

__all__ = ["k_center_sharded"]

BLOCK_BYTES = 16 << 20  # rows read at a time when checking a memmap


def k_center_sharded(
    embeddings: np.ndarray,
    labeled,
    budget: int,
    *,
    rng: np.random.Generator | None = None,
    here: World | None = None,
    return_distances: bool = False,
):
    """`engine.selection.kcenter.k_center_greedy` across the ranks of the joined process group.

    Call it in every rank with the same arguments (the same `rng` state when nothing is labeled: the first
    center is drawn in each rank alike). `embeddings` float32 [N, D] may be a read-only memmap: it is
    never copied whole. Returns int64 [budget] (and the Euclidean distances with return_distances).
    """
    here = here or world()
    X = embeddings if _usable(embeddings) else check_embeddings(embeddings)
    lab = check_selection(len(X), labeled, budget)
    if len(lab) == 0 and budget > 0 and rng is None:
        raise ValueError("nothing is labeled, so the first center is drawn at random: pass rng")
    picks, sqd = k_center_lazy(X, lab, budget, rng, shard=here.shard(len(X)), best_of=best_of)
    return (picks, np.sqrt(sqd)) if return_distances else picks


def _usable(X) -> bool:
    """A float32 C-contiguous [N, D] array (a memmap too) is used as it is, once its rows are found finite."""
    if not (isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous):
        return False
    if X.shape[1] == 0:
        return False
    step = max(1, BLOCK_BYTES // (4 * X.shape[1]))
    # when a row is not finite, check_embeddings copies the array once to say which
    return all(np.isfinite(X[start : start + step]).all() for start in range(0, len(X), step))
