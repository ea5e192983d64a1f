"""Round transition with the real engine: finish a batch, the round job runs, the next batch appears."""

from __future__ import annotations

import dataclasses
import json
import time
from types import SimpleNamespace

import storage
from app import jobs, labeling
from engine.worker import run_worker
from tests.support import RGB


def label_batch_by_keys(at, project, classes=RGB[:2]):
    """What the labeling view does for each key: one event per open item (alternating classes so
    training can run), committed by the page's callback, which queues the round; then the page reruns."""
    current = storage.current_round(project)
    events = [
        {
            "seq": seq,
            "action": "label",
            "items": [item_id],
            "value": classes[seq % len(classes)],
            "how": "typed",
            "annotator": "ana",
        }
        for seq, (item_id, _) in enumerate(storage.round_queue(project, current.id), start=1)
    ]
    labeling.apply_events(project, {"client": "test", "events": events}, {})
    jobs.advance(project)
    at.run()
    assert not at.exception, [e.message for e in at.exception]


def test_finished_batch_queues_a_round_and_shows_the_next_batch(open_app, project):
    at = open_app()
    first = storage.current_round(project)
    first_ids = {i for i, _ in storage.round_items(project, first.id)}
    label_batch_by_keys(at, project)
    at.run()
    [job] = storage.active_jobs(project, "round")
    assert any("retraining" in info.value for info in at.info)
    assert at.get("progress")  # live job panel
    # the user can keep labeling validation items meanwhile
    assert any("validation images" in c.value for c in at.caption)

    assert run_worker(project.root, once=True) == 1
    at.run()
    assert storage.get_job(project, job.id).state == "done"
    second = storage.current_round(project)
    assert second.index == 1
    second_ids = {i for i, _ in storage.round_items(project, second.id)}
    assert second_ids and not second_ids & first_ids
    [view] = at.get("bidi_component")
    shown = [item for item in json.loads(view.proto.json)["items"] if not item["validation"]]
    assert {item["id"] for item in shown} == second_ids
    assert all(item["why"].startswith("proxy") and item["guess"] in RGB for item in shown)
    assert set(storage.training_labels(project)) == first_ids


def test_failed_round_shows_reason_and_retry(open_app, project):
    at = open_app()
    label_batch_by_keys(at, project, classes=RGB[:1])  # one class only: training must refuse
    run_worker(project.root, once=True)
    at.run()
    failed = storage.latest_job(project, "round")
    assert failed.state == "failed"
    assert any("2 classes" in err.value for err in at.error)
    assert len(storage.training_labels(project)) == 4  # labels intact
    assert not storage.active_jobs(project)  # no automatic retry loop

    at.button(key=f"retry-{failed.id}").click().run()
    [retry] = storage.active_jobs(project, "round")
    assert retry.id != failed.id


def test_manual_next_round_when_auto_is_off(open_app, project):
    settings = storage.load_settings(project)
    storage.save_settings(project, settings.__class__(**{**settings.__dict__, "auto_next_round": False}))
    at = open_app()
    label_batch_by_keys(at, project)
    at.run()
    assert not storage.active_jobs(project)
    start = next(b for b in at.button if b.label == "Start the next round")
    start.click().run()
    assert len(storage.active_jobs(project, "round")) == 1


def test_cancel_a_queued_round_keeps_labels_and_offers_retry(open_app, project):
    at = open_app()
    label_batch_by_keys(at, project)
    at.run()
    [job] = storage.active_jobs(project, "round")
    labeled = set(storage.training_labels(project))

    at.button(key=f"cancel-{job.id}").click().run()
    assert storage.get_job(project, job.id).state == "cancelled"
    at.run()
    assert any("was cancelled" in info.value for info in at.info)
    assert not at.error
    assert set(storage.training_labels(project)) == labeled
    assert not storage.active_jobs(project)  # a cancelled round is not restarted by itself

    at.button(key=f"retry-{job.id}").click().run()
    [again] = storage.active_jobs(project, "round")
    assert run_worker(project.root, once=True) == 1
    assert storage.get_job(project, again.id).state == "done"


