"""Label page: what the browser labeling view receives, and how its events are committed.

The view itself (keys, grid, zoom) runs in the browser: tests/app/test_labeler_browser.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

import storage
from app import jobs, labeler, labeling
from tests.support import RGB


def batch_ids(project):
    return [item_id for item_id, _ in storage.round_items(project, storage.current_round(project).id)]


def view_data(at) -> dict:
    [view] = at.get("bidi_component")
    return json.loads(view.proto.json)


def event(seq, action, items, value=None, how="typed", annotator="ana") -> dict:
    return {"seq": seq, "action": action, "items": items, "value": value, "how": how, "annotator": annotator}


def test_view_gets_the_batch_classes_and_image_urls(open_app, project):
    data = view_data(open_app())
    ids = batch_ids(project)
    batch = [item for item in data["items"] if not item["validation"]]
    assert [item["id"] for item in batch] == ids
    assert data["classes"] == list(RGB)
    assert data["title"] == "This batch (with 1 validation image)"  # validation as you go: test_validation_mix.py
    assert all(item["label"] is None and not item["skipped"] and item["why"] == "random pick" for item in batch)
    assert all(item["guess"] is None for item in data["items"])  # a random batch has no guesses
    assert set(data["urls"]) == {"grid", "focus", "full"}
    assert all(
        data["urls"][size].startswith("/px/") and data["urls"][size].endswith(f"/{{id}}/{size}")
        for size in data["urls"]
    )
    assert data["served"] is False  # AppTest does not start server.py
    assert "server.py" in data["notServed"]


def test_events_commit_in_order_once_and_are_acknowledged(project):
    first, second, third = batch_ids(project)[:3]
    acks: dict = {}
    outbox = {"client": "tab-1", "events": [event(1, "label", [first], "red"), event(2, "skip", [second])]}
    assert labeling.apply_events(project, outbox, acks) == 2
    assert labeling.apply_events(project, outbox, acks) == 0  # sent again by a coalesced rerun
    outbox["events"] += [event(3, "label", [third], "blue", how="accepted"), event(4, "undo", [third])]
    assert labeling.apply_events(project, outbox, acks) == 2
    assert {k: acks["tab-1"][k] for k in ("seq", "errors", "annotator", "last_item")} == {
        "seq": 4,
        "errors": [],
        "annotator": "ana",
        "last_item": third,
    }  # the last label or skip: where ana is (app/claims.py)
    assert storage.current_label(project, first) == "red"
    assert storage.current_label(project, second) is storage.SKIP
    assert storage.current_label(project, third) is None
    history = storage.label_history(project, third)
    assert [(e.kind, e.class_name, e.annotator, e.source) for e in history] == [
        ("label", "blue", "ana", "accepted"),
        ("clear", None, "ana", None),
    ]


def test_refused_events_are_reported_and_do_not_block_the_next(project):
    first, second = batch_ids(project)[:2]
    acks: dict = {}
    outbox = {
        "client": "tab-1",
        "events": [
            event(1, "label", [first], "purple"),  # a class removed meanwhile
            event(2, "label", [second], "red", annotator=" "),  # no annotator name
            event(3, "label", [999_999], "red"),  # an item that does not exist
            event(4, "label", [second], "green"),
        ],
    }
    assert labeling.apply_events(project, outbox, acks) == 1
    assert [e["seq"] for e in acks["tab-1"]["errors"]] == [1, 2, 3]
    assert "unknown class" in acks["tab-1"]["errors"][0]["message"]
    assert "annotator" in acks["tab-1"]["errors"][1]["message"]
    assert storage.current_labels(project) == {second: "green"}


def test_a_stale_tab_labels_the_image_it_shows(project):
    shown_in_both = batch_ids(project)[0]
    acks: dict = {}
    labeling.apply_events(project, {"client": "tab-1", "events": [event(1, "label", [shown_in_both], "red")]}, acks)
    # tab 2 still shows the same image (it never saw tab 1's label) and labels it: it lands there, nowhere else
    labeling.apply_events(
        project, {"client": "tab-2", "events": [event(1, "label", [shown_in_both], "blue", annotator="bob")]}, acks
    )
    assert storage.current_labels(project) == {shown_in_both: "blue"}
    assert [e.annotator for e in storage.label_history(project, shown_in_both)] == ["ana", "bob"]


def test_bulk_events_label_every_selected_item_in_one_transaction(project):
    ids = batch_ids(project)
    acks: dict = {}
    labeling.apply_events(project, {"client": "t", "events": [event(1, "label", ids, "green", how="bulk")]}, acks)
    assert storage.current_labels(project) == dict.fromkeys(ids, "green")
    assert {storage.label_history(project, i)[-1].source for i in ids} == {"bulk"}
    labeling.apply_events(project, {"client": "t", "events": [event(2, "undo", ids)]}, acks)
    assert storage.current_labels(project) == {}


def test_acknowledgements_and_labels_reach_the_view(open_app, project):
    at = open_app()
    first = batch_ids(project)[0]
    acks = {"tab-1": {"seq": 0, "errors": []}}
    labeling.apply_events(
        project,
        {"client": "tab-1", "events": [event(1, "label", [first], "blue"), event(2, "label", [first], "nope")]},
        acks,
    )
    at.session_state[labeler.ACKS] = acks
    data = view_data(at.run())
    assert data["acked"] == {"tab-1": 2}
    assert [e["seq"] for e in data["errors"]["tab-1"]] == [2]
    assert next(item for item in data["items"] if item["id"] == first)["label"] == "blue"


def test_guesses_of_a_proxy_batch_are_shown(open_app, project):
    ids = batch_ids(project)
    for position, item_id in enumerate(ids):
        storage.set_label(project, item_id, RGB[position % 3])
    candidates = storage.unlabeled_ids(project)[:2]
    storage.create_round(
        project,
        strategy="least_confidence",
        selector="proxy_tiny",
        item_ids=candidates,
        scores=[0.4, 0.3],
        n_labeled=4,
        guesses=[2, 0],
        confidences=[0.6, 0.7],
    )
    items = [i for i in view_data(open_app())["items"] if not i["validation"]]
    assert [(i["id"], i["guess"], i["conf"]) for i in items] == [
        (candidates[0], "blue", 0.6),
        (candidates[1], "red", 0.7),
    ]
    assert items[0]["why"] == "proxy 60% sure"


def test_validation_worklist_is_labeled_the_same_way(open_app, project):
    at = open_app()
    at.segmented_control(key="source").set_value("Validation").run()
    data = view_data(at)
    assert data["title"] == "Validation set"
    assert [i["id"] for i in data["items"]] == storage.validation_order(project)
    assert all(i["why"] == "validation" and i["guess"] is None for i in data["items"])


def test_the_last_label_of_a_batch_queues_one_round(project):
    ids = batch_ids(project)
    acks: dict = {}
    for tab in ("tab-1", "tab-2"):  # both tabs send the batch's last labels
        labeling.apply_events(project, {"client": tab, "events": [event(1, "label", ids, "red", how="bulk")]}, acks)
        jobs.advance(project)
    [job] = storage.active_jobs(project, "round")
    assert job.params == {"after_round": 0}


def test_why_chosen_captions():
    assert labeling.why_chosen("random", 0.3) == "random pick"
    assert labeling.why_chosen("least_confidence", 0.25) == "proxy 75% sure"
    assert labeling.why_chosen("kcenter", None) == "first pick"
    assert labeling.why_chosen("margin", 0.9) == "margin 0.10"


@pytest.mark.parametrize("outbox", [None, {}, {"client": ""}, {"client": "t", "events": []}])
def test_empty_outboxes_commit_nothing(project, outbox):
    assert labeling.apply_events(project, outbox, {}) == 0
    assert storage.current_labels(project) == {}


def test_label_browser_filters_and_relabels_in_place(open_app, project):
    first, second, third = batch_ids(project)[:3]
    storage.set_label(project, first, "red", annotator="ana")
    storage.set_label(project, second, "green", annotator="bob")
    storage.set_label(project, third, storage.SKIP, annotator="ana")
    at = open_app("app/page_labels.py")
    data = view_data(at)
    assert data["mode"] == "grid" and data["title"] == "Shown"
    shown = {item["id"]: item for item in data["items"]}
    assert {first, second, third} <= set(shown)
    assert set(shown) - {first, second, third} == set(storage.validation_ids(project))
    assert shown[first]["why"] == "batch 1 · by ana" and shown[third]["skipped"]  # batches count from 1

    at.multiselect(key="browse_people").set_value(["bob"]).run()
    assert [item["id"] for item in view_data(at)["items"]] == [second]
    at.multiselect(key="browse_people").set_value([]).run()
    at.pills(key="browse_kinds").set_value(["skipped"]).run()
    assert [item["id"] for item in view_data(at)["items"]] == [third]

    # relabel in place: the view's event goes through the same commit; the history keeps both
    labeling.apply_events(project, {"client": "b", "events": [event(1, "label", [second], "blue")]}, {})
    assert [e.class_name for e in storage.label_history(project, second)] == ["green", "blue"]


def test_a_refused_class_removal_links_to_its_images(open_app, project):
    storage.set_label(project, batch_ids(project)[0], "blue")
    at = open_app("app/page_project.py")
    at.text_area[0].set_value("red\ngreen")
    next(b for b in at.button if b.proto.form_id == "classes").click().run()
    assert any("still labels 1 images" in e.value for e in at.error)
    at.button(key="show-class-images").click().run()
    assert at.session_state["browse_classes"] == ["blue"]
    items = view_data(at)["items"]
    assert [item["label"] for item in items] == ["blue"]


def test_a_refused_write_keeps_the_events_and_commits_them_later(project, monkeypatch):
    """Disk full while labeling: nothing is acknowledged, nothing refused for good; the retry commits all."""
    first, second = batch_ids(project)[:2]
    acks: dict = {}
    outbox = {"client": "tab-1", "events": [event(1, "label", [first], "red"), event(2, "label", [second], "blue")]}
    real = storage.set_labels

    def full(*_args, **_kwargs):
        raise storage.UnavailableError("the disk holding the project is full; free some space and try again")

    monkeypatch.setattr(storage, "set_labels", full)
    with pytest.raises(storage.UnavailableError):
        labeling.apply_events(project, outbox, acks)
    assert acks["tab-1"] == {"seq": 0, "errors": []}
    monkeypatch.setattr(storage, "set_labels", real)
    assert labeling.apply_events(project, outbox, acks) == 2
    assert storage.current_labels(project) == {first: "red", second: "blue"}


def test_the_page_says_labels_are_not_saved_yet_and_retries_on_render(open_app, project, monkeypatch):
    first = batch_ids(project)[0]
    at = open_app()
    at.session_state["labeler-Batch"] = {"outbox": {"client": "tab-1", "events": [event(1, "label", [first], "red")]}}
    at.session_state[labeler.UNSAVED] = "the disk holding the project is full"
    real, disk = storage.set_labels, {"full": True}

    def set_labels(*args, **kwargs):
        if disk["full"]:
            raise storage.UnavailableError("the disk holding the project is full")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "set_labels", set_labels)
    at.run()
    assert any("Labels not saved yet" in e.value and "full" in e.value for e in at.error)
    assert storage.current_labels(project) == {}
    disk["full"] = False
    at.run()
    assert not at.error
    assert storage.current_labels(project) == {first: "red"}
    assert view_data(at)["acked"] == {"tab-1": 1}


def test_an_exhausted_pool_points_to_the_target_not_to_a_retry(open_app, project):
    """Every image labeled or set aside: no round job is queued, and the page says to train the target."""
    from engine.initial import candidate_ids

    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), budget=21))
    storage.reserve_validation(project)
    for item_id in batch_ids(project) + candidate_ids(project):
        storage.set_label(project, item_id, "red", annotator="ana")
    assert jobs.round_state(project).kind == "exhausted"
    assert jobs.advance(project).kind == "exhausted" and storage.latest_job(project, "round") is None
    at = open_app()
    assert any("nothing left to choose from" in s.value for s in at.success)
    assert not [b for b in at.button if (b.key or "").startswith("retry-")]


@pytest.mark.parametrize("claimed", ["imported", "oracle", "made-up"])
def test_the_view_cannot_claim_a_source_it_never_gives(project, claimed):
    [first, *_] = batch_ids(project)
    labeling.apply_events(project, {"client": "t", "events": [event(1, "label", [first], "red", how=claimed)]}, {})
    assert storage.current_labels(project) == {first: "red"}
    assert storage.label_history(project, first)[-1].source is None


def test_batches_are_numbered_from_one_for_people(open_app, project):
    at = open_app()
    ids = batch_ids(project)
    labeling.apply_events(project, {"client": "t", "events": [event(1, "label", ids, "red", how="bulk")]}, {})
    jobs.advance(project)
    at.run()
    assert any(info.value.startswith("Batch 1 is done.") for info in at.info)  # round 0 is the first batch
    assert labeling.batch_offset(project) == 1


def test_a_round_0_of_imported_labels_is_no_batch(tmp_path):
    from tests.support import make_tiny_project

    project = make_tiny_project(tmp_path)
    storage.create_round(project, strategy="imported", selector="labels", item_ids=[], scores=[], n_labeled=0)
    assert labeling.batch_offset(project) == 0  # round 1, the first batch labeled, is batch 1


@pytest.mark.parametrize(
    ("auto", "learning", "says"),
    [
        (True, False, "The imported labels are in. The proxy is training on them and choosing the first batch;"),
        (True, True, "The imported labels are in. The first batch is chosen once the representation"),
        (False, False, "The imported labels are in. Automatic rounds are off in the settings."),
    ],
    ids=["training", "behind-the-backbone", "auto-off"],
)
def test_after_imported_labels_the_page_says_they_are_in_not_batch_0(tmp_path, monkeypatch, auto, learning, says):
    """Round 0 stands for the imported labels: while the proxy trains on them (or waits for the backbone, or for
    the user), the page says so and names the batch it chooses the first, never 'Batch 0 is done'."""
    from streamlit.testing.v1 import AppTest

    from app import state
    from app.page_label import batch_number
    from engine.initial import start_from_labels
    from tests.app.conftest import MAIN
    from tests.support import APP_SETTINGS, label_by_folder, tiny_settings, write_image_folder

    write_image_folder(tmp_path / "images", per_class=8)
    settings = tiny_settings(tmp_path / "images", **APP_SETTINGS, auto_next_round=auto)
    project = storage.create_project(tmp_path / "imported", settings)
    storage.ingest(project)
    label_by_folder(project, [item.id for item in storage.usable_items(project)][:12])
    imported = start_from_labels(project)
    assert imported.strategy == "imported"
    if learning:
        storage.enqueue_job(project, "backbone")
    rs = jobs.advance(project)
    assert rs.kind == ("running" if auto else "waiting")
    assert batch_number(project, rs) is None  # the imported labels are no batch
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    shown = [info.value for info in at.info]
    assert any(value.startswith(says) for value in shown), shown
    assert not any("batch 0" in value.lower() for value in shown)
