"""Selection rounds and their ranked queues of items to label.

An item is queued at most once over the whole project, so `budget_left` is
simply the budget minus the queue length. Validation items never enter a
queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from storage.project import Project, StorageError, opened, read_settings, writing


@dataclass(frozen=True)
class Round:
    """One selection round. index 0 is the random initial batch; seconds are
    wall-clock; n_labeled counts training labels when the round was made;
    proxy_val_acc is the selector's accuracy on the proxy_val_n validation
    images labeled then (proxy_val_n is None for a round made before
    schema version 5, which did not record it)."""

    id: int
    index: int
    strategy: str
    selector: str
    created_at: float
    train_s: float | None
    score_s: float | None
    select_s: float | None
    proxy_val_acc: float | None
    n_labeled: int
    proxy_val_n: int | None


_ROUND_SQL = (
    "SELECT id, idx, strategy, selector, created_at, train_s, score_s, select_s, proxy_val_acc, n_labeled, "
    "proxy_val_n FROM rounds "
)


def create_round(
    project: Project,
    *,
    strategy: str,
    selector: str,
    item_ids: Sequence[int],
    scores: Sequence[float],
    n_labeled: int,
    train_s: float | None = None,
    score_s: float | None = None,
    select_s: float | None = None,
    proxy_val_acc: float | None = None,
    proxy_val_n: int | None = None,
    guesses: Sequence[int] | None = None,
    confidences: Sequence[float] | None = None,
    index: int | None = None,
) -> Round:
    """Create the next round with its queue, in one transaction.

    item_ids are in rank order (most informative first), scores[i] belongs
    to item_ids[i]; proxy_val_acc comes with proxy_val_n, the number of
    validation images it was measured on; guesses[i] (a class position) and confidences[i] are the
    selector's prediction for it, shown to the annotator (None: no guesses).
    Raises StorageError, writing nothing, if an accuracy comes without its n
    (or is no share of it), lengths differ,
    an id repeats, an item is unusable, reserved for validation or already
    queued, the batch exceeds the budget left, or `index` is given and is
    not the next round's (round 0 made by two processes at once).
    """
    item_ids = [int(i) for i in item_ids]
    stored = [_score(s) for s in scores]
    if len(item_ids) != len(stored):
        raise StorageError(f"{len(item_ids)} items but {len(stored)} scores; give one score per item")
    if len(set(item_ids)) != len(item_ids):
        raise StorageError("a round cannot list the same item twice")
    guessed = _guesses(guesses, confidences, len(item_ids))
    _check_accuracy(proxy_val_acc, proxy_val_n)
    with writing(project) as db:
        # the index first: a maker that lost a race learns that, not which of its items the winner queued
        next_index = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM rounds").fetchone()[0]
        if index is not None and index != next_index:
            raise StorageError("this batch was already chosen, by another tab or the worker; reload the page")
        index = next_index
        _check_queueable(db, item_ids)
        left = _budget_left(db)
        if len(item_ids) > left:
            raise StorageError(f"the round has {len(item_ids)} items but only {left} are left in the budget")
        cursor = db.execute(
            "INSERT INTO rounds (idx, strategy, selector, created_at, train_s, score_s, select_s, "
            "proxy_val_acc, n_labeled, proxy_val_n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                index,
                strategy,
                selector,
                time.time(),
                train_s,
                score_s,
                select_s,
                proxy_val_acc,
                int(n_labeled),
                None if proxy_val_n is None else int(proxy_val_n),
            ),
        )
        round_id = cursor.lastrowid
        class_ids = dict(db.execute("SELECT position, id FROM classes WHERE position IS NOT NULL").fetchall())
        rows = [
            (round_id, rank, item_id, score, class_ids.get(guess), confidence)
            for rank, (item_id, score, (guess, confidence)) in enumerate(zip(item_ids, stored, guessed, strict=True))
        ]
        db.conn.executemany(
            "INSERT INTO queue (round_id, rank, item_id, score, guess_class_id, guess_confidence) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        return _round(db.execute(_ROUND_SQL + "WHERE id = ?", (round_id,)).fetchone())


def _check_accuracy(accuracy: float | None, n: int | None) -> None:
    """An accuracy is stored only with the number of images it was measured on, as a share of them."""
    if accuracy is None:
        if n is not None:
            raise StorageError(f"proxy_val_n is {n} but there is no proxy_val_acc; give both or neither")
        return
    if n is None or int(n) < 1:
        raise StorageError(
            f"proxy_val_acc {accuracy} needs proxy_val_n, the number (at least 1) of validation images it was "
            "measured on"
        )
    if not 0.0 <= accuracy <= 1.0 or abs(accuracy * n - round(accuracy * n)) > 1e-6 * n:
        raise StorageError(f"proxy_val_acc {accuracy} is not a share of {n} validation images")


def _guesses(guesses, confidences, n: int) -> list[tuple[int | None, float | None]]:
    if guesses is None:
        return [(None, None)] * n
    confidences = [None] * n if confidences is None else [_score(c) for c in confidences]
    if len(guesses) != n or len(confidences) != n:
        raise StorageError(f"{n} items but {len(guesses)} guesses and {len(confidences)} confidences")
    return [(int(g), c) for g, c in zip(guesses, confidences, strict=True)]


def _score(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _check_queueable(db: sqlite_utils.Database, item_ids: list[int]) -> None:
    for item_id in item_ids:
        row = db.execute(
            "SELECT i.status, i.is_validation, q.round_id FROM items i "
            "LEFT JOIN queue q ON q.item_id = i.id WHERE i.id = ?",
            (item_id,),
        ).fetchone()
        if row is None:
            raise StorageError(f"no item with id {item_id}")
        status, is_validation, queued_in = row
        if status != "ok":
            raise StorageError(f"item {item_id} is {status} and cannot be queued")
        if is_validation:
            raise StorageError(f"item {item_id} is reserved for validation and cannot be queued")
        if queued_in is not None:
            raise StorageError(f"item {item_id} is already in another batch")


def _round(row: tuple) -> Round:
    return Round(*row)


def current_round(project: Project) -> Round | None:
    """The latest round, or None before the first."""
    with opened(project) as db:
        row = db.execute(_ROUND_SQL + "ORDER BY idx DESC LIMIT 1").fetchone()
    return _round(row) if row else None


def list_rounds(project: Project) -> list[Round]:
    """Every round, oldest first."""
    with opened(project) as db:
        return [_round(row) for row in db.execute(_ROUND_SQL + "ORDER BY idx")]


def get_round(project: Project, round_id: int) -> Round:
    """One round by id; StorageError if unknown."""
    with opened(project) as db:
        row = db.execute(_ROUND_SQL + "WHERE id = ?", (round_id,)).fetchone()
    if row is None:
        raise StorageError(f"no round with id {round_id}")
    return _round(row)


_QUEUE_SQL = (
    "SELECT q.item_id, q.score FROM queue q LEFT JOIN item_states s ON s.item_id = q.item_id WHERE q.round_id = ? "
)
_OPEN = "AND s.state IS NULL "  # neither labeled with an active class nor skipped


def round_queue(project: Project, round_id: int) -> list[tuple[int, float]]:
    """(item id, score) of the round's items neither labeled nor skipped, in rank order."""
    with opened(project) as db:
        return db.execute(_QUEUE_SQL + _OPEN + "ORDER BY q.rank", (round_id,)).fetchall()


