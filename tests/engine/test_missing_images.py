"""A deleted, moved or damaged image never blocks a round; a damaged pool cache is rebuilt, never trained on."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

import storage
from engine import pool_cache as pc
from engine.round import load_project_pool, run_initial_round, run_round
from tests.support import label_queue


def _item(project, index: int) -> storage.Item:
    return storage.usable_items(project)[index]


def test_a_deleted_image_is_marked_missing_and_skipped_by_the_next_round(labeled_project):
    root = storage.load_settings(labeled_project).image_root
    labeled = storage.labeled_ids(labeled_project)
    unlabeled = next(i for i in storage.usable_items(labeled_project) if i.id not in labeled)
    gone_labeled = next(i for i in storage.usable_items(labeled_project) if i.id == labeled[0])
    for item in (unlabeled, gone_labeled):
        (Path(root) / item.path).unlink()
    made = run_round(labeled_project)  # the cache is built now: both files are gone
    queued = [item_id for item_id, _ in storage.round_items(labeled_project, made.id)]
    assert unlabeled.id not in queued and len(queued) == 4
    reasons = dict(storage.rejected_files(labeled_project))
    assert reasons[unlabeled.path] == reasons[gone_labeled.path] == "missing: file not found"
    assert gone_labeled.id not in storage.training_labels(labeled_project)
    assert len(storage.label_history(labeled_project, gone_labeled.id)) == 1  # its label is kept in the history


def test_a_queued_image_that_disappears_leaves_its_batch_and_frees_its_budget(tiny_project):
    made = run_initial_round(tiny_project)
    queued = [item_id for item_id, _ in storage.round_items(tiny_project, made.id)]
    left = storage.budget_left(tiny_project)
    assert storage.mark_missing(tiny_project, {queued[0]: "file not found"}) == 1
    assert storage.mark_missing(tiny_project, {queued[0]: "file not found"}) == 0  # already out
    assert [i for i, _ in storage.round_queue(tiny_project, made.id)] == queued[1:]
    assert storage.budget_left(tiny_project) == left + 1


def test_an_image_that_no_longer_decodes_is_marked_with_the_reason(tiny_project):
    item = _item(tiny_project, 3)
    path = Path(storage.load_settings(tiny_project).image_root) / item.path
    path.write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    pool = load_project_pool(tiny_project)
    assert item.id not in pool.item_ids.tolist() and len(pool.item_ids) == 29
    reason = dict(storage.rejected_files(tiny_project))[item.path]
    assert reason.startswith("missing: cannot be decoded (")


def test_a_file_that_comes_back_is_usable_again_after_a_rescan(tiny_project):
    item = _item(tiny_project, 0)
    path = Path(storage.load_settings(tiny_project).image_root) / item.path
    data = path.read_bytes()
    path.unlink()
    load_project_pool(tiny_project)
    assert item.id not in [i.id for i in storage.usable_items(tiny_project)]
    path.write_bytes(data)
    storage.ingest(tiny_project, workers=1)
    assert item.id in [i.id for i in storage.usable_items(tiny_project)]


def test_zeroed_pixels_behind_a_valid_header_are_seen_and_rebuilt(tiny_project, monkeypatch):
    pool = load_project_pool(tiny_project)
    size = pool.image_size
    reference = np.asarray(pool.images).copy()
    array_path = tiny_project.cache_dir / f"pool_{size}.npy"
    header = len(array_path.read_bytes()) - reference.nbytes
    with open(array_path, "r+b") as handle:  # same size, same header, blank pixels
        handle.seek(header)
        handle.write(bytes(reference.nbytes))
    monkeypatch.setattr(pc, "_intact", set())  # a new process: nothing checked yet
    assert pc.load_pool_cache(tiny_project.cache_dir, size) is None
    rebuilt = load_project_pool(tiny_project)
    assert np.array_equal(np.asarray(rebuilt.images), reference)


def test_a_cache_without_block_checksums_is_rebuilt(tiny_project, monkeypatch):
    pool = load_project_pool(tiny_project)
    stats_path = tiny_project.cache_dir / f"pool_{pool.image_size}_stats.json"
    stats = json.loads(stats_path.read_text())
    del stats["blocks"]
    stats_path.write_text(json.dumps(stats))
    monkeypatch.setattr(pc, "_intact", set())
    assert pc.load_pool_cache(tiny_project.cache_dir, pool.image_size) is None


def test_unreadable_image_survives_pickling():
    error = pickle.loads(pickle.dumps(pc.UnreadableImage("/a/b.png", "truncated")))
    assert (error.path, error.reason) == ("/a/b.png", "truncated") and "b.png" in str(error)


def test_labels_of_the_next_batch_still_train_after_a_file_goes(labeled_project):
    run_round(labeled_project)
    label_queue(labeled_project)
    root = Path(storage.load_settings(labeled_project).image_root)
    for item in storage.usable_items(labeled_project)[-2:]:
        (root / item.path).unlink()
    for path in labeled_project.cache_dir.glob("pool_*"):
        path.unlink()  # the cache must be rebuilt from the files
    made = run_round(labeled_project)
    assert len(storage.round_items(labeled_project, made.id)) == 4
