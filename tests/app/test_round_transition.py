"""Round transition with the real engine: finish a batch, the round job runs, the next batch appears."""

from __future__ import annotations

import dataclasses
import json
import time

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
    shown = json.loads(view.proto.json)["items"]
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
    items = data["items"]
    assert data["title"] == "This batch and the next"
    second_ids = [i for i, _ in storage.round_items(project, second.id)]
    assert [item["id"] for item in items] == first + second_ids  # the open batch, then the next one
    assert [item["why"] for item in items][-1].startswith("proxy")
    assert not set(second_ids) & set(first)
    jobs.advance(project)
    assert not storage.active_jobs(project)  # one early round per batch


def test_the_early_round_starts_sooner_when_the_last_round_took_longer_than_the_open_items_will(
    tmp_path, dataset, monkeypatch
):
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "pace", dataset[0], initial_size=10, budget=20)
    first = [i for i, _ in storage.round_items(project, storage.current_round(project).id)]
    monkeypatch.setattr(jobs, "_round_seconds", lambda job: 3600.0)  # rounds take long at this pace
    for count, item_id in enumerate(first[:5], start=1):
        storage.set_label(project, item_id, RGB[count % 3])
        jobs.advance(project)
        assert bool(storage.active_jobs(project)) == (count == 5)  # never before half the batch
    assert jobs._pace([0.0, 2.0, 3.0, 100.0, 104.0]) == 2.0  # a break of 97 s is not the pace
    assert jobs._pace([5.0]) == float("inf")


def test_the_early_round_leaves_a_margin_over_the_last_round_time(tmp_path, dataset, monkeypatch):
    """A 10 s round at 4 s per label: the open items must take at most 1.5 x 10 s + one label (17 s),
    so the round starts with 4 items open (6 of 10 done); without the margin it would wait for 2."""
    from tests.support import make_app_project

    project = make_app_project(tmp_path / "margin", dataset[0], initial_size=10, budget=20)
    first = [i for i, _ in storage.round_items(project, storage.current_round(project).id)]
    monkeypatch.setattr(jobs, "_round_seconds", lambda job: 10.0)
    monkeypatch.setattr(jobs, "_pace", lambda times: 4.0)
    for count, item_id in enumerate(first[:6], start=1):
        storage.set_label(project, item_id, RGB[count % 3])
        jobs.advance(project)
        assert bool(storage.active_jobs(project)) == (count == 6)


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
