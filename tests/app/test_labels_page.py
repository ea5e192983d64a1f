"""The Labels page's filters on a project with a trained round: "Proxy disagrees" and "Round"."""

from __future__ import annotations

import json

import pytest

import storage
from app import jobs
from engine.worker import run_worker
from tests.support import RGB, label_by_folder, label_queue, make_app_project, write_image_folder


@pytest.fixture
def project(tmp_path) -> storage.Project:
    """Round 0 and the validation set labeled with the truth, then round 1 made by a trained proxy, whose
    guesses are stored with its batch (replaces the conftest's fresh project, so open_app draws this one)."""
    write_image_folder(tmp_path / "images", per_class=8)
    project = make_app_project(tmp_path / "project", tmp_path / "images")
    label_by_folder(project, storage.validation_ids(project))
    label_queue(project)
    jobs.advance(project)
    assert run_worker(project.root, once=True) == 1
    assert storage.current_round(project).index == 1
    return project


def listed(at) -> list[int]:
    [view] = at.get("bidi_component")
    return [item["id"] for item in json.loads(view.proto.json)["items"]]


def test_proxy_disagrees_and_round_list_exactly_the_matching_items(open_app, project):
    zero, one = storage.list_rounds(project)
    round_zero = [i for i, _ in storage.round_items(project, zero.id)]
    round_one = [i for i, _ in storage.round_items(project, one.id)]
    guesses = {item_id: name for item_id, (name, _) in storage.round_guesses(project, one.id).items()}
    assert sorted(guesses) == sorted(round_one)  # the trained round guessed every item it queued
    against, skipped, agreed = round_one[:2], round_one[2], round_one[3:]
    for item_id in against:  # labeled with a class the proxy did not guess
        storage.set_label(project, item_id, next(c for c in RGB if c != guesses[item_id]), annotator="ana")
    storage.set_label(project, skipped, storage.SKIP, annotator="ana")  # a skip disagrees with nothing
    for item_id in agreed:
        storage.set_label(project, item_id, guesses[item_id], annotator="ana")
    validation = storage.validation_ids(project)

    at = open_app("app/page_labels.py")
    assert listed(at) == sorted([*round_zero, *round_one, *validation])
    assert at.multiselect(key="browse_rounds").options == ["batch 1", "batch 2"]  # people count from 1

    at.toggle(key="browse_disagrees").set_value(True).run()
    assert listed(at) == sorted(against)  # not round 0's labels (no guess), not the skip, not the agreeing ones
    [view] = at.get("bidi_component")
    why = {item["id"]: item["why"] for item in json.loads(view.proto.json)["items"]}
    assert why == {i: f"batch 2 · by ana · proxy said {guesses[i]}" for i in against}

    at.toggle(key="browse_disagrees").set_value(False).run()
    at.multiselect(key="browse_rounds").set_value([1]).run()
    assert listed(at) == sorted(round_one)  # its skip included; no validation item belongs to a round
    at.multiselect(key="browse_rounds").set_value([0]).run()
    assert listed(at) == sorted(round_zero)
    at.multiselect(key="browse_rounds").set_value([0, 1]).run()
    assert listed(at) == sorted([*round_zero, *round_one])
    at.toggle(key="browse_disagrees").set_value(True).run()
    at.multiselect(key="browse_rounds").set_value([0]).run()
    assert next(c.value for c in at.caption if "items match" in c.value).startswith("0 of ")  # both filters at once


def test_possibly_mislabeled_lists_the_open_suspects_of_the_latest_curation(open_app, project):
    labeled = sorted(storage.training_labels(project).items())
    flagged = [item_id for item_id, _ in labeled[:2]]
    rows = [
        storage.CoresetRow(
            item_id,
            position,
            kept=False,
            forgetting=float("inf"),
            alternative=(position + 1) % 3,
            confidence=0.4 if item_id == flagged[0] else 0.1,  # the second one's label is the least likely
            suspect=True,
        )
        if item_id in flagged
        else storage.CoresetRow(item_id, position, kept=False)
        for item_id, position in labeled
    ]
    watermark = storage.read_round_inputs(project).label_watermark
    storage.save_coreset_run(
        project,
        method="forgetting",
        keep=1.0,
        balance=True,
        selector="proxy",
        selector_model="proxy_tiny",
        label_watermark=watermark,
        rows=rows,
    )
    at = open_app("app/page_labels.py")
    at.toggle(key="browse_suspects").set_value(True).run()
    assert listed(at) == flagged[::-1]  # least likely label first, as on the Curate page
    assert any(
        "2 to review of the 2 labels the last curation flagged (0 reviewed, 0 changed)" in c.value for c in at.caption
    )
    [view] = at.get("bidi_component")
    items = json.loads(view.proto.json)["items"]
    assert all("never learned" in item["why"] and "proxy suggests" in item["why"] for item in items)
    assert all(item["captioned"] for item in items)  # the reasons are written on the tiles
    name = storage.current_labels(project)[flagged[0]]
    storage.set_label(project, flagged[0], name, annotator="ben")  # the same class again: the label is right
    at.run()
    assert listed(at) == flagged[1:]
    assert any(
        "1 to review of the 2 labels the last curation flagged (1 reviewed, 0 changed)" in c.value for c in at.caption
    )


def test_the_history_of_an_image_lists_every_label_it_was_given(open_app, project):
    zero = storage.list_rounds(project)[0]
    item_id = storage.round_items(project, zero.id)[0][0]
    was = storage.current_label(project, item_id)
    storage.set_label(project, item_id, next(c for c in RGB if c != was), annotator="bob", source="bulk")
    storage.set_label(project, item_id, storage.SKIP, annotator="cy")
    at = open_app("app/page_labels.py")
    assert not at.dataframe  # nothing until an image is chosen
    at.selectbox(key="history_item").set_value(item_id).run()
    [table] = at.dataframe
    frame = table.value
    assert list(frame["what"]) == [was, next(c for c in RGB if c != was), "skipped"]
    assert list(frame["annotator"]) == ["oracle", "bob", "cy"]
    assert list(frame["how"]) == ["", "bulk", ""]
    assert list(frame["batch"]) == ["1", "1", "1"]  # round 0, as people count it


def test_an_imported_label_is_captioned_with_its_file():
    from app.page_labels import caption

    row = storage.LabeledItem(1, "blue/a.png", "blue", False, False, None, "labels.csv", "imported", None)
    assert caption(row) == "imported · by labels.csv"
