"""The pool scored in shards across ranks is bit-identical to one process's scores (gloo, 2 ranks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.distributed.scoring import score_files, score_sharded
from engine.distributed.world import World
from engine.models import build_model
from engine.score import score_pool
from tests.engine.distributed.ranks import run_ranks

pytestmark = pytest.mark.distributed

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def pool(n: int = 700) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8)


BATCHES = (128, 1000)  # shards of several batches; one batch for 700 images: rank 1 scores nothing


def score_in_ranks(images_path: str, folder: str) -> list[dict]:
    model = build_model("proxy_tiny", 4, 16, seed=3)
    images = np.load(images_path, mmap_mode="r")
    out = []
    for batch in BATCHES:
        scores = score_sharded(model, images, NORM, Path(folder) / str(batch), batch_size=batch, device="cpu")
        out.append({"probs": np.asarray(scores.probs).copy(), "embeddings": np.asarray(scores.embeddings).copy()})
    return out


def test_sharded_scores_equal_one_process_scores(tmp_path):
    images = pool()
    np.save(tmp_path / "pool.npy", images)
    model = build_model("proxy_tiny", 4, 16, seed=3)
    results = run_ranks(score_in_ranks, 2, tmp_path / "ranks", str(tmp_path / "pool.npy"), str(tmp_path / "out"))
    for i, batch in enumerate(BATCHES):
        want = score_pool(model, images, NORM, batch_size=batch, device="cpu")
        for got in results:
            np.testing.assert_array_equal(got[i]["probs"], want.probs)
            np.testing.assert_array_equal(got[i]["embeddings"], want.embeddings)
        probs, embeddings = score_files(tmp_path / "out" / str(batch))
        assert sorted(p.name for p in probs.parent.iterdir()) == sorted([probs.name, embeddings.name])  # no partials


def test_one_process_writes_the_files_too(tmp_path):
    images = pool(300)
    model = build_model("proxy_tiny", 4, 16, seed=3)
    got = score_sharded(model, images, NORM, tmp_path, batch_size=128, device="cpu", here=World())
    want = score_pool(model, images, NORM, batch_size=128, device="cpu")
    np.testing.assert_array_equal(got.probs, want.probs)
    np.testing.assert_array_equal(np.load(score_files(tmp_path)[1]), want.embeddings)
