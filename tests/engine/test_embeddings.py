"""The pool's embeddings: embedded a chunk of the pool at a time, merged with the cached rows in id order."""

from __future__ import annotations

import numpy as np

import engine.embeddings as embeddings_module
from engine.embeddings import Backbone, embed_images, pool_embeddings
from engine.models import model_from_config
from engine.ssl import SSLConfig, backbone_config


class CountedRows:
    """A pool's images that note how many rows each read took out of them (a memmap stands behind in the app)."""

    def __init__(self, images: np.ndarray):
        self.images, self.reads = images, []
        self.shape, self.dtype = images.shape, images.dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows):
        out = np.asarray(self.images[rows])
        self.reads.append(len(out))
        return out


def _backbone() -> Backbone:
    config = backbone_config(SSLConfig(depth=8, width=8), 8)
    return Backbone("ssl", model_from_config(config, seed=0).eval(), 8, ((0.5,) * 3, (0.25,) * 3), "c0ffee")


def test_the_pool_is_embedded_a_chunk_at_a_time_and_merged_with_the_cache_in_id_order(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings_module, "EMBED_CHUNK", 4, raising=False)
    backbone = _backbone()
    images = np.random.default_rng(0).integers(0, 256, (15, 3, 8, 8), dtype=np.uint8)
    ids = np.arange(1, 16, dtype=np.int64) * 10
    expected = embed_images(backbone, images, "cpu").astype(np.float16)
    even = np.arange(0, 15, 2)  # 8 rows cached first; the 7 others sort between them
    first = CountedRows(images[even])
    np.testing.assert_allclose(pool_embeddings(tmp_path, backbone, ids[even], first, "cpu"), expected[even], atol=2e-3)
    pool = CountedRows(images)
    progress: list[float] = []
    rows = pool_embeddings(tmp_path, backbone, ids, pool, "cpu", progress.append)
    assert max(first.reads) <= 4 and max(pool.reads) <= 4  # a read of all 8, then of the 7 new ones, before
    assert sum(pool.reads) == 7  # the new rows only, each read once
    assert rows.dtype == np.float16 and rows.shape == (15, backbone.dim)
    np.testing.assert_allclose(rows, expected, atol=2e-3)
    assert progress == sorted(progress) and progress[-1] == 1.0
    cached_ids = np.load(embeddings_module.embedding_paths(tmp_path, backbone)[1])
    assert cached_ids.tolist() == ids.tolist()
    again = pool_embeddings(tmp_path, backbone, ids[::-1], CountedRows(images[::-1]), "cpu")
    np.testing.assert_array_equal(again, rows[::-1])  # all cached: read back in the order asked
