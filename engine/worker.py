"""The background worker: takes round, target, backbone and coreset jobs from a project's jobs table.

One worker process per project, enforced by an exclusive `flock` on
`PROJECT/worker.lock` (engine.worker_lock: released by the kernel when the
process dies, so a crash never leaves a stale lock); a second worker exits
quietly. That lock is the one sign a worker is alive. Claiming a
job is atomic in storage as well, so two rounds never run at once. While a
job runs, a heartbeat thread keeps it from looking stale during a long
epoch; a failure is recorded on the job as one readable line, the
traceback goes to `PROJECT/logs/worker.log`, and labels are never touched.
A worker the app starts exits with the app (`parent_pid`): within a
poll when idle, within a second or two when a job runs (the job goes back to
the queue, and the next worker runs it again), so no worker holds its torch
memory after the server is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import storage
from engine.worker_lock import WorkerLock, lock_holder, worker_alive

if TYPE_CHECKING:
    from engine.distributed.launch import Launch

# The training modules (torch, FAISS) are imported where a job runs, not here: the Streamlit server
# imports this module for ensure_worker, and torch in the server process measured +100 ms on every
# label acknowledgement (docs/benchmarks.md, UI).

LOG_FILE = Path("logs") / "worker.log"
HEARTBEAT_S = 5.0  # seconds between heartbeats while a job runs
STALE_AFTER_S = 60.0  # a running job silent this long belongs to a dead worker
PROGRESS_EVERY_S = 0.5  # at most this often a progress write to the database
CANCEL_CHECK_S = 1.0  # at most this often a cancellation read
REPO_ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("engine.worker")
_children: dict[Path, subprocess.Popen] = {}  # project root -> the worker we started, kept to be reaped


class Parent:
    """Whether the process that started this one (pid given by it) is still there: when it ends,
    the kernel hands its children to another parent, so `getppid()` no longer matches, whatever
    process later reuses the pid. None: never gone."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def gone(self) -> bool:
        return self.pid is not None and os.getppid() != self.pid


def run_worker(
    project_dir: str | Path,
    *,
    once: bool = False,
    poll_s: float = 0.5,
    idle_exit_s: float | None = None,
    stale_after_s: float = STALE_AFTER_S,
    heartbeat_s: float = HEARTBEAT_S,
    parent_pid: int | None = None,
    lock: WorkerLock | None = None,
    launch: Launch | None = None,
) -> int:
    """Run round and target jobs of the project at `project_dir` until told to stop; return jobs run.

    once: return as soon as no job is waiting. idle_exit_s: return after
    that many seconds without a job. parent_pid: the process that started
    this one; return as soon as it is gone (a running job is put back in the
    queue). Returns 0 at once, quietly, when another worker holds the
    project's lock. lock: the project's lock, already held (the worker
    command takes it before importing anything heavy). launch: how heavy stages run
    (`engine.distributed.launch`); None: the project's `processes` setting, read per job.
    """
    parent = Parent(parent_pid)
    if lock is None:
        lock = WorkerLock(project_dir)
        if Path(project_dir).is_dir() and not lock.acquire():
            return 0
    try:
        project = storage.open_project(project_dir)
    except BaseException:
        lock.release()
        raise
    handler = _attach_log(project.root)
    name = f"{socket.gethostname()}:{os.getpid()}"
    try:
        log.info("worker %s started for %s", name, project.root)
        return _loop(project, name, once, poll_s, idle_exit_s, stale_after_s, heartbeat_s, parent, launch)
    finally:
        log.info("worker %s stopping", name)
        log.removeHandler(handler)
        handler.close()
        lock.release()


def _loop(project, name, once, poll_s, idle_exit_s, stale_after_s, heartbeat_s, parent, launch) -> int:
    done, idle_since = 0, time.monotonic()
    while True:
        if parent.gone():
            log.info("the process that started this worker is gone; exiting")
            return done
        try:
            job = storage.claim_job(project, name, kinds=tuple(JOBS), stale_after_s=stale_after_s)
        except Exception:  # a locked or briefly unreadable database: try again after the poll
            log.exception("could not claim a job")
            job = None
        if job is None:
            if once or (idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s):
                return done
            time.sleep(poll_s)
            continue
        run_job(project, job, name, heartbeat_s=heartbeat_s, parent=parent, launch=launch)
        done += 1
        idle_since = time.monotonic()


