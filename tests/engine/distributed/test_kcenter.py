"""k-center greedy across ranks picks exactly what one process picks, ties included (gloo, 2 and 3 ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.distributed.kcenter import k_center_sharded
from engine.distributed.world import World, shard_range
from engine.selection.kcenter import k_center_greedy
from tests.engine.distributed.ranks import run_ranks

pytestmark = pytest.mark.distributed


def tied_pool(seed: int = 0) -> np.ndarray:
    """Points on an integer grid with many exact duplicates and equal distances: ties everywhere."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(301, 6)).astype(np.float32)
    X[150:170] = X[10]  # a block of duplicates across the shard borders
    return X


CASES = [([3, 77, 200], None), ([], 5)]  # (labeled, seed of the first center's draw when nothing is labeled)
BUDGET = 60


def picks_in_ranks(path: str) -> list[tuple[list, list]]:
    X = np.load(path, mmap_mode="r")  # every rank reads the same file, never a copy of it
    out = []
    for labeled, seed in CASES:
        rng = None if seed is None else np.random.default_rng(seed)
        picks, dist = k_center_sharded(X, labeled, BUDGET, rng=rng, return_distances=True)
        out.append((picks.tolist(), dist.tolist()))
    return out


@pytest.mark.parametrize("size", [2, 3])
def test_sharded_picks_are_one_process_picks(tmp_path, size):
    X = tied_pool()
    np.save(tmp_path / "X.npy", X)
    for rank_result in run_ranks(picks_in_ranks, size, tmp_path / "ranks", str(tmp_path / "X.npy")):
        for (labeled, seed), (picks, dist) in zip(CASES, rank_result, strict=True):
            rng = None if seed is None else np.random.default_rng(seed)
            want, want_dist = k_center_greedy(X, labeled, BUDGET, rng=rng, return_distances=True)
            assert picks == want.tolist()
            np.testing.assert_array_equal(dist, want_dist)


def test_one_rank_of_a_split_sees_only_its_shard_and_agrees_through_best_of():
    """Without a process group, a fake best_of shows the split: each shard's leader competes, and the winner is
    the largest distance with ties to the lowest position, as in one process."""
    X = tied_pool(1)
    want = k_center_greedy(X, [0], 40)
    from engine.selection.kcenter import _LazyGreedy

    shards = [shard_range(len(X), r, 3) for r in range(3)]
    greedies = [_LazyGreedy(X, np.arange(a, b)[np.arange(a, b) != 0], np.array([0]), 40) for a, b in shards]
    got = []
    for _ in range(40):
        leaders = [g.leader() for g in greedies]
        _value, pos = max((v, -p) for v, p in leaders if p >= 0)
        got.append(-pos)
        for g in greedies:
            g.add_center(-pos)
    assert got == want.tolist()


def test_single_process_world_is_the_plain_greedy():
    X = tied_pool(2)
    assert k_center_sharded(X, [1, 2], 30, here=World()).tolist() == k_center_greedy(X, [1, 2], 30).tolist()


def test_bad_embeddings_are_refused_before_any_collective():
    X = tied_pool()
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        k_center_sharded(X, [0], 5, here=World())
    with pytest.raises(ValueError, match="pass rng"):
        k_center_sharded(tied_pool(), [], 5, here=World())
