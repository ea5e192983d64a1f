"""Core-set runs: which labeled items a run keeps, and the labels it flags as possibly wrong.

A run (the engine's `coreset` job) trains a selector once on the training labels, records per-item
statistics (forgetting events, EL2N, GraNd, its final answer), keeps a share of the items by a
method, and flags as *suspects* the never-learned and most-forgotten items whose label the trained
selector disagrees with. `save_coreset_run` writes a run and its items in one transaction.

A suspect is *reviewed* once a person acted on the item after the run's snapshot (`label_watermark`: a
relabel, even to the same class, a skip or a clear, unless undone again; an undo of an earlier label),
confirmed its label (`confirm_label`), or its label no longer is the one the run trained on; it is
*changed* in that last case. A review carries over to the next run that flags the item again
(`save_coreset_run`), so a new curation does not ask about a label a person already looked at.
Reviewed suspects leave the review list (`open_suspects`); `review_counts` says how many there were,
were reviewed and were changed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from storage.project import Project, StorageError, opened, read_transaction, writing


@dataclass(frozen=True)
class CoresetRun:
    """One core-set run; seconds are wall-clock; val_acc is the selector's on `n_val` validation labels."""

    id: int
    job_id: int | None
    method: str
    keep: float
    balance: bool
    selector: str
    selector_model: str
    n_labeled: int
    n_kept: int
    steps: int | None
    train_s: float | None
    score_s: float | None
    select_s: float | None
    val_acc: float | None
    n_val: int
    label_watermark: int
    created_at: float


@dataclass(frozen=True)
class CoresetRow:
    """What a run says about one training item (engine -> storage). Class values are positions."""

    item_id: int
    label: int  # the class the run trained it as
    kept: bool
    rank: int | None = None  # order among the kept (0 = most worth keeping); None when dropped
    score: float | None = None  # the method's per-item score, higher kept first; None where it has none
    forgetting: float | None = None  # inf: never learned
    el2n: float | None = None
    grand: float | None = None
    predicted: int | None = None  # the trained selector's class
    alternative: int | None = None  # its most likely class other than the label
    confidence: float | None = None  # its probability of the item's label
    right_share: float | None = None  # share of the item's presentations it predicted right while training
    suspect: bool = False


@dataclass(frozen=True)
class CoresetItem:
    """One item of a run, as the Curate page shows it. Class values are names: `label` the class's name even
    if it was removed since; `current`, `predicted` and `alternative` None for a removed class."""

    item_id: int
    path: str
    label: str | None  # the class the run trained it as
    current: str | None  # its label now (None: cleared, skipped or class removed)
    kept: bool
    rank: int | None
    score: float | None
    forgetting: float | None
    el2n: float | None
    grand: float | None
    predicted: str | None
    alternative: str | None
    confidence: float | None
    right_share: float | None
    suspect: bool
    reviewed: bool  # a person acted on it after the run or confirmed its label, or its label changed since
    changed: bool  # a suspect whose label now differs from the one the run trained on

    @property
    def never_learned(self) -> bool:
        return self.forgetting is not None and math.isinf(self.forgetting)


@dataclass(frozen=True)
class ReviewCounts:
    suspects: int
    reviewed: int
    changed: int

    @property
    def open(self) -> int:
        return self.suspects - self.reviewed


_RUN_COLUMNS = (
    "id, job_id, method, keep, balance, selector, selector_model, n_labeled, n_kept, steps, train_s, score_s, "
    "select_s, val_acc, n_val, label_watermark, created_at"
)


def _run(row: tuple) -> CoresetRun:
    values = list(row)
    values[4] = bool(values[4])
    return CoresetRun(*values)


