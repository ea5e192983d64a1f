"""Numbered schema migrations for `project.db`.

Each migration is a tuple of SQL statements applied in its own
`BEGIN IMMEDIATE` transaction together with its `schema_version` row, so a
crash leaves the database at a whole version. Never edit a released
migration: append a new one. `docs/storage.md` describes the tables.
"""

from __future__ import annotations

import time

import sqlite_utils

_V1 = (
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE classes (
        id INTEGER PRIMARY KEY,
        position INTEGER UNIQUE,
        name TEXT NOT NULL
    )""",
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size_bytes INTEGER,
        mtime REAL,
        sha256 TEXT,
        width INTEGER,
        height INTEGER,
        mode TEXT,
        n_frames INTEGER,
        status TEXT NOT NULL CHECK (status IN ('ok', 'duplicate', 'rejected')),
        reason TEXT,
        duplicate_of INTEGER REFERENCES items(id),
        is_validation INTEGER NOT NULL DEFAULT 0 CHECK (is_validation IN (0, 1)),
        added_at REAL NOT NULL,
        CHECK ((status = 'rejected') = (reason IS NOT NULL)),
        CHECK ((status = 'duplicate') = (duplicate_of IS NOT NULL)),
        CHECK (is_validation = 0 OR status = 'ok')
    )""",
    "CREATE INDEX items_sha256 ON items(sha256)",
    "CREATE UNIQUE INDEX items_usable_sha256 ON items(sha256) WHERE status = 'ok'",
    """CREATE TABLE rounds (
        id INTEGER PRIMARY KEY,
        idx INTEGER NOT NULL UNIQUE,
        strategy TEXT NOT NULL,
        selector TEXT NOT NULL,
        created_at REAL NOT NULL,
        train_s REAL,
        score_s REAL,
        select_s REAL,
        proxy_val_acc REAL,
        n_labeled INTEGER NOT NULL
    )""",
    """CREATE TABLE queue (
        round_id INTEGER NOT NULL REFERENCES rounds(id),
        rank INTEGER NOT NULL,
        item_id INTEGER NOT NULL UNIQUE REFERENCES items(id),
        score REAL,
        PRIMARY KEY (round_id, rank)
    )""",
    """CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        class_id INTEGER REFERENCES classes(id),
        kind TEXT NOT NULL CHECK (kind IN ('label', 'skip', 'clear')),
        annotator TEXT NOT NULL,
        created_at REAL NOT NULL,
        round_id INTEGER REFERENCES rounds(id),
        undoes INTEGER REFERENCES labels(id),
        CHECK ((kind = 'label') = (class_id IS NOT NULL))
    )""",
    "CREATE INDEX labels_item ON labels(item_id, id)",
    """CREATE VIEW current_labels AS
        SELECT l.* FROM labels l
        JOIN (SELECT item_id, MAX(id) AS id FROM labels GROUP BY item_id) latest
          ON l.id = latest.id""",
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        result TEXT,
        error TEXT,
        worker TEXT,
        heartbeat_at REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX jobs_state ON jobs(state, id)",
)

# The proxy's guess for each queued item (shown to the annotator, who may accept it), and how
# each label was given: 'typed' (a class key or button), 'accepted' (the guess), 'bulk' (a grid
# selection), 'oracle' (the demo's ground truth); NULL for labels from before version 2.
_V2 = (
    "ALTER TABLE queue ADD COLUMN guess_class_id INTEGER REFERENCES classes(id)",
    "ALTER TABLE queue ADD COLUMN guess_confidence REAL",
    "ALTER TABLE labels ADD COLUMN source TEXT",
)