def round_items(project: Project, round_id: int) -> list[tuple[int, float]]:
    """(item id, score) of every item of the round, in rank order."""
    with opened(project) as db:
        return db.execute(_QUEUE_SQL + "ORDER BY q.rank", (round_id,)).fetchall()


def round_guesses(project: Project, round_id: int) -> dict[int, tuple[str, float | None]]:
    """item id -> (guessed class name, confidence) for the round's items the selector guessed,
    skipping guesses whose class was removed since."""
    with opened(project) as db:
        rows = db.execute(
            "SELECT q.item_id, c.name, q.guess_confidence FROM queue q JOIN classes c ON c.id = q.guess_class_id "
            "WHERE q.round_id = ? AND c.position IS NOT NULL",
            (round_id,),
        )
        return {item_id: (name, confidence) for item_id, name, confidence in rows}


def open_rounds(project: Project) -> list[Round]:
    """The rounds from the oldest one with open items (neither labeled nor skipped) to the newest,
    oldest first; empty when every queued item is done. A round made early, while the batch
    before it was still open, makes this list two rounds long."""
    with opened(project) as db:
        oldest = db.execute(
            "SELECT MIN(r.idx) FROM rounds r JOIN queue q ON q.round_id = r.id "
            "LEFT JOIN item_states s ON s.item_id = q.item_id WHERE 1 " + _OPEN
        ).fetchone()[0]
        if oldest is None:
            return []
        return [_round(row) for row in db.execute(_ROUND_SQL + "WHERE idx >= ? ORDER BY idx", (oldest,))]


def round_label_times(project: Project, round_id: int) -> list[float]:
    """When each labeled or skipped item of the round got its current label (Unix seconds), ascending."""
    with opened(project) as db:
        rows = db.execute(
            "SELECT s.created_at FROM queue q JOIN item_states s ON s.item_id = q.item_id "
            "WHERE q.round_id = ? AND s.state IS NOT NULL ORDER BY s.created_at",
            (round_id,),
        )
        return [t for (t,) in rows]


def round_complete(project: Project, round_id: int) -> bool:
    """True when every item of the round is labeled or skipped."""
    return not round_queue(project, round_id)


def queued_ids(project: Project) -> list[int]:
    """Every usable item id queued in any round, ascending (an item gone missing since is left out)."""
    with opened(project) as db:
        return [
            i
            for (i,) in db.execute(
                "SELECT q.item_id FROM queue q JOIN items i ON i.id = q.item_id "
                "WHERE i.status = 'ok' ORDER BY q.item_id"
            )
        ]


def budget_left(project: Project) -> int:
    """settings.budget minus the items queued in all rounds so far (never below 0)."""
    with opened(project) as db:
        return _budget_left(db)


def _budget_left(db: sqlite_utils.Database) -> int:
    queued = db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    return max(0, read_settings(db).budget - queued)
