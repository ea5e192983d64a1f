from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
import sqlite3
import time

import storage
from storage import SKIP, snapshot
from storage.project import writing


def test_round_inputs_agree_with_the_single_reads(project):
    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), validation_size=2))
    validation = storage.reserve_validation(project)
    a, b, c, d = [item.id for item in storage.usable_items(project) if item.id not in validation][:4]
    storage.create_round(project, strategy="random", selector="random", item_ids=[a, b, c], scores=[0] * 3, n_labeled=0)
    storage.set_label(project, a, "cat")
    storage.set_label(project, b, SKIP)
    storage.set_label(project, d, "dog")  # labeled outside any round
    storage.set_label(project, validation[0], "bird")
    inputs = storage.read_round_inputs(project)
    assert inputs.settings == storage.load_settings(project)
    assert inputs.item_ids == [item.id for item in storage.usable_items(project)]
    assert inputs.latest == storage.current_round(project)
    assert inputs.open_in_latest == len(storage.round_queue(project, inputs.latest.id)) == 1
    assert inputs.budget_left == storage.budget_left(project) == 7
    assert inputs.training == storage.training_labels(project) == {a: 0, d: 1}
    assert inputs.validation == storage.validation_labels(project) == {validation[0]: 2}
    assert inputs.taken == {a, b, c, d, *validation}
    assert inputs.candidates == [i for i in inputs.item_ids if i not in inputs.taken]
    assert inputs.next_index == 1


def test_round_inputs_are_one_snapshot(project, monkeypatch):
    """A label saved while the inputs are being read is in none of them, not in some."""
    read_round = snapshot._round

    def label_between_reads(row):
        storage.set_label(project, 7, "cat")  # another connection commits mid-read
        return read_round(row)

    storage.create_round(project, strategy="random", selector="random", item_ids=[7], scores=[0], n_labeled=0)
    monkeypatch.setattr(snapshot, "_round", label_between_reads)
    inputs = storage.read_round_inputs(project)
    assert inputs.training == {}
    assert inputs.open_in_latest == 1  # the queue as it was before the label
    assert storage.training_labels(project) == {7: 0}  # the label itself was saved


def test_items_no_longer_usable_are_not_taken(project):
    a, b, c = [item.id for item in storage.usable_items(project)][:3]
    storage.create_round(project, strategy="random", selector="random", item_ids=[a, b], scores=[0, 0], n_labeled=0)
    storage.set_label(project, a, "cat")
    storage.set_label(project, c, SKIP)
    storage.mark_missing(project, {a: "file not found", c: "file not found"})
    inputs = storage.read_round_inputs(project)
    assert inputs.taken == {b}  # a stays queued, c keeps its skip: neither is usable any more
    assert a not in inputs.item_ids and c not in inputs.candidates and b not in inputs.candidates
    inputs.candidates.clear()  # each call gives a list of its own
    assert len(inputs.candidates) == len(inputs.item_ids) - 1


def _statements(monkeypatch) -> list[str]:
    """The SQL every connection the snapshot opens runs, as it runs it."""
    seen: list[str] = []
    opened = snapshot.opened

    @contextlib.contextmanager
    def traced(project):
        with opened(project) as db:
            db.conn.set_trace_callback(seen.append)
            yield db

    monkeypatch.setattr(snapshot, "opened", traced)
    return seen


def test_the_snapshot_reads_the_items_table_once(project, monkeypatch):
    """The items list is the one pass over every item: the items taken are found from the labels and the queue."""
    a, b = [item.id for item in storage.usable_items(project)][:2]
    storage.create_round(project, strategy="random", selector="random", item_ids=[a], scores=[0], n_labeled=0)
    storage.set_label(project, b, "dog")
    seen = _statements(monkeypatch)
    assert storage.read_round_inputs(project).taken == {a, b}
    scans = []
    with contextlib.closing(sqlite3.connect(project.db_path)) as conn:
        for sql in seen:
            if sql.lstrip().upper().startswith("SELECT"):
                plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
                scans += [sql for step in plan if re.match(r"SCAN (items|i)\b", step)]
    assert len(scans) == 1 and "FROM items WHERE status = 'ok' ORDER BY id" in scans[0]


def test_the_snapshot_builds_its_items_without_a_garbage_collection(project):
    """Tuples of ints and strings make no cycles: the collector waits while a million of them are built."""
    now = time.time()
    with writing(project) as db:
        db.conn.executemany(
            "INSERT INTO items (path, sha256, width, height, mode, status, added_at) "
            "VALUES (?, ?, 8, 8, 'RGB', 'ok', ?)",
            [(f"more/{i:05d}.png", f"{i:064x}", now) for i in range(5_000)],
        )
    passes: list[int] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(note)
    try:
        inputs = storage.read_round_inputs(project)
    finally:
        gc.callbacks.remove(note)
    assert len(inputs.items) == 5_020
    assert len(passes) <= 1  # the one when it resumes; before, a pass every 700 new objects (7 here)
    assert gc.isenabled()
