"""The pool scored in contiguous shards, one per rank, into shared files.

Each rank scores its rows (`engine.score.score_pool` on a view of the memmap pool cache: no copy of the
pool) and writes them into the same two .npy files, made by rank 0 under temporary names and moved into
place by rank 0 once every rank has written, so a reader never sees half a file. Shards are cut at the
scoring batch size, so every batch holds the rows it holds in one process's pass and the scores are
identical to one process's for the same weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn

from engine.device import Normalization
from engine.distributed.world import World, barrier, largest, world
from engine.score import PoolScores, batch_size_on, score_pool

__all__ = ["score_files", "score_sharded", "write_shared"]


def score_files(folder: Path) -> tuple[Path, Path]:
    """(probabilities, embeddings): where `score_sharded` writes the pool's scores."""
    return folder / "scores_probs.npy", folder / "scores_embeddings.npy"


def score_sharded(
    model: nn.Module,
    images: np.ndarray,
    normalization: Normalization,
    folder: Path,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    tta: bool = False,
    here: World | None = None,
) -> PoolScores:
    """Score the pool across the ranks of the job; every rank gets the whole result, read-only from the files.

    Call it in every rank with the same model weights. `images` uint8 [N, 3, H, W], a memmap is best.
    """
    here = here or world()
    device = torch.device(device) if device is not None else here.device
    batch = batch_size_on(batch_size, device)
    start, stop = here.shard(len(images), align=batch)
    part = score_pool(model, images[start:stop], normalization, batch, device, tta=tta)
    probs_path, embeddings_path = score_files(Path(folder))
    classes, width = largest([part.probs.shape[1], part.embeddings.shape[1]])  # a rank may have scored none
    probs = write_shared(probs_path, (len(images), classes), np.float32, start, part.probs)
    embeddings = write_shared(embeddings_path, (len(images), width), np.float32, start, part.embeddings)
    return PoolScores(probs=probs, embeddings=embeddings)


def write_shared(path: Path, shape: tuple[int, int], dtype, start: int, rows: np.ndarray) -> np.ndarray:
    """Every rank's `rows`, at its `start`, in one .npy file at `path`; returned read-only (a memmap).

    Rank 0 makes the file under a temporary name, every rank writes its rows, and rank 0 moves the file
    into place once all have: a reader never sees a file with rows missing. Call it in every rank."""
    here = world()
    partial = path.with_name(f".{path.stem}.partial.npy")
    if here.main:
        path.parent.mkdir(parents=True, exist_ok=True)
        open_memmap(partial, mode="w+", dtype=dtype, shape=shape).flush()
    barrier()
    if len(rows):
        out = open_memmap(partial, mode="r+")
        out[start : start + len(rows)] = rows
        out.flush()
        del out
    barrier()
    if here.main:
        _fsync(partial)
        os.replace(partial, path)
    barrier()
    return np.load(path, mmap_mode="r")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
