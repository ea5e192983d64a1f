"""The pool scored in shards writes the same scores as one process (the sharded, two-process case runs as a
torchrun stage in test_launch.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.distributed.scoring import score_files, score_sharded
from engine.distributed.world import World
from engine.models import build_model
from engine.score import score_pool

pytestmark = pytest.mark.distributed

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def pool(n: int = 700) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8)


def test_one_process_writes_the_files_too(tmp_path):
    images = pool(300)
    model = build_model("proxy_tiny", 4, 16, seed=3)
    got = score_sharded(model, images, NORM, tmp_path, batch_size=128, device="cpu", here=World())
    want = score_pool(model, images, NORM, batch_size=128, device="cpu")
    np.testing.assert_array_equal(got.probs, want.probs)
    np.testing.assert_array_equal(np.load(score_files(tmp_path)[1]), want.embeddings)
