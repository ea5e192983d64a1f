"""Validation as you go (issue 25): the batch view mixes validation images in at the pace the budget sets,
marks them, never lets them hold up or start a round, and a project labeled batch by batch ends with its
validation set labeled."""

from __future__ import annotations

import json

import pytest

import storage
from app import jobs, labeler, labeling
from app.labeling import Entry
from engine.initial import run_initial_round
from tests.support import make_tiny_project


def entry(item_id: int, validation: bool = False) -> Entry:
    return Entry(item_id, f"img_{item_id}.png", None, validation, None, False)


@pytest.mark.parametrize(
    "size, budget, queued, due",
    [
        (10, 40, 0, 0),
        (10, 40, 4, 1),  # 10 / 40 per batch image, rounded up
        (10, 40, 20, 5),
        (10, 40, 39, 10),
        (10, 40, 40, 10),  # the budget queued: the whole set
        (10, 40, 55, 10),  # a budget lowered below what was queued
        (49, 117, 12, 6),
        (0, 40, 20, 0),
        (5, 0, 0, 5),
    ],
)
def test_validation_due_spreads_the_set_evenly_over_the_budget(size, budget, queued, due):
    assert labeling.validation_due(size, budget, queued) == due


def test_validation_images_are_interleaved_and_the_batch_ends_the_list():
    batch = [entry(i) for i in range(4)]
    assert [e.item_id for e in labeling.interleave(batch, [entry(10, True)])] == [0, 1, 10, 2, 3]
    extra = [entry(10 + j, True) for j in range(4)]
    assert [e.item_id for e in labeling.interleave(batch, extra)] == [10, 0, 11, 1, 12, 2, 13, 3]
    assert labeling.interleave(batch, []) == batch


def _project(tmp_path, **overrides):
    settings = dict(budget=24, initial_size=6, round_size=6, validation_size=9) | overrides
    project = make_tiny_project(tmp_path, per_class=20, **settings)
    run_initial_round(project)
    return project


def _next_round(project: storage.Project) -> storage.Round:
    """A selection round without training: the next candidates in id order (what rounds choose does not
    matter here, only that they queue round_size images of the budget)."""
    settings = storage.load_settings(project)
    inputs = storage.read_round_inputs(project)
    chosen = inputs.candidates[: min(settings.round_size, storage.budget_left(project))]
    return storage.create_round(
        project, strategy="least_confidence", selector="test", item_ids=chosen, scores=[0.5] * len(chosen), n_labeled=0
    )


def _label_all(project: storage.Project, entries: list[Entry], seq: int) -> int:
    """Label every open entry of the view, in its order, through the view's events."""
    events = [
        {"seq": seq + k, "action": "label", "items": [e.item_id], "value": "red", "how": "typed", "annotator": "a"}
        for k, e in enumerate((e for e in entries if not e.done), start=1)
    ]
    labeling.apply_events(project, {"client": "sim", "events": events}, {})
    return seq + len(events)


def test_a_project_labeled_batch_by_batch_ends_with_its_validation_set_labeled(tmp_path):
    project = _project(tmp_path)
    settings = storage.load_settings(project)
    queued, seq, mixed_per_batch = 0, 0, []
    while True:
        entries = labeling.mixed_batch_entries(project)
        batch = [e for e in entries if not e.is_validation]
        mixed = [e for e in entries if e.is_validation]
        # the mix rate: this batch brings exactly what its share of the budget makes due
        due_before = labeling.validation_due(9, settings.budget, queued)
        queued += len(batch)
        assert len(mixed) == labeling.validation_due(9, settings.budget, queued) - due_before
        assert entries[-1] in batch  # the batch's last image comes after every validation image
        mixed_per_batch.append(len(mixed))
        seq = _label_all(project, entries, seq)
        # never behind: as many validation labels as the training labels so far make due
        assert len(storage.validation_labels(project)) >= labeling.validation_due(9, settings.budget, queued)
        if storage.budget_left(project) == 0:
            break
        _next_round(project)
    assert len(storage.training_labels(project)) == settings.budget == 24
    assert len(storage.validation_labels(project)) == 9  # the whole validation set, by the last batch
    assert mixed_per_batch == [3, 2, 2, 2]  # 9 over 24: rounded up, never all at the end


def test_validation_images_passed_over_come_back_in_the_next_batch(tmp_path):
    project = _project(tmp_path)
    first = labeling.mixed_batch_entries(project)
    passed = [e.item_id for e in first if e.is_validation]
    _label_all(project, [e for e in first if not e.is_validation], 0)  # only the batch's own images
    assert storage.open_rounds(project) == []  # the batch is done without them
    _next_round(project)
    second = labeling.mixed_batch_entries(project)
    shown = [e.item_id for e in second if e.is_validation]
    assert shown[: len(passed)] == passed and len(shown) == len(passed) + 2


def test_a_validation_image_labeled_in_the_batch_stays_shown_as_done(tmp_path):
    project = _project(tmp_path)
    entries = labeling.mixed_batch_entries(project)
    val = next(e for e in entries if e.is_validation)
    _label_all(project, [val], 0)
    again = {e.item_id: e for e in labeling.mixed_batch_entries(project)}
    assert again[val.item_id].label == "red" and again[val.item_id].done


def test_validation_labeled_on_its_own_is_not_mixed_in_again(tmp_path):
    project = _project(tmp_path)
    storage.reserve_validation(project)
    for item_id in storage.validation_order(project):
        storage.set_label(project, item_id, "green")
    _label_all(project, labeling.mixed_batch_entries(project), 0)
    _next_round(project)  # a later batch, made after the validation set was labeled
    assert not any(e.is_validation for e in labeling.mixed_batch_entries(project))


def test_mixed_validation_images_neither_hold_up_nor_start_a_round_and_label_validation(tmp_path):
    project = _project(tmp_path)
    round0 = storage.current_round(project)
    entries = labeling.mixed_batch_entries(project)
    val = [e.item_id for e in entries if e.is_validation]
    assert val and set(val) <= set(storage.validation_ids(project))
    _label_all(project, [e for e in entries if e.is_validation], 0)
    assert set(val) <= set(storage.validation_labels(project))  # labels on them go to validation ...
    assert not set(val) & set(storage.training_labels(project))  # ... never to training
    assert all(e.round_id is None for i in val for e in storage.label_history(project, i))
    assert storage.round_label_times(project, round0.id) == []  # the batch counts none of them done
    assert jobs.advance(project).kind == "labeling" and storage.active_jobs(project, "round") == []  # no early round
    _label_all(project, [e for e in entries if not e.is_validation][:-1], 100)
    assert not storage.round_complete(project, round0.id)
    _label_all(project, [e for e in entries if not e.is_validation][-1:], 200)
    assert storage.round_complete(project, round0.id)  # done by its queued images alone
    state = jobs.advance(project)
    assert state.kind == "running" and state.job.params == {"after_round": 0}


def test_mixed_validation_images_are_marked_in_the_payload(tmp_path):
    project = _project(tmp_path)
    entries = labeling.mixed_batch_entries(project)
    items = [labeler.item_payload(e, "random") for e in entries]
    assert [i["validation"] for i in items] == [e.is_validation for e in entries]
    assert all(i["why"] == "validation" and i["guess"] is None for i in items if i["validation"])
    assert all(i["why"] == "random pick" for i in items if not i["validation"])


def test_the_label_page_shows_the_batch_with_its_validation_images(open_app, project):
    at = open_app()
    [view] = at.get("bidi_component")
    data = json.loads(view.proto.json)
    mixed = [i for i in data["items"] if i["validation"]]
    settings = storage.load_settings(project)
    assert len(mixed) == labeling.validation_due(settings.validation_size, settings.budget, settings.initial_size)
    assert data["title"] == f"This batch (with {len(mixed)} validation image)"
    assert any("Validation images are mixed in" in c.value for c in at.caption)