def save_coreset_run(
    project: Project,
    *,
    method: str,
    keep: float,
    balance: bool,
    selector: str,
    selector_model: str,
    label_watermark: int,
    rows: Sequence[CoresetRow],
    job_id: int | None = None,
    steps: int | None = None,
    train_s: float | None = None,
    score_s: float | None = None,
    select_s: float | None = None,
    val_acc: float | None = None,
    n_val: int = 0,
) -> CoresetRun:
    """Write a run and one row per training item in one transaction; StorageError, writing nothing,
    for a keep outside (0, 1], no rows, a repeated or unknown item, a class position the project does
    not have, or kept rows whose ranks are not 0..n_kept-1."""
    if not 0 < keep <= 1:
        raise StorageError(f"keep must lie in (0, 1], got {keep}")
    if not rows:
        raise StorageError("a core-set run needs at least one labeled item")
    ids = [row.item_id for row in rows]
    if len(set(ids)) != len(ids):
        raise StorageError("a core-set run lists an item twice")
    ranks = sorted(row.rank for row in rows if row.kept and row.rank is not None)
    n_kept = sum(row.kept for row in rows)
    if ranks != list(range(n_kept)) or any(row.rank is not None for row in rows if not row.kept):
        raise StorageError("the kept items must be ranked 0..n-1 and only they")
    with writing(project) as db:
        class_ids = dict(db.execute("SELECT position, id FROM classes WHERE position IS NOT NULL").fetchall())
        known = {i for (i,) in db.execute("SELECT id FROM items WHERE status = 'ok'")}
        for row in rows:
            if row.item_id not in known:
                raise StorageError(f"item {row.item_id} is not a usable item of this project")
            for position in (row.label, row.predicted, row.alternative):
                if position is not None and position not in class_ids:
                    raise StorageError(f"class position {position} is not one of the project's classes")
        run_id = db.execute(
            "INSERT INTO coreset_runs (job_id, method, keep, balance, selector, selector_model, n_labeled, n_kept, "
            "steps, train_s, score_s, select_s, val_acc, n_val, label_watermark, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                method,
                float(keep),
                int(balance),
                selector,
                selector_model,
                len(rows),
                n_kept,
                steps,
                train_s,
                score_s,
                select_s,
                val_acc,
                int(n_val),
                int(label_watermark),
                time.time(),
            ),
        ).lastrowid
        db.conn.executemany(
            "INSERT INTO coreset_items (run_id, item_id, class_id, kept, rank, score, forgetting, el2n, grand, "
            "predicted_class_id, alternative_class_id, confidence, right_share, suspect) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_id,
                    row.item_id,
                    class_ids[row.label],
                    int(row.kept),
                    row.rank,
                    _finite(row.score),
                    _count(row.forgetting),
                    _finite(row.el2n),
                    _finite(row.grand),
                    None if row.predicted is None else class_ids[row.predicted],
                    None if row.alternative is None else class_ids[row.alternative],
                    _finite(row.confidence),
                    _finite(row.right_share),
                    int(row.suspect),
                )
                for row in rows
            ],
        )
        assert run_id is not None  # an INSERT's row id
        _carry_reviews(db, run_id)
        return _run(db.execute(f"SELECT {_RUN_COLUMNS} FROM coreset_runs WHERE id = ?", (run_id,)).fetchone())