def test_cancel_a_running_round_asks_the_worker_to_stop(open_app, project):
    at = open_app()
    label_batch_by_keys(at, project)
    at.run()
    job = storage.claim_job(project, "test-worker")  # as if a worker were training it now
    at.run()
    at.button(key=f"cancel-{job.id}").click().run()
    assert storage.is_cancel_requested(project, job.id)
    assert storage.get_job(project, job.id).state == "running"
    assert at.button(key=f"cancel-{job.id}").disabled
    assert any("stopping" in bar.proto.text for bar in at.get("progress"))

    storage.fail_job(project, job.id, "round cancelled")  # what the worker records when it stops
    at.run()
    assert any("was cancelled" in info.value for info in at.info)


def test_the_next_round_starts_early_and_its_batch_follows_the_open_one(tmp_path, dataset, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import state
    from tests.app.conftest import MAIN
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "early", dataset[0], initial_size=10, budget=20)
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    first = [i for i, _ in storage.round_items(project, storage.current_round(project).id)]
    events = [
        {"seq": n, "action": "label", "items": [i], "value": RGB[n % 3], "how": "typed", "annotator": "a"}
        for n, i in enumerate(first[:4], start=1)
    ]
    labeling.apply_events(project, {"client": "t", "events": events}, {})
    assert jobs.advance(project).kind == "labeling" and not storage.active_jobs(project)  # 4 of 10: not yet
    labeling.apply_events(
        project,
        {"client": "t", "events": [*events, {**events[0], "seq": 5, "items": [first[4]]}]},
        {"t": {"seq": 4, "errors": []}},
    )
    state_now = jobs.advance(project)  # half the batch, and no round timed yet: the next round starts
    assert state_now.kind == "labeling" and state_now.job.params == {"after_round": 0, "early": True}

    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert any("being chosen" in c.value for c in at.caption)
    assert run_worker(project.root, once=True) == 1
    second = storage.current_round(project)
    assert second.index == 1
    at.run()
    [view] = at.get("bidi_component")
    data = json.loads(view.proto.json)
    items = [item for item in data["items"] if not item["validation"]]  # validation mixed in: test_validation_mix
    assert data["title"].startswith("This batch and the next")
    second_ids = [i for i, _ in storage.round_items(project, second.id)]
    assert [item["id"] for item in items] == first + second_ids  # the open batch, then the next one
    assert [item["why"] for item in items][-1].startswith("proxy")
    assert not set(second_ids) & set(first)
    jobs.advance(project)
    assert not storage.active_jobs(project)  # one early round per batch


class Clock:
    """The time storage writes on job and label rows (`time.time()` in storage.jobs and storage.labels)."""

    def __init__(self, monkeypatch, now: float) -> None:
        import storage.jobs
        import storage.labels

        self.now = now
        for module in (storage.jobs, storage.labels):
            monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: self.now))


def finished_round_job(project, clock: Clock, queued: float, started: float, done: float, **result) -> storage.Job:
    """A round job stored as the worker leaves it: queued, claimed, finished at these times."""
    clock.now = queued
    job = storage.enqueue_job(project, "round", {"after_round": -1})
    clock.now = started
    assert storage.claim_job(project, "w").id == job.id
    clock.now = done
    storage.finish_job(project, job.id, {"round_id": 1, "index": 0, **result})
    return storage.get_job(project, job.id)


def test_round_seconds_counts_from_queued_to_done_of_a_round_the_job_made(project, monkeypatch):
    clock = Clock(monkeypatch, 1000.0)
    assert jobs._round_seconds(None) == 0.0
    job = finished_round_job(project, clock, queued=1000.0, started=1004.0, done=1012.5)
    assert jobs._round_seconds(storage.latest_job(project, "round")) == 12.5  # the wait in the queue counts
    made_elsewhere = finished_round_job(project, clock, queued=2000.0, started=2001.0, done=2003.0, already_made=True)
    assert jobs._round_seconds(made_elsewhere) == 0.0  # it made nothing: not a round's time
    clock.now = 3000.0
    running = storage.enqueue_job(project, "round")
    storage.claim_job(project, "w")
    assert jobs._round_seconds(storage.get_job(project, running.id)) == 0.0
    clock.now = 3030.0
    storage.fail_job(project, running.id, "RoundError: no")
    assert jobs._round_seconds(storage.get_job(project, running.id)) == 0.0
    assert storage.get_job(project, job.id).finished_at == 1012.5