# One answer to "what is this item's current label", for every item that has a label row: a label
# whose class was removed counts as no label. `state` is 'label', 'skip' or NULL (cleared, or a
# removed class); `class_name` is set only for 'label'. An item without a row has no label.
# `current_labels` is rewritten to find the latest row through the (item_id, id) index, so one
# item's state is an index lookup, not a pass over every label; neither view has a join, so
# SQLite flattens them into the queries that read them.
_V3 = (
    "DROP VIEW current_labels",
    """CREATE VIEW current_labels AS
        SELECT l.* FROM labels l
        WHERE l.id = (SELECT MAX(m.id) FROM labels m WHERE m.item_id = l.item_id)""",
    """CREATE VIEW item_states AS
        SELECT item_id,
            CASE WHEN kind = 'skip' THEN 'skip' WHEN kind = 'label' AND position IS NOT NULL THEN 'label' END AS state,
            position,
            CASE WHEN kind = 'label' AND position IS NOT NULL THEN (SELECT name FROM classes WHERE id = class_id) END
                AS class_name,
            annotator, source, created_at, round_id
        FROM (SELECT l.*, (SELECT position FROM classes WHERE id = l.class_id) AS position FROM current_labels l)""",
)

# Core-set runs (issue 24): which labeled items a run keeps, the statistics its selector gathered while
# it trained on them, and the labels a person confirmed after a run flagged them as possibly wrong.
# `label_watermark` is MAX(labels.id) in the snapshot the run trained on: a label row above it on an
# item was given after the run (so the item was looked at again). `class_id` is the class the run
# trained the item as, `predicted_class_id` the trained selector's answer, `alternative_class_id` its most
# likely class other than the label, `right_share` the share of the item's presentations it got right
# while training (a small set is memorized by the end, wrong labels included).
_V4 = (
    """CREATE TABLE coreset_runs (
        id INTEGER PRIMARY KEY,
        job_id INTEGER REFERENCES jobs(id),
        method TEXT NOT NULL,
        keep REAL NOT NULL CHECK (keep > 0 AND keep <= 1),
        balance INTEGER NOT NULL CHECK (balance IN (0, 1)),
        selector TEXT NOT NULL,
        selector_model TEXT NOT NULL,
        n_labeled INTEGER NOT NULL,
        n_kept INTEGER NOT NULL,
        steps INTEGER,
        train_s REAL,
        score_s REAL,
        select_s REAL,
        val_acc REAL,
        n_val INTEGER NOT NULL DEFAULT 0,
        label_watermark INTEGER NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE coreset_items (
        run_id INTEGER NOT NULL REFERENCES coreset_runs(id),
        item_id INTEGER NOT NULL REFERENCES items(id),
        class_id INTEGER NOT NULL REFERENCES classes(id),
        kept INTEGER NOT NULL CHECK (kept IN (0, 1)),
        rank INTEGER,
        score REAL,
        forgetting REAL,
        el2n REAL,
        grand REAL,
        predicted_class_id INTEGER REFERENCES classes(id),
        alternative_class_id INTEGER REFERENCES classes(id),
        confidence REAL,
        right_share REAL,
        suspect INTEGER NOT NULL DEFAULT 0 CHECK (suspect IN (0, 1)),
        PRIMARY KEY (run_id, item_id),
        CHECK ((kept = 1) = (rank IS NOT NULL))
    )""",
    """CREATE TABLE label_reviews (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES coreset_runs(id),
        item_id INTEGER NOT NULL REFERENCES items(id),
        annotator TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (run_id, item_id)
    )""",
)

# How many validation images a round's proxy_val_acc was measured on (issue 25: an accuracy on 5 images
# read like one on 24). NULL for rounds without an accuracy and for rounds made before version 5.
_V5 = ("ALTER TABLE rounds ADD COLUMN proxy_val_n INTEGER CHECK (proxy_val_n IS NULL OR proxy_val_n > 0)",)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)
"""MIGRATIONS[i] brings the schema from version i to version i + 1."""

LATEST_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    """The version the database is at: 0 for a fresh file."""
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(db: sqlite_utils.Database) -> int:
    """Apply every pending migration, one transaction each; returns the new version.

    Safe to call from several processes at once: the version is re-read
    after `BEGIN IMMEDIATE` takes the write lock.
    """
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    while schema_version(db) < LATEST_VERSION:
        _apply_next(db)
    return schema_version(db)


def _apply_next(db: sqlite_utils.Database) -> None:
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(db)
        if version < LATEST_VERSION:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version + 1, time.time()),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
