"""Background jobs: queued -> running -> done | failed | cancelled.

A worker claims a job atomically under `BEGIN IMMEDIATE`, then heartbeats
while it works. A running job whose heartbeat is older than `stale_after_s`
(its worker died) can be claimed again. Cancelling a queued job ends it at
once; cancelling a running one sets a flag the worker polls with
`is_cancel_requested`, and its `fail_job` then records state 'cancelled'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from storage.project import Project, StorageError, opened, writing

STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class Job:
    """One background job; times are Unix seconds, progress is 0..1."""

    id: int
    kind: str
    params: dict
    state: str
    progress: float
    message: str
    result: dict | None
    error: str | None
    worker: str | None
    heartbeat_at: float | None
    created_at: float
    finished_at: float | None
    cancel_requested: bool = False
    attempts: int = 0


_JOB_SQL = (
    "SELECT id, kind, params, state, progress, message, result, error, worker, heartbeat_at, "
    "created_at, finished_at, cancel_requested, attempts FROM jobs "
)


def _job(row: tuple) -> Job:
    values = list(row)
    values[2] = json.loads(values[2])
    values[6] = json.loads(values[6]) if values[6] is not None else None
    values[12] = bool(values[12])
    return Job(*values)


def _rowid(cursor) -> int:
    """The id of the row an INSERT just wrote (sqlite3 types lastrowid as optional)."""
    assert cursor.lastrowid is not None
    return int(cursor.lastrowid)


def _fetch(db: sqlite_utils.Database, job_id: int) -> Job:
    row = db.execute(_JOB_SQL + "WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise StorageError(f"no job with id {job_id}")
    return _job(row)


def enqueue_job(project: Project, kind: str, params: dict | None = None) -> Job:
    """Queue a job of `kind` with JSON-serialisable params."""
    encoded = json.dumps(params or {})
    with writing(project) as db:
        cursor = db.execute(
            "INSERT INTO jobs (kind, params, state, created_at) VALUES (?, ?, 'queued', ?)",
            (kind, encoded, time.time()),
        )
        return _fetch(db, _rowid(cursor))


def enqueue_unless_active(project: Project, kind: str, params: dict | None = None) -> tuple[Job, bool]:
    """Queue a job of `kind` unless one is queued or running, in one `BEGIN IMMEDIATE` transaction,
    so two tabs or processes finishing the same batch queue one job. Returns (job, newly queued)."""
    encoded = json.dumps(params or {})
    with writing(project) as db:
        row = db.execute(
            _JOB_SQL + "WHERE state IN ('queued', 'running') AND kind = ? ORDER BY id LIMIT 1", (kind,)
        ).fetchone()
        if row is not None:
            return _job(row), False
        cursor = db.execute(
            "INSERT INTO jobs (kind, params, state, created_at) VALUES (?, ?, 'queued', ?)",
            (kind, encoded, time.time()),
        )
        return _fetch(db, _rowid(cursor)), True


def claim_job(
    project: Project, worker: str, kinds: Sequence[str] | None = None, stale_after_s: float = 60
) -> Job | None:
    """Atomically take the oldest queued job, or a running job whose heartbeat is
    older than stale_after_s seconds; None when there is nothing to do.

    A stale job whose cancellation was requested is marked cancelled instead.
    """
    now = time.time()
    kind_filter, kind_args = "", []
    if kinds is not None:
        if not kinds:
            return None
        kind_filter = f"AND kind IN ({', '.join('?' * len(kinds))}) "
        kind_args = list(kinds)
    with writing(project) as db:
        while True:
            row = db.execute(
                "SELECT id, cancel_requested FROM jobs WHERE (state = 'queued' OR "
                "(state = 'running' AND COALESCE(heartbeat_at, 0) < ?)) " + kind_filter + "ORDER BY id LIMIT 1",
                [now - stale_after_s, *kind_args],
            ).fetchone()
            if row is None:
                return None
            if not row[1]:
                break
            _end(db, row[0], "cancelled", error="cancelled")
        db.execute(
            "UPDATE jobs SET state = 'running', worker = ?, heartbeat_at = ?, started_at = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            (worker, now, now, row[0]),
        )
        return _fetch(db, row[0])


def heartbeat(project: Project, job_id: int, worker: str) -> None:
    """Record that `worker` is alive on `job_id`.

    Raises StorageError if the job is no longer running under this worker
    (it went stale and another worker took it, or it ended).
    """
    with writing(project) as db:
        cursor = db.execute(
            "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker = ? AND state = 'running'",
            (time.time(), job_id, worker),
        )
        if not cursor.rowcount:
            raise StorageError(f"job {job_id} is not running under worker {worker!r}")


def report_progress(project: Project, job_id: int, fraction: float, message: str) -> None:
    """Set progress (clamped to 0..1) and message of a running job; also heartbeats."""
    fraction = min(1.0, max(0.0, float(fraction)))
    with writing(project) as db:
        _require_running(db, job_id)
        db.execute(
            "UPDATE jobs SET progress = ?, message = ?, heartbeat_at = ? WHERE id = ?",
            (fraction, str(message), time.time(), job_id),
        )


def finish_job(project: Project, job_id: int, result: dict | None = None) -> None:
    """Mark a running job done with an optional JSON-serialisable result."""
    encoded = json.dumps(result) if result is not None else None
    with writing(project) as db:
        _require_running(db, job_id)
        db.execute("UPDATE jobs SET progress = 1, result = ? WHERE id = ?", (encoded, job_id))
        _end(db, job_id, "done")


def fail_job(project: Project, job_id: int, error: str) -> None:
    """End a running job with an error message: state 'failed', or 'cancelled'
    when its cancellation was requested."""
    with writing(project) as db:
        job = _require_running(db, job_id)
        _end(db, job_id, "cancelled" if job.cancel_requested else "failed", error=str(error))


def release_job(project: Project, job_id: int, message: str = "") -> None:
    """Put a running job back in the queue (a worker stopping before it ends: the next one takes it)."""
    with writing(project) as db:
        _require_running(db, job_id)
        db.execute(
            "UPDATE jobs SET state = 'queued', worker = NULL, heartbeat_at = NULL, started_at = NULL, "
            "progress = 0, message = ? WHERE id = ?",
            (message, job_id),
        )


def cancel_job(project: Project, job_id: int) -> None:
    """Cancel a queued job now, or ask a running job's worker to stop; ended jobs are left alone."""
    with writing(project) as db:
        job = _fetch(db, job_id)
        if job.state == "queued":
            _end(db, job_id, "cancelled", error="cancelled")
        elif job.state == "running":
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))


