"""Durable, append-only labels.

Each action appends one `labels` row (kind 'label', 'skip' or 'clear') in its
own committed transaction; the current state of an item is its latest row.
Undo appends a row restoring the state before the latest not-yet-undone
action, so repeated undos walk back through the history. Rows store a
stable class id: renaming a class keeps its labels; a label whose class was
removed counts as unlabeled. The view `item_states` (storage.schema) is the one
place that rule is written; every query here reads it.

Sets of ids: `labeled_ids`, `skipped_ids` and `unlabeled_ids` partition the
usable items outside the validation set; `validation_ids` lists that set.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import sqlite_utils

from storage.project import Project, SettingsError, StorageError, opened, writing


class _Skip(enum.Enum):
    SKIP = "skip"

    def __repr__(self) -> str:
        return "SKIP"


SKIP: Final = _Skip.SKIP
"""Pass as the value of `set_label` to skip an item; returned by `current_label`."""


SOURCES: Final = ("typed", "accepted", "bulk", "oracle", "imported")
"""How a label was given: a class key or button, the proxy's guess accepted, a grid selection, the demo oracle,
a file or class subfolders brought with the images (storage.label_import)."""


@dataclass(frozen=True)
class LabelEvent:
    """One row of an item's history. `class_name` is None for a skip or a clear
    (`kind` says which); `created_at` is Unix seconds."""

    item_id: int
    class_name: str | None
    skipped: bool
    annotator: str
    created_at: float
    round_id: int | None
    kind: str = "label"
    source: str | None = None


_EVENT_SQL = (
    "SELECT l.item_id, c.name, l.kind, l.annotator, l.created_at, l.round_id, l.source "
    "FROM labels l LEFT JOIN classes c ON c.id = l.class_id "
)


def _event(row: tuple) -> LabelEvent:
    item_id, name, kind, annotator, created_at, round_id, source = row
    return LabelEvent(item_id, name, kind == "skip", annotator, created_at, round_id, kind, source)


def set_label(
    project: Project,
    item_id: int,
    value: str | _Skip,
    annotator: str = "user",
    round_id: int | None = None,
    source: str | None = None,
) -> LabelEvent:
    """Label `item_id` with a class NAME, or skip it with SKIP; committed before return.

    round_id defaults to the round that queued the item, if any; `source`
    says how the label was given (one of SOURCES). Raises SettingsError for an
    unknown class name or source, StorageError for an unknown or unusable item
    or an unknown round.
    """
    return set_labels(project, [item_id], value, annotator, round_id, source)[0]


def set_labels(
    project: Project,
    item_ids: list[int],
    value: str | _Skip,
    annotator: str = "user",
    round_id: int | None = None,
    source: str | None = None,
) -> list[LabelEvent]:
    """`set_label` for several items in one transaction: all are committed, or none (a grid's bulk label)."""
    _check_source(source)
    with writing(project) as db:
        class_id = None if value is SKIP else _class_id(db, value)
        kind = "skip" if value is SKIP else "label"
        events = []
        for item_id in item_ids:
            _check_item(db, item_id)
            round_for = _round_for(db, item_id, round_id)
            events.append(_append(db, item_id, kind, class_id, annotator, round_for, source=source))
        return events


def clear_label(project: Project, item_id: int, annotator: str = "user") -> LabelEvent:
    """Make `item_id` unlabeled again (appends a 'clear' row); committed before return."""
    with writing(project) as db:
        _check_item(db, item_id)
        return _append(db, item_id, "clear", None, annotator, _round_for(db, item_id, None))


def undo_label(project: Project, item_id: int, annotator: str = "user") -> LabelEvent | None:
    """Undo the latest not-yet-undone action on `item_id` by appending the state
    before it. Returns the appended event, or None when there is nothing to undo."""
    with writing(project) as db:
        _check_item(db, item_id)
        stack = _action_stack(db, item_id)
        if not stack:
            return None
        undone = stack.pop()
        kind, class_id, round_id, source = stack[-1][1:] if stack else ("clear", None, undone[3], None)
        return _append(db, item_id, kind, class_id, annotator, round_id, undoes=undone[0], source=source)


def _action_stack(db: sqlite_utils.Database, item_id: int) -> list[tuple]:
    stack: list[tuple] = []
    rows = db.execute(
        "SELECT id, kind, class_id, round_id, undoes, source FROM labels WHERE item_id = ? ORDER BY id",
        (item_id,),
    )
    for label_id, kind, class_id, round_id, undoes, source in rows:
        if undoes is None:
            stack.append((label_id, kind, class_id, round_id, source))
        elif stack:
            stack.pop()
    return stack


_INSERT = (
    "INSERT INTO labels (item_id, class_id, kind, annotator, created_at, round_id, undoes, source) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _append(db, item_id, kind, class_id, annotator, round_id, undoes=None, source=None) -> LabelEvent:
    cursor = db.execute(_INSERT, (item_id, class_id, kind, str(annotator), time.time(), round_id, undoes, source))
    return _event(db.execute(_EVENT_SQL + "WHERE l.id = ?", (cursor.lastrowid,)).fetchone())


def append_labels(db: sqlite_utils.Database, labels: Iterable[tuple[int, int]], annotator: str, source: str) -> int:
    """Append one 'label' row per (item id, class id), no round, inside the caller's write transaction;
    returns how many. The bulk form of `_append` (one statement for many rows, no event read back):
    the caller has checked every item and class (storage.label_import imports 100,000 labels this way)."""
    _check_source(source)
    now = time.time()
    cursor = db.conn.executemany(
        _INSERT, ((item_id, class_id, "label", str(annotator), now, None, None, source) for item_id, class_id in labels)
    )
    return cursor.rowcount


def _check_source(source: str | None) -> None:
    if source is not None and source not in SOURCES:
        raise SettingsError(f"unknown label source {source!r}; use one of {', '.join(SOURCES)}")


def _check_item(db: sqlite_utils.Database, item_id: int) -> None:
    row = db.execute("SELECT status FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        raise StorageError(f"no item with id {item_id}")
    if row[0] != "ok":
        raise StorageError(f"item {item_id} is {row[0]} and cannot be labeled")


def _class_id(db: sqlite_utils.Database, name: str) -> int:
    row = db.execute("SELECT id FROM classes WHERE name = ? AND position IS NOT NULL", (str(name),)).fetchone()
    if row is None:
        raise SettingsError(f"unknown class {name!r}; add it to the classes first")
    return row[0]


def _round_for(db: sqlite_utils.Database, item_id: int, round_id: int | None) -> int | None:
    if round_id is not None:
        if db.execute("SELECT 1 FROM rounds WHERE id = ?", (round_id,)).fetchone() is None:
            raise StorageError(f"no round with id {round_id}")
        return round_id
    row = db.execute("SELECT round_id FROM queue WHERE item_id = ?", (item_id,)).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------- queries


@dataclass(frozen=True)
class LabeledItem:
    """One row of the label browser: an item labeled, skipped or reserved for validation."""

    item_id: int
    path: str
    class_name: str | None  # None when skipped, unlabeled, or its class was removed
    skipped: bool
    is_validation: bool
    round_index: int | None  # the round that queued it (None for validation items)
    annotator: str | None
    source: str | None
    guess: str | None  # the selector's guess when it queued the item


def labeled_items(project: Project) -> list[LabeledItem]:
    """Every item that is labeled, skipped or in the validation set, by item id."""
    with opened(project) as db:
        rows = db.execute(
            "SELECT i.id, i.path, s.class_name, COALESCE(s.state = 'skip', 0), i.is_validation, r.idx, "
            "CASE WHEN s.state IS NOT NULL THEN s.annotator END, CASE WHEN s.state IS NOT NULL THEN s.source END, "
            "CASE WHEN g.position IS NOT NULL THEN g.name END "
            "FROM items i LEFT JOIN item_states s ON s.item_id = i.id LEFT JOIN queue q ON q.item_id = i.id "
            "LEFT JOIN rounds r ON r.id = q.round_id LEFT JOIN classes g ON g.id = q.guess_class_id "
            "WHERE i.status = 'ok' AND (i.is_validation = 1 OR s.state IS NOT NULL) ORDER BY i.id"
        ).fetchall()
    return [
        LabeledItem(item_id, path, name, bool(skipped), bool(validation), *rest)
        for item_id, path, name, skipped, validation, *rest in rows
    ]


def current_label(project: Project, item_id: int) -> str | _Skip | None:
    """The item's class name, SKIP, or None when unlabeled."""
    with opened(project) as db:
        row = db.execute("SELECT state, class_name FROM item_states WHERE item_id = ?", (item_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return SKIP if row[0] == "skip" else row[1]


_ACTIVE = (
    "SELECT s.item_id, s.position, s.class_name, i.is_validation FROM item_states s JOIN items i ON i.id = s.item_id "
    "WHERE s.state = 'label' AND i.status = 'ok' "
)


def current_labels(project: Project) -> dict[int, str]:
    """item id -> class name for every labeled item, validation included."""
    with opened(project) as db:
        return {item_id: name for item_id, _, name, _ in db.execute(_ACTIVE + "ORDER BY s.item_id")}


def training_labels(project: Project) -> dict[int, int]:
    """item id -> class index (position) of labeled items outside the validation set."""
    with opened(project) as db:
        rows = db.execute(_ACTIVE + "AND i.is_validation = 0 ORDER BY s.item_id")
        return {item_id: position for item_id, position, _, _ in rows}


def validation_labels(project: Project) -> dict[int, int]:
    """item id -> class index (position) of labeled validation items."""
    with opened(project) as db:
        rows = db.execute(_ACTIVE + "AND i.is_validation = 1 ORDER BY s.item_id")
        return {item_id: position for item_id, position, _, _ in rows}


def label_counts(project: Project) -> dict[str, int]:
    """class name -> number of training labels, every class present (0 if none), in class order."""
    with opened(project) as db:
        rows = db.execute(
            "SELECT c.name, COUNT(a.item_id) FROM classes c LEFT JOIN "
            f"({_ACTIVE} AND i.is_validation = 0) a ON a.position = c.position "
            "WHERE c.position IS NOT NULL GROUP BY c.id ORDER BY c.position"
        )
        return dict(rows.fetchall())


@dataclass(frozen=True)
class AnnotatorCounts:
    """What one annotator's work amounts to now: the labels and skips that stand (the item's current
    state is theirs; validation included) and when they last labeled, skipped or undid anything."""

    annotator: str
    labels: int
    skips: int
    last_at: float


def annotator_counts(project: Project) -> list[AnnotatorCounts]:
    """Per annotator (imported labels under their file's name, the demo's oracle), most labels first."""
    with opened(project) as db:
        rows = db.execute(
            "SELECT l.annotator, COALESCE(s.labels, 0), COALESCE(s.skips, 0), MAX(l.created_at) FROM labels l "
            "LEFT JOIN (SELECT st.annotator, SUM(st.state = 'label') AS labels, SUM(st.state = 'skip') AS skips "
            "FROM item_states st JOIN items i ON i.id = st.item_id WHERE i.status = 'ok' GROUP BY st.annotator) s "
            "ON s.annotator = l.annotator GROUP BY l.annotator ORDER BY 2 DESC, 4 DESC"
        )
        return [AnnotatorCounts(*row) for row in rows]


def label_history(project: Project, item_id: int) -> list[LabelEvent]:
    """Every event of `item_id`, oldest first."""
    with opened(project) as db:
        rows = db.execute(_EVENT_SQL + "WHERE l.item_id = ? ORDER BY l.id", (item_id,))
        return [_event(row) for row in rows]


def _ids(project: Project, where: str) -> list[int]:
    with opened(project) as db:
        rows = db.execute(
            "SELECT i.id FROM items i LEFT JOIN item_states s ON s.item_id = i.id "
            f"WHERE i.status = 'ok' AND {where} ORDER BY i.id"
        )
        return [i for (i,) in rows]


def labeled_ids(project: Project) -> list[int]:
    """Items outside the validation set whose current label is a class, ascending."""
    return _ids(project, "i.is_validation = 0 AND s.state = 'label'")


def skipped_ids(project: Project) -> list[int]:
    """Items outside the validation set that are currently skipped, ascending."""
    return _ids(project, "i.is_validation = 0 AND s.state = 'skip'")


def unlabeled_ids(project: Project) -> list[int]:
    """Items outside the validation set with neither a label nor a skip, ascending."""
    return _ids(project, "i.is_validation = 0 AND s.state IS NULL")


def validation_ids(project: Project) -> list[int]:
    """Items reserved for validation, labeled or not, ascending."""
    return _ids(project, "i.is_validation = 1")