def run_job(
    project: storage.Project,
    job: storage.Job,
    worker: str,
    *,
    heartbeat_s: float = HEARTBEAT_S,
    parent: Parent | None = None,
    launch: Launch | None = None,
) -> None:
    """Run one claimed job to its end: finish_job with its result, or fail_job with a readable error
    (or, when the app that started the worker is gone, release_job: it runs again later). Its heavy stages
    run as `launch` says, by default as the project's `processes` setting says."""
    log.info("job %s (%s) %s started", job.id, job.kind, job.params)
    parent = parent or Parent(None)
    beat = _Heartbeat(project, job.id, worker, heartbeat_s)
    beat.start()
    from engine.distributed.launch import launching

    try:
        with launching(launch or settings_launch(project)):
            result = JOBS[job.kind](
                project, job.params, _progress(project, job.id), _canceller(project, job.id, beat, parent), job.id
            )
    except Exception as exc:  # any failure is reported on the job, never lost
        beat.stop()
        if parent.gone():
            log.info("job %s put back in the queue: the app that started this worker is gone", job.id)
            storage.release_job(project, job.id, "waiting: the app stopped while this job ran")
            return
        _record_failure(project, job, exc)
        return
    beat.stop()
    try:
        storage.finish_job(project, job.id, result)
        log.info("job %s done: %s", job.id, result)
    except storage.StorageError as exc:
        log.warning("job %s finished but could not be marked done: %s", job.id, exc)


def settings_launch(project: storage.Project) -> Launch:
    """The project's `processes` setting as a Launch on this machine (auto: one process per GPU)."""
    from engine.distributed.launch import Launch, on_device, resolve_processes

    settings = storage.load_settings(project)
    return on_device(Launch(processes=resolve_processes(settings.processes, settings.device)), settings.device)


def _record_failure(project: storage.Project, job: storage.Job, exc: BaseException) -> None:
    from engine.train import Cancelled

    message = "cancelled" if isinstance(exc, Cancelled) else describe_error(exc)
    log.error("job %s (%s) failed: %s\n%s", job.id, job.kind, message, "".join(traceback.format_exception(exc)))
    try:
        storage.fail_job(project, job.id, message)
    except storage.StorageError as err:  # another worker took the job over, or it was ended
        log.warning("job %s failed but could not be marked failed: %s", job.id, err)


