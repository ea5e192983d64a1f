"""The background worker: runs round and target jobs, records failures readably, one per project."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

import storage
from engine import worker
from engine.round import run_initial_round
from engine.worker import WorkerLock, describe_error, ensure_worker, run_worker, worker_alive
from engine.worker_lock import lock_holder
from tests.support import label_queue


def _labels(project):
    return storage.current_labels(project), {i: storage.label_history(project, i) for i in storage.labeled_ids(project)}


def test_worker_runs_the_initial_round_then_a_selection_round(tiny_project, fake_clock):
    import engine.round

    fake_clock(engine.round, 1, 2, 4, 8, 16)  # the selection round's stages: train 1 s, score 4 s, select 16 s
    first_job = storage.enqueue_job(tiny_project, "round")
    assert run_worker(tiny_project.root, once=True) == 1
    done = storage.get_job(tiny_project, first_job.id)
    assert (done.state, done.result["index"], done.result["size"]) == ("done", 0, 6)

    label_queue(tiny_project)
    job = storage.enqueue_job(tiny_project, "round")
    assert run_worker(tiny_project.root, once=True) == 1
    done = storage.get_job(tiny_project, job.id)
    assert (done.state, done.progress, done.error) == ("done", 1.0, None)
    assert (done.result["index"], done.result["size"], done.result["n_labeled"]) == (1, 4, 6)
    assert (done.result["train_s"], done.result["score_s"], done.result["select_s"]) == (1.0, 4.0, 16.0)
    assert storage.current_round(tiny_project).index == 1
    assert (tiny_project.root / "logs" / "worker.log").is_file()
    assert not worker_alive(tiny_project.root)  # the lock went with the worker


def test_worker_runs_a_target_job(labeled_project):
    job = storage.enqueue_job(labeled_project, "target")
    run_worker(labeled_project.root, once=True)
    done = storage.get_job(labeled_project, job.id)
    assert done.state == "done"
    assert done.result["n_labels"] == 6 and done.result["checkpoint"].endswith("target")


def test_failure_is_readable_and_labels_are_untouched(tiny_project):
    run_initial_round(tiny_project)
    storage.set_label(tiny_project, storage.round_queue(tiny_project, 1)[0][0], "red")
    before = _labels(tiny_project)
    job = storage.enqueue_job(tiny_project, "round")
    run_worker(tiny_project.root, once=True)
    failed = storage.get_job(tiny_project, job.id)
    assert failed.state == "failed"
    assert failed.error == (
        "RoundError: batch 1 still has 5 unlabeled images; label or skip them before the next batch is chosen"
    )
    assert "Traceback" not in failed.error
    assert _labels(tiny_project) == before
    log_text = (tiny_project.root / "logs" / "worker.log").read_text()
    assert "Traceback" in log_text and "RoundError" in log_text


def test_bad_params_fail_the_job(labeled_project):
    job = storage.enqueue_job(labeled_project, "round", {"epochz": 3})
    other = storage.enqueue_job(labeled_project, "round", {"model": "no_such_net"})
    assert run_worker(labeled_project.root, once=True) == 2
    assert storage.get_job(labeled_project, job.id).error == (
        "ValueError: unknown parameter(s) epochz for a round job; "
        "expected: after_round, early, level, model, steps, strategy"
    )
    assert storage.get_job(labeled_project, other.id).error.startswith("ValueError: unknown model 'no_such_net'")
    assert storage.current_round(labeled_project).index == 0


class _StorageClock:
    """Stands in for storage.jobs' `time`: `time()` is `now`, which the test sets; the rest is real."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def storage_clock(monkeypatch):
    """The clock storage stamps and ages jobs by, set by the test (from 1000.0)."""
    import storage.jobs

    clock = _StorageClock(1000.0)
    monkeypatch.setattr(storage.jobs, "time", clock)
    return clock


def test_stale_job_is_reclaimed(labeled_project, storage_clock):
    job = storage.enqueue_job(labeled_project, "round")
    storage.claim_job(labeled_project, "dead-worker")
    storage_clock.now += 59  # silent for 59 s: not stale yet
    assert run_worker(labeled_project.root, once=True, stale_after_s=60) == 0
    storage_clock.now += 2  # 61 s
    assert run_worker(labeled_project.root, once=True, stale_after_s=60) == 1
    done = storage.get_job(labeled_project, job.id)
    assert (done.state, done.attempts) == ("done", 2)
    assert done.worker != "dead-worker"


def test_a_second_worker_exits_while_the_lock_is_held(labeled_project):
    job = storage.enqueue_job(labeled_project, "round")
    held = WorkerLock(labeled_project.root)
    assert held.acquire()
    try:
        assert worker_alive(labeled_project.root)
        assert run_worker(labeled_project.root, once=True) == 0
        assert storage.get_job(labeled_project, job.id).state == "queued"
    finally:
        held.release()
    assert not worker_alive(labeled_project.root)
    assert run_worker(labeled_project.root, once=True) == 1


def test_cancel_request_stops_a_running_round(labeled_project):
    job = storage.enqueue_job(labeled_project, "round")
    claimed = storage.claim_job(labeled_project, "w")
    storage.cancel_job(labeled_project, job.id)
    worker.run_job(labeled_project, claimed, "w")
    ended = storage.get_job(labeled_project, job.id)
    assert (ended.state, ended.error) == ("cancelled", "cancelled")
    assert storage.current_round(labeled_project).index == 0


def test_heartbeat_thread_keeps_a_long_job_fresh(labeled_project, monkeypatch, storage_clock):
    """A job that runs 1000 s (on storage's clock) without reporting progress is not taken as stale:
    the heartbeat thread stamps it while it runs."""
    beat_while_running = threading.Event()
    real_heartbeat = storage.heartbeat

    def heartbeat(project, job_id, name):
        late = storage_clock.now == 2000.0
        real_heartbeat(project, job_id, name)
        if late:
            beat_while_running.set()

    monkeypatch.setattr(storage, "heartbeat", heartbeat)

    def long_job(project, params, on_progress, should_stop, job_id):
        storage_clock.now = 2000.0
        beat = beat_while_running.wait(30)  # the thread beats every 0.05 s; 30 s only ends a broken run
        return {"beat": beat, "stolen": storage.claim_job(project, "other-worker", stale_after_s=60) is not None}

    monkeypatch.setitem(worker.JOBS, "round", long_job)
    job = storage.enqueue_job(labeled_project, "round")
    claimed = storage.claim_job(labeled_project, "w")
    worker.run_job(labeled_project, claimed, "w", heartbeat_s=0.05)
    done = storage.get_job(labeled_project, job.id)
    assert done.state == "done" and done.result == {"beat": True, "stolen": False}
    assert (claimed.heartbeat_at, done.heartbeat_at) == (1000.0, 2000.0)