def _carry_reviews(db: sqlite_utils.Database, run_id: int) -> None:
    """Mark reviewed, in the new run `run_id`, the suspects a person already looked at as suspects of the run
    before it (a chain: that run's reviews were carried the same way), under the name of who looked."""
    previous = db.execute("SELECT MAX(id) FROM coreset_runs WHERE id < ?", (run_id,)).fetchone()[0]
    if previous is None:
        return
    db.execute(
        f"""INSERT OR IGNORE INTO label_reviews (run_id, item_id, annotator, created_at)
        SELECT n.run_id, c.item_id, COALESCE(
            (SELECT v.annotator FROM label_reviews v WHERE v.run_id = c.run_id AND v.item_id = c.item_id),
            (SELECT l.annotator FROM labels l WHERE l.item_id = c.item_id AND l.id > r.label_watermark
                ORDER BY l.id DESC LIMIT 1)), ?
        FROM coreset_items c
        JOIN coreset_runs r ON r.id = c.run_id
        JOIN coreset_items n ON n.run_id = ? AND n.item_id = c.item_id AND n.suspect = 1
        WHERE c.run_id = ? AND c.suspect = 1 AND {_LOOKED_AT_SQL}""",
        (time.time(), run_id, previous),
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _count(value: float | None) -> float | None:
    """Forgetting events: a count, or inf (never learned); nan stores as unknown."""
    return None if value is None or math.isnan(value) else float(value)


def coreset_runs(project: Project) -> list[CoresetRun]:
    """Every run, newest first."""
    with opened(project) as db:
        return [_run(r) for r in db.execute(f"SELECT {_RUN_COLUMNS} FROM coreset_runs ORDER BY id DESC")]


def latest_coreset_run(project: Project) -> CoresetRun | None:
    runs = coreset_runs(project)
    return runs[0] if runs else None


def get_coreset_run(project: Project, run_id: int) -> CoresetRun:
    with opened(project) as db:
        row = db.execute(f"SELECT {_RUN_COLUMNS} FROM coreset_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise StorageError(f"no core-set run {run_id}")
    return _run(row)


# A person looked at item c after run r's snapshot: they confirmed its label, or they gave it a label row
# that was not undone again (an undo row cancels the row it undoes; an undo of a row from before the snapshot
# is an action of its own). Imported rows come from a file, not from a look at the image.
_LOOKED_AT_SQL = """(
    EXISTS (SELECT 1 FROM label_reviews v WHERE v.run_id = c.run_id AND v.item_id = c.item_id)
    OR EXISTS (
        SELECT 1 FROM labels l WHERE l.item_id = c.item_id AND l.id > r.label_watermark AND (
            (l.undoes IS NOT NULL AND l.undoes <= r.label_watermark)
            OR (l.undoes IS NULL AND COALESCE(l.source, '') != 'imported' AND NOT EXISTS (
                SELECT 1 FROM labels u WHERE u.item_id = l.item_id AND u.undoes = l.id))
        )
    )
)"""

_ITEMS_SQL = f"""
SELECT c.item_id, i.path, lc.name, s.class_name, c.kept, c.rank, c.score, c.forgetting, c.el2n, c.grand,
    pc.name, ac.name, c.confidence, c.right_share, c.suspect,
    {_LOOKED_AT_SQL},
    COALESCE(s.state = 'label' AND s.position = lc.position, 0) = 0
FROM coreset_items c
JOIN coreset_runs r ON r.id = c.run_id
JOIN items i ON i.id = c.item_id
JOIN classes lc ON lc.id = c.class_id
LEFT JOIN classes pc ON pc.id = c.predicted_class_id AND pc.position IS NOT NULL
LEFT JOIN classes ac ON ac.id = c.alternative_class_id AND ac.position IS NOT NULL
LEFT JOIN item_states s ON s.item_id = c.item_id
WHERE c.run_id = ?
"""


def coreset_items(project: Project, run_id: int) -> list[CoresetItem]:
    """Every item of run `run_id`: kept ones by rank first, then the dropped by item id."""
    with opened(project) as db, read_transaction(db):
        if db.execute("SELECT 1 FROM coreset_runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise StorageError(f"no core-set run {run_id}")
        rows = db.execute(_ITEMS_SQL + "ORDER BY c.rank IS NULL, c.rank, c.item_id", (run_id,)).fetchall()
    return [_item(row) for row in rows]


def _item(row: tuple) -> CoresetItem:
    (item_id, path, label, current, kept, rank, score, forgetting, el2n, grand, predicted, alternative) = row[:12]
    confidence, right_share, suspect, looked_at, changed = row[12:]
    return CoresetItem(
        item_id=item_id,
        path=path,
        label=label,
        current=current,
        kept=bool(kept),
        rank=rank,
        score=score,
        forgetting=forgetting,
        el2n=el2n,
        grand=grand,
        predicted=predicted,
        alternative=alternative,
        confidence=confidence,
        right_share=right_share,
        suspect=bool(suspect),
        reviewed=bool(looked_at) or bool(changed),
        changed=bool(suspect) and bool(changed),
    )


def kept_item_ids(project: Project, run_id: int) -> list[int]:
    """The run's kept items, most worth keeping first."""
    get_coreset_run(project, run_id)
    with opened(project) as db:
        rows = db.execute("SELECT item_id FROM coreset_items WHERE run_id = ? AND kept = 1 ORDER BY rank", (run_id,))
        return [item_id for (item_id,) in rows]


def suspects(project: Project, run_id: int) -> list[CoresetItem]:
    """The run's possibly mislabeled items in review order (`in_review_order`); reviewed ones included (see
    `CoresetItem.reviewed`)."""
    return in_review_order(coreset_items(project, run_id))


def in_review_order(items: list[CoresetItem]) -> list[CoresetItem]:
    """The suspects among a run's `items`, the one whose label the trained selector found least likely first
    (then the most forgotten). That order put 97-98 % of flipped labels first on digits, against 72-77 % for
    never learned and most forgotten first (docs/label_review.md)."""
    rows = [item for item in items if item.suspect]
    return sorted(rows, key=lambda r: (_or_one(r.confidence), -(r.forgetting or 0.0), _or_one(r.right_share)))


def _or_one(value: float | None) -> float:
    return 1.0 if value is None else value


def open_suspects(project: Project) -> list[CoresetItem]:
    """The latest run's suspects nobody has reviewed yet (empty before any run)."""
    run = latest_coreset_run(project)
    return [] if run is None else [s for s in suspects(project, run.id) if not s.reviewed]


def review_counts(project: Project, run_id: int) -> ReviewCounts:
    return counted(suspects(project, run_id))


def counted(found: list[CoresetItem]) -> ReviewCounts:
    """How many of the suspects `found` there are, were reviewed and were changed."""
    return ReviewCounts(len(found), sum(s.reviewed for s in found), sum(s.changed for s in found))


def confirm_label(project: Project, run_id: int, item_id: int, annotator: str) -> None:
    """Record that a person looked at suspect `item_id` of run `run_id` and its label is right (idempotent);
    StorageError for an item the run did not flag."""
    with writing(project) as db:
        row = db.execute(
            "SELECT suspect FROM coreset_items WHERE run_id = ? AND item_id = ?", (run_id, item_id)
        ).fetchone()
        if row is None or not row[0]:
            raise StorageError(f"item {item_id} is not a suspect of core-set run {run_id}")
        db.execute(
            "INSERT OR IGNORE INTO label_reviews (run_id, item_id, annotator, created_at) VALUES (?, ?, ?, ?)",
            (run_id, item_id, str(annotator), time.time()),
        )


def kept_flags(db: sqlite_utils.Database, run_id: int) -> dict[int, bool]:
    """item id -> kept, for the exports (inside the caller's connection)."""
    return {
        item_id: bool(kept)
        for item_id, kept in db.execute("SELECT item_id, kept FROM coreset_items WHERE run_id = ?", (run_id,))
    }