def describe_error(exc: BaseException) -> str:
    """One readable line for the UI: exception type and message, no traceback."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- job kinds


def _round_job(project, params, on_progress, should_stop, job_id=None) -> dict:
    from engine.round import run_first_round, run_round

    params = _check_params("round", params, {"model", "steps", "level", "strategy", "after_round", "early"})
    if params.get("strategy") not in (None, storage.load_settings(project).strategy):
        raise ValueError("a round job's strategy must match the project's; change it in the settings")
    current = storage.current_round(project)
    if "after_round" in params and current is not None and current.index != params["after_round"]:
        # queued by a tab that had not seen the round another tab's job already made
        return {"round_id": current.id, "index": current.index, "already_made": True}
    if current is None:
        made = run_first_round(project, on_progress)
    else:
        made = run_round(
            project,
            on_progress,
            should_stop,
            model_name=params.get("model"),
            steps=params.get("steps"),
            level=params.get("level"),
            early=bool(params.get("early")),
        )
    return {
        "round_id": made.id,
        "index": made.index,
        "size": len(storage.round_items(project, made.id)),
        "train_s": made.train_s,
        "score_s": made.score_s,
        "select_s": made.select_s,
        "proxy_val_acc": made.proxy_val_acc,
        "proxy_val_n": made.proxy_val_n,
        "n_labeled": made.n_labeled,
    }


def _target_job(project, params, on_progress, should_stop, job_id=None) -> dict:
    from engine.target import run_target

    params = _check_params("target", params, {"coreset_run", "dynamic_keep"})
    run, keep = params.get("coreset_run"), params.get("dynamic_keep")
    return run_target(
        project,
        on_progress,
        should_stop,
        coreset_run=None if run is None else int(run),
        dynamic_keep=None if keep is None else float(keep),
    )


def _backbone_job(project, params, on_progress, should_stop, job_id=None) -> dict:
    from engine.representation import train_ssl_backbone

    params = _check_params("backbone", params, {"steps"})
    return train_ssl_backbone(project, on_progress, should_stop, steps=int(params.get("steps", 0)))


def _coreset_job(project, params, on_progress, should_stop, job_id=None) -> dict:
    from engine.jobs.coreset import PARAMS, run_coreset_job

    return run_coreset_job(project, _check_params("coreset", params, PARAMS), on_progress, should_stop, job_id)


JOBS: dict[str, Callable[..., dict]] = {
    "round": _round_job,
    "target": _target_job,
    "backbone": _backbone_job,
    "coreset": _coreset_job,
}


def _check_params(kind: str, params: dict | None, allowed: set[str]) -> dict:
    params = params or {}
    unknown = sorted(set(params) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for a {kind} job; expected: {expected}")
    return params


# ---------------------------------------------------------------- liveness


class _Heartbeat:
    """Heartbeats a running job from a thread; notes when the job was taken away from us."""

    def __init__(self, project, job_id: int, worker: str, every_s: float):
        self.project, self.job_id, self.worker, self.every_s = project, job_id, worker, every_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                storage.heartbeat(self.project, self.job_id, self.worker)
            except storage.StorageError as exc:
                log.warning("job %s: %s; stopping it", self.job_id, exc)
                self.lost = True
                return
            except Exception:  # a busy database must not kill the heartbeat thread
                log.exception("job %s: heartbeat failed, will retry", self.job_id)


def _progress(project, job_id: int) -> Callable[[float, str], None]:
    last = [0.0]

    def on_progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or fraction >= 1.0:
            last[0] = now
            try:
                storage.report_progress(project, job_id, fraction, message)
            except storage.StorageError as exc:
                log.warning("job %s: progress not recorded: %s", job_id, exc)

    return on_progress


def _canceller(project, job_id: int, beat: _Heartbeat, parent: Parent) -> Callable[[], bool]:
    state: dict[str, Any] = {"at": 0.0, "value": False}

    def should_stop() -> bool:
        if beat.lost or parent.gone():
            return True
        now = time.monotonic()
        if not state["value"] and now - state["at"] >= CANCEL_CHECK_S:
            state["at"] = now
            state["value"] = storage.is_cancel_requested(project, job_id)
        return bool(state["value"])

    return should_stop


# ---------------------------------------------------------------- processes


def ensure_worker(project_dir: str | Path, *, idle_exit_s: float | None = 600.0) -> int:
    """Start a detached `python -m engine worker` for the project unless one is alive; return its pid.

    Alive: a process holds the worker lock, or this process started a
    worker that is still running and has not taken it yet (the fraction of a
    second before its first import; a second one would exit at once anyway).
    The new process has its own session, so it outlives the caller (the
    Streamlit server); its output goes to logs/worker.log.
    """
    project = storage.open_project(project_dir)
    _reap()
    if worker_alive(project.root):
        return lock_holder(project.root) or -1
    starting = _children.get(project.root)
    if starting is not None:  # started by us and still running: it is taking the lock now
        return starting.pid
    log_path = project.root / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "engine",
        "worker",
        "--project",
        str(project.root),
        "--parent-pid",
        str(os.getpid()),
    ]
    if idle_exit_s is not None:
        command += ["--idle-exit", str(idle_exit_s)]
    with open(log_path, "ab") as out:
        child = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    _children[project.root] = child
    return child.pid


def _reap() -> None:
    """Collect exit statuses of workers we started, so none lingers as a zombie."""
    for root, child in list(_children.items()):
        if child.poll() is not None:
            del _children[root]


def _attach_log(root: Path) -> logging.Handler:
    path = root / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler
