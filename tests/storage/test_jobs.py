"""Jobs: enqueue, atomic claim, heartbeat, progress, finish/fail, stale reclaim, cancel."""

from __future__ import annotations

import threading
import time

import pytest

import storage


def test_lifecycle(project):
    job = storage.enqueue_job(project, "round", {"strategy": "kcenter"})
    assert (job.state, job.params, job.progress, job.worker, job.result) == (
        "queued",
        {"strategy": "kcenter"},
        0.0,
        None,
        None,
    )
    claimed = storage.claim_job(project, "w1")
    assert (claimed.id, claimed.state, claimed.worker, claimed.attempts) == (job.id, "running", "w1", 1)
    assert claimed.heartbeat_at is not None
    storage.heartbeat(project, job.id, "w1")
    storage.report_progress(project, job.id, 1.7, "epoch 3/8")
    assert (storage.get_job(project, job.id).progress, storage.get_job(project, job.id).message) == (1.0, "epoch 3/8")
    storage.finish_job(project, job.id, {"accuracy": 0.5})
    done = storage.get_job(project, job.id)
    assert (done.state, done.result, done.progress) == ("done", {"accuracy": 0.5}, 1.0)
    assert done.finished_at >= done.created_at
    assert storage.claim_job(project, "w1") is None
    with pytest.raises(storage.StorageError, match="is done, not running"):
        storage.finish_job(project, job.id)


def test_fail_records_error(project):
    job = storage.enqueue_job(project, "target")
    storage.claim_job(project, "w1")
    storage.fail_job(project, job.id, "Traceback: boom")
    failed = storage.get_job(project, job.id)
    assert (failed.state, failed.error) == ("failed", "Traceback: boom")
    with pytest.raises(storage.StorageError, match="no job with id 42"):
        storage.get_job(project, 42)
    with pytest.raises(storage.StorageError, match="is queued, not running"):
        storage.report_progress(project, storage.enqueue_job(project, "x").id, 0.5, "no")


def test_claim_takes_oldest_and_filters_kinds(project):
    first = storage.enqueue_job(project, "round")
    second = storage.enqueue_job(project, "target")
    assert storage.claim_job(project, "w", kinds=["target"]).id == second.id
    assert storage.claim_job(project, "w", kinds=[]) is None
    assert storage.claim_job(project, "w", kinds=["target"]) is None
    assert storage.claim_job(project, "w").id == first.id
    assert [j.id for j in storage.active_jobs(project)] == [first.id, second.id]
    assert [j.id for j in storage.active_jobs(project, "round")] == [first.id]
    assert storage.latest_job(project).id == second.id
    assert storage.latest_job(project, "round").id == first.id
    assert storage.latest_job(project, "export") is None


def test_stale_job_is_claimed_again_and_old_worker_loses_it(project):
    job = storage.enqueue_job(project, "round")
    storage.claim_job(project, "dead-worker")
    assert storage.claim_job(project, "w2", stale_after_s=60) is None
    time.sleep(0.05)
    reclaimed = storage.claim_job(project, "w2", stale_after_s=0.01)
    assert (reclaimed.id, reclaimed.worker, reclaimed.attempts) == (job.id, "w2", 2)
    with pytest.raises(storage.StorageError, match="not running under worker 'dead-worker'"):
        storage.heartbeat(project, job.id, "dead-worker")
    storage.heartbeat(project, job.id, "w2")


def test_cancel_queued_and_running(project):
    queued = storage.enqueue_job(project, "round")
    storage.cancel_job(project, queued.id)
    assert storage.get_job(project, queued.id).state == "cancelled"
    running = storage.enqueue_job(project, "round")
    storage.claim_job(project, "w")
    assert not storage.is_cancel_requested(project, running.id)
    storage.cancel_job(project, running.id)
    assert storage.is_cancel_requested(project, running.id)
    assert storage.get_job(project, running.id).state == "running"
    storage.fail_job(project, running.id, "stopped by user")
    assert storage.get_job(project, running.id).state == "cancelled"
    storage.cancel_job(project, running.id)
    assert storage.get_job(project, running.id).state == "cancelled"


def test_stale_job_with_cancel_request_is_cancelled_not_claimed(project):
    job = storage.enqueue_job(project, "round")
    storage.claim_job(project, "dead")
    storage.cancel_job(project, job.id)
    time.sleep(0.05)
    assert storage.claim_job(project, "w2", stale_after_s=0.01) is None
    assert storage.get_job(project, job.id).state == "cancelled"


def test_concurrent_claims_hand_each_job_to_one_worker(project):
    jobs = [storage.enqueue_job(project, "round").id for _ in range(12)]
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(3)

    def worker(name: str) -> None:
        start.wait()
        mine = claimed.setdefault(name, [])
        while (job := storage.claim_job(project, name)) is not None:
            mine.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(i for ids in claimed.values() for i in ids)
    assert every == jobs


def test_enqueue_unless_active_queues_one_job_for_concurrent_callers(project):
    start = threading.Barrier(4)
    results: list[tuple[int, bool]] = []

    def caller() -> None:
        start.wait()
        job, created = storage.enqueue_unless_active(project, "round", {"model": "x"})
        results.append((job.id, created))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert [j.params for j in storage.active_jobs(project, "round")] == [{"model": "x"}]
    other, created = storage.enqueue_unless_active(project, "target")  # another kind is independent
    assert created and other.kind == "target"


def test_enqueue_unless_active_queues_again_after_the_job_ends(project):
    first, _ = storage.enqueue_unless_active(project, "round")
    storage.cancel_job(project, first.id)
    second, created = storage.enqueue_unless_active(project, "round")
    assert created and second.id != first.id