class _IdleTime:
    """Stands in for engine.worker's `time`: `sleep` advances `monotonic` instead of waiting."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        assert len(self.sleeps) < 100, "the idle worker never exits"
        self.now += seconds


def test_idle_worker_polls_then_exits(tiny_project, monkeypatch):
    clock = _IdleTime()
    monkeypatch.setattr(worker, "time", clock)
    assert run_worker(tiny_project.root, poll_s=0.25, idle_exit_s=1.0) == 0
    assert clock.sleeps == [0.25] * 4  # polled every 0.25 s until 1 s without a job


def test_describe_error_is_one_line():
    assert describe_error(ValueError("bad\n  value")) == "ValueError: bad value"
    assert describe_error(KeyError()) == "KeyError"


@pytest.mark.slow
def test_ensure_worker_starts_one_detached_worker(labeled_project):
    job = storage.enqueue_job(labeled_project, "round")
    pid = ensure_worker(labeled_project.root, idle_exit_s=1)
    try:
        assert ensure_worker(labeled_project.root, idle_exit_s=1) == pid
        deadline = time.monotonic() + 90
        while storage.get_job(labeled_project, job.id).state in ("queued", "running"):
            assert time.monotonic() < deadline, "the worker did not finish the job"
            time.sleep(0.2)
        assert storage.get_job(labeled_project, job.id).state == "done"
        child = worker._children[labeled_project.root]
        assert child.pid == pid
        assert child.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    assert not worker_alive(labeled_project.root)


def test_a_round_queued_after_an_older_round_does_nothing(labeled_project):
    job = storage.enqueue_job(labeled_project, "round", {"after_round": 5})  # a stale tab's request
    assert run_worker(labeled_project.root, once=True) == 1
    assert storage.get_job(labeled_project, job.id).result["already_made"] is True
    assert storage.current_round(labeled_project).index == 0


def test_an_early_round_runs_while_the_batch_still_has_open_items(labeled_project):
    current = storage.current_round(labeled_project)
    made = storage.create_round(
        labeled_project,
        strategy="random",
        selector="random",
        item_ids=[i for i in storage.unlabeled_ids(labeled_project)[:2]],
        scores=[0.0, 0.0],
        n_labeled=6,
    )
    open_items = {i for i, _ in storage.round_queue(labeled_project, made.id)}
    job = storage.enqueue_job(labeled_project, "round", {"after_round": made.index, "early": True})
    assert run_worker(labeled_project.root, once=True) == 1
    assert storage.get_job(labeled_project, job.id).state == "done"
    newest = storage.current_round(labeled_project)
    assert newest.index == made.index + 1 > current.index
    assert not {i for i, _ in storage.round_items(labeled_project, newest.id)} & open_items  # open items are taken
    normal = storage.enqueue_job(labeled_project, "round")  # without `early`: refused
    run_worker(labeled_project.root, once=True)
    assert "unlabeled images" in storage.get_job(labeled_project, normal.id).error


class _FlippingParent(worker.Parent):
    def __init__(self):
        super().__init__(None)
        self.ended = False

    def gone(self) -> bool:
        return self.ended


def test_a_job_running_when_the_app_goes_is_put_back_in_the_queue(labeled_project, monkeypatch):
    parent = _FlippingParent()

    def long_job(project, params, on_progress, should_stop, job_id):
        parent.ended = True  # the server stops while the job runs
        if should_stop():
            from engine.train import Cancelled

            raise Cancelled("stopped")
        return {"finished": True}

    monkeypatch.setitem(worker.JOBS, "round", long_job)
    job = storage.enqueue_job(labeled_project, "round")
    claimed = storage.claim_job(labeled_project, "w")
    worker.run_job(labeled_project, claimed, "w", parent=parent)
    back = storage.get_job(labeled_project, job.id)
    assert (back.state, back.worker, back.error) == ("queued", None, None)
    assert "app stopped" in back.message
    assert storage.claim_job(labeled_project, "next").id == job.id  # the next worker takes it at once


def test_a_worker_started_by_the_app_exits_when_the_app_is_gone(labeled_project, tmp_path):
    """A stand-in server starts the worker the way the app does, then dies; the worker follows it."""
    import subprocess
    import sys

    script = (
        "import sys; from engine.worker import ensure_worker; "
        f"print(ensure_worker({str(labeled_project.root)!r}, idle_exit_s=600), flush=True)"
    )
    server = subprocess.run(
        [sys.executable, "-c", script],
        cwd=worker.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(worker.REPO_ROOT)},
    )
    pid = int(server.stdout.split()[-1])
    started = time.monotonic()
    try:
        while _running(pid):
            assert time.monotonic() - started < 60, "the worker outlived the app that started it by 60 s"
            time.sleep(0.2)
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGTERM)
    assert not worker_alive(labeled_project.root)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def test_the_lock_names_its_holder_and_a_probe_changes_nothing(tiny_project):
    held = WorkerLock(tiny_project.root)
    assert held.acquire()
    try:
        assert lock_holder(tiny_project.root) == os.getpid()
        assert worker_alive(tiny_project.root)
    finally:
        held.release()
    (tiny_project.root / "worker.lock").write_text("12345")  # the last worker's pid
    assert not worker_alive(tiny_project.root)
    assert lock_holder(tiny_project.root) == 12345  # the probe took the free lock without signing it


def test_jobs_run_with_the_processes_the_settings_ask_for(tiny_project):
    import dataclasses

    from engine.distributed.launch import Launch
    from engine.worker import settings_launch

    settings = storage.load_settings(tiny_project)
    storage.save_settings(tiny_project, dataclasses.replace(settings, device="auto"))
    assert settings_launch(tiny_project) == Launch(processes=1)  # auto on a CPU: one process
    storage.save_settings(tiny_project, dataclasses.replace(settings, device="auto", processes="3"))
    assert settings_launch(tiny_project) == Launch(processes=3)
    storage.save_settings(tiny_project, dataclasses.replace(settings, device="cpu", processes="3"))
    assert settings_launch(tiny_project) == Launch(processes=3, cpu=True)  # its stages see no GPU