def is_cancel_requested(project: Project, job_id: int) -> bool:
    """True once `cancel_job` was called for this job."""
    return get_job(project, job_id).cancel_requested


def _require_running(db: sqlite_utils.Database, job_id: int) -> Job:
    job = _fetch(db, job_id)
    if job.state != "running":
        raise StorageError(f"job {job_id} is {job.state}, not running")
    return job


def _end(db: sqlite_utils.Database, job_id: int, state: str, error: str | None = None) -> None:
    db.execute(
        "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
        (state, error, time.time(), job_id),
    )


def get_job(project: Project, job_id: int) -> Job:
    """One job by id; StorageError if unknown."""
    with opened(project) as db:
        return _fetch(db, job_id)


def latest_job(project: Project, kind: str | None = None) -> Job | None:
    """The most recently created job (of `kind`, if given), or None."""
    where, args = ("WHERE kind = ? ", [kind]) if kind is not None else ("", [])
    with opened(project) as db:
        row = db.execute(_JOB_SQL + where + "ORDER BY id DESC LIMIT 1", args).fetchone()
    return _job(row) if row else None


def active_jobs(project: Project, kind: str | None = None) -> list[Job]:
    """Queued or running jobs (of `kind`, if given), oldest first."""
    where, args = ("AND kind = ? ", [kind]) if kind is not None else ("", [])
    with opened(project) as db:
        rows = db.execute(_JOB_SQL + "WHERE state IN ('queued', 'running') " + where + "ORDER BY id", args)
        return [_job(row) for row in rows]