def test_pace_is_the_median_gap_between_stored_labels_without_breaks(tmp_path, dataset, monkeypatch):
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "pace", dataset[0], initial_size=10, budget=20)
    current = storage.current_round(project)
    first = [i for i, _ in storage.round_items(project, current.id)]
    clock = Clock(monkeypatch, 0.0)
    assert jobs._pace(storage.round_label_times(project, current.id)) == float("inf")
    # labeled out of rank order: the times count. Gaps 2, 1, 97 and 100 (breaks), then 59 (not a break) and 3
    for item_id, at in zip(first[5:], (500.0, 502.0, 503.0, 600.0, 700.0), strict=True):
        clock.now = at
        storage.set_label(project, item_id, RGB[0])
    assert jobs._pace(storage.round_label_times(project, current.id)) == 2.0  # not 97: breaks are no pace
    for item_id, at in zip(first[:2], (759.0, 762.0), strict=True):
        clock.now = at
        storage.set_label(project, item_id, RGB[1])
    assert storage.round_label_times(project, current.id) == [500.0, 502.0, 503.0, 600.0, 700.0, 759.0, 762.0]
    assert jobs._pace(storage.round_label_times(project, current.id)) == 3.0  # kept gaps 1, 2, 3, 59
    one = make_app_project(tmp_path / "one", dataset[0])
    [(item_id, _), *_] = storage.round_queue(one, storage.current_round(one).id)
    storage.set_label(one, item_id, RGB[0])
    assert jobs._pace(storage.round_label_times(one, storage.current_round(one).id)) == float("inf")  # no gap yet


def early_start(project, clock: Clock, pace: float, label_from: float) -> int:
    """Label the open batch at `pace` seconds per label, calling advance after each as the page does;
    the number of labels done when the early round was queued (0: never)."""
    current = storage.current_round(project)
    for count, (item_id, _) in enumerate(storage.round_queue(project, current.id), start=1):
        clock.now = label_from + count * pace
        storage.set_label(project, item_id, RGB[count % 3])
        state = jobs.advance(project)
        if storage.active_jobs(project, "round"):
            assert state.job.params == {"after_round": current.index, "early": True}
            return count
    return 0


def test_the_early_round_leaves_a_margin_over_the_last_round_time(tmp_path, dataset, monkeypatch):
    """The last round took 10 s from queued to done (6 s waiting, 4 s running); at 4 s per label the open
    items must take at most 1.5 x 10 s + one label (19 s): the round starts with 4 of 10 open (16 s).
    Nothing is mocked: the round time and the pace come from the stored job and label rows."""
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "margin", dataset[0], initial_size=10, budget=20)
    clock = Clock(monkeypatch, 0.0)
    finished_round_job(project, clock, queued=1000.0, started=1006.0, done=1010.0)
    assert early_start(project, clock, pace=4.0, label_from=2000.0) == 6


def test_the_early_round_starts_at_half_the_batch_after_a_long_round(tmp_path, dataset, monkeypatch):
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "long", dataset[0], initial_size=10, budget=20)
    clock = Clock(monkeypatch, 0.0)
    finished_round_job(project, clock, queued=1000.0, started=1001.0, done=4600.0)
    assert early_start(project, clock, pace=4.0, label_from=5000.0) == 5  # never before half the batch


def test_the_early_round_waits_for_eight_tenths_of_the_batch_after_a_quick_round(tmp_path, dataset, monkeypatch):
    """A 2 s round at 30 s per label never fits (open items x 30 > 1.5 x 2 + 30): it starts at 80 %."""
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "quick", dataset[0], initial_size=10, budget=20)
    clock = Clock(monkeypatch, 0.0)
    finished_round_job(project, clock, queued=1000.0, started=1000.5, done=1002.0)
    assert early_start(project, clock, pace=30.0, label_from=5000.0) == 8


def test_the_page_starts_a_worker_only_for_a_job_no_worker_runs(project, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start_worker", lambda p: started.append(p))
    job = storage.enqueue_job(project, "round")
    jobs.keep_worker_for(project, job)
    assert len(started) == 1  # queued: nobody has it yet
    running = storage.claim_job(project, "w")
    jobs.keep_worker_for(project, running)
    assert len(started) == 1  # a live heartbeat: its worker is there
    silent = dataclasses.replace(running, heartbeat_at=time.time() - jobs.SILENT_BEATS * 5 - 1)
    jobs.keep_worker_for(project, silent)
    assert len(started) == 2  # its worker died: a new one will claim it once stale
