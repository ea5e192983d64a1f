"""Labels: append-only history, undo, queries, the validation set."""

from __future__ import annotations

import dataclasses

import pytest

import storage
from storage import SKIP


def _kinds(project, item_id):
    return [(e.kind, e.class_name) for e in storage.label_history(project, item_id)]


def test_set_label_returns_committed_event(project):
    event = storage.set_label(project, 1, "cat", annotator="ana")
    assert (event.item_id, event.class_name, event.skipped, event.annotator, event.round_id) == (
        1,
        "cat",
        False,
        "ana",
        None,
    )
    assert event.created_at > 0
    assert storage.current_label(storage.open_project(project.root), 1) == "cat"


def test_history_is_append_only_and_latest_wins(project):
    storage.set_label(project, 2, "cat")
    storage.set_label(project, 2, SKIP, annotator="bob")
    storage.set_label(project, 2, "dog")
    assert _kinds(project, 2) == [("label", "cat"), ("skip", None), ("label", "dog")]
    history = storage.label_history(project, 2)
    assert [e.annotator for e in history] == ["user", "bob", "user"]
    assert history[1].skipped and not history[2].skipped
    assert storage.current_label(project, 2) == "dog"
    assert storage.current_label(project, 3) is None


def test_skip_and_clear(project):
    storage.set_label(project, 4, SKIP)
    assert storage.current_label(project, 4) is SKIP
    assert repr(SKIP) == "SKIP"
    storage.clear_label(project, 4)
    assert storage.current_label(project, 4) is None
    assert 4 in storage.unlabeled_ids(project)


def test_undo_walks_back_through_history(project):
    assert storage.undo_label(project, 5) is None
    storage.set_label(project, 5, "cat")
    storage.set_label(project, 5, "dog")
    storage.set_label(project, 5, SKIP)
    assert storage.undo_label(project, 5, annotator="ana").class_name == "dog"
    assert storage.current_label(project, 5) == "dog"
    assert storage.undo_label(project, 5).class_name == "cat"
    assert storage.undo_label(project, 5).kind == "clear"
    assert storage.current_label(project, 5) is None
    assert storage.undo_label(project, 5) is None
    assert len(storage.label_history(project, 5)) == 6
    assert storage.label_history(project, 5)[3].annotator == "ana"


def test_undo_after_new_label_undoes_only_that_label(project):
    storage.set_label(project, 6, "cat")
    storage.set_label(project, 6, "dog")
    storage.undo_label(project, 6)
    storage.set_label(project, 6, "bird")
    storage.undo_label(project, 6)
    assert storage.current_label(project, 6) == "cat"


def test_errors_write_nothing(project):
    with pytest.raises(storage.SettingsError, match="unknown class 'horse'"):
        storage.set_label(project, 1, "horse")
    with pytest.raises(storage.StorageError, match="no item with id 999"):
        storage.set_label(project, 999, "cat")
    with pytest.raises(storage.StorageError, match="no round with id 7"):
        storage.set_label(project, 1, "cat", round_id=7)
    with pytest.raises(storage.StorageError, match="no item with id 999"):
        storage.undo_label(project, 999)
    assert storage.label_history(project, 1) == []


def test_round_id_defaults_to_the_round_that_queued_the_item(project):
    made = storage.create_round(
        project, strategy="random", selector="none", item_ids=[7, 8], scores=[1.0, 0.5], n_labeled=0
    )
    assert storage.set_label(project, 7, "cat").round_id == made.id
    assert storage.set_label(project, 9, "cat").round_id is None
    assert storage.set_label(project, 9, "dog", round_id=made.id).round_id == made.id


def test_queries_partition_items_and_count_training_labels(project):
    settings = dataclasses.replace(storage.load_settings(project), validation_size=3)
    storage.save_settings(project, settings)
    validation = storage.reserve_validation(project)
    training = [i for i in range(1, 21) if i not in validation]
    storage.set_label(project, training[0], "cat")
    storage.set_label(project, training[1], "cat")
    storage.set_label(project, training[2], "bird")
    storage.set_label(project, training[3], SKIP)
    storage.set_label(project, validation[0], "dog")
    storage.set_label(project, validation[1], SKIP)
    assert storage.labeled_ids(project) == sorted(training[:3])
    assert storage.skipped_ids(project) == [training[3]]
    assert storage.unlabeled_ids(project) == training[4:]
    assert storage.validation_ids(project) == validation
    assert storage.label_counts(project) == {"cat": 2, "dog": 0, "bird": 1}
    assert storage.training_labels(project) == {training[0]: 0, training[1]: 0, training[2]: 2}
    assert storage.validation_labels(project) == {validation[0]: 1}
    assert storage.current_labels(project) == {
        training[0]: "cat",
        training[1]: "cat",
        training[2]: "bird",
        validation[0]: "dog",
    }


def test_reserve_validation_is_seeded_idempotent_and_grows(tmp_path, project):
    settings = dataclasses.replace(storage.load_settings(project), validation_size=4, seed=7)
    storage.save_settings(project, settings)
    first = storage.reserve_validation(project)
    assert len(first) == 4 and first == sorted(first)
    assert storage.reserve_validation(project) == first
    assert [i.id for i in storage.usable_items(project) if i.is_validation] == first

    twin = storage.create_project(tmp_path / "twin", settings)
    storage.ingest(twin)
    assert storage.reserve_validation(twin) == first

    storage.save_settings(project, dataclasses.replace(settings, validation_size=6))
    grown = storage.reserve_validation(project)
    assert len(grown) == 6 and set(first) < set(grown)


def test_validation_order_is_seeded_random_and_stable_as_the_set_grows(project):
    settings = dataclasses.replace(storage.load_settings(project), budget=4, initial_size=2, validation_size=10, seed=3)
    storage.save_settings(project, settings)
    ids = storage.reserve_validation(project)
    order = storage.validation_order(project)
    assert sorted(order) == ids and order != ids  # the same items, not in id order
    assert storage.validation_order(project) == order  # stable across calls
    storage.save_settings(project, dataclasses.replace(settings, validation_size=14))
    storage.reserve_validation(project)
    grown = storage.validation_order(project)
    assert len(grown) == 14 and [i for i in grown if i in set(order)] == order  # old items keep their order
    storage.save_settings(project, dataclasses.replace(settings, validation_size=14, seed=4))
    assert storage.validation_order(project) != grown  # another seed, another order


def test_validation_order_mixes_folders(tmp_path):
    from tests.support import write_image_folder

    root = tmp_path / "folders"
    for index, name in enumerate(("a", "b")):
        write_image_folder(root / name, classes=1, per_class=20, size=8, start=100 * index, flat=True)
    made = storage.create_project(
        tmp_path / "p",
        storage.Settings(
            image_root=str(root), classes=("a", "b"), budget=4, initial_size=2, round_size=2, validation_size=20
        ),
    )
    storage.ingest(made)
    storage.reserve_validation(made)
    folders = [storage.get_item(made, i).path.split("/")[0] for i in storage.validation_order(made)[:6]]
    assert set(folders) == {"a", "b"}  # the first few are not all from one folder


def test_reserve_validation_skips_queued_and_labeled_items(project):
    storage.create_round(
        project, strategy="random", selector="none", item_ids=list(range(1, 9)), scores=[0.0] * 8, n_labeled=0
    )
    storage.set_label(project, 9, "cat")
    settings = dataclasses.replace(storage.load_settings(project), validation_size=10)
    storage.save_settings(project, settings)
    reserved = storage.reserve_validation(project)
    assert len(reserved) == 10 and set(reserved) <= set(range(10, 21))


def test_reserve_validation_fails_when_too_few_free_items(project):
    storage.create_round(
        project, strategy="random", selector="none", item_ids=list(range(1, 11)), scores=[0.0] * 10, n_labeled=0
    )
    settings = dataclasses.replace(storage.load_settings(project), validation_size=10)
    storage.save_settings(project, settings)
    storage.set_label(project, 11, "cat")
    with pytest.raises(storage.StorageError, match="only 9 images are free"):
        storage.reserve_validation(project)
    assert storage.validation_ids(project) == []


def test_source_is_recorded_and_restored_by_undo(project):
    storage.set_label(project, 1, "cat", source="typed")
    storage.set_label(project, 1, "dog", source="accepted")
    assert [e.source for e in storage.label_history(project, 1)] == ["typed", "accepted"]
    storage.undo_label(project, 1)
    assert storage.label_history(project, 1)[-1].source == "typed"
    with pytest.raises(storage.SettingsError, match="source"):
        storage.set_label(project, 1, "cat", source="guessed")
    assert storage.current_label(project, 1) == "cat"


def test_set_labels_commits_all_or_nothing(project):
    events = storage.set_labels(project, [1, 2, 3], "bird", annotator="ana", source="bulk")
    assert [(e.item_id, e.class_name, e.annotator, e.source) for e in events] == [
        (1, "bird", "ana", "bulk"),
        (2, "bird", "ana", "bulk"),
        (3, "bird", "ana", "bulk"),
    ]
    with pytest.raises(storage.StorageError):
        storage.set_labels(project, [4, 999], "cat")  # 999 is unknown: item 4 is not labeled either
    assert storage.current_label(project, 4) is None
    storage.set_labels(project, [1, 2], SKIP)
    assert storage.skipped_ids(project)[:2] == [1, 2]


def test_labeled_items_lists_labels_skips_and_validation_with_round_and_guess(project):
    made = storage.create_round(
        project,
        strategy="least_confidence",
        selector="proxy_tiny",
        item_ids=[1, 2, 3],
        scores=[0.5, 0.4, 0.3],
        n_labeled=0,
        guesses=[1, 0, 2],
        confidences=[0.5] * 3,
    )
    storage.set_label(project, 1, "cat", annotator="ana", source="typed")
    storage.set_label(project, 2, SKIP, annotator="bob")
    storage.set_label(project, 3, "dog")
    storage.clear_label(project, 3)  # cleared: not listed
    validation = storage.reserve_validation(project)
    rows = {row.item_id: row for row in storage.labeled_items(project)}
    assert set(rows) == {1, 2, *validation}
    assert rows[1] == storage.LabeledItem(1, rows[1].path, "cat", False, False, made.index, "ana", "typed", "dog")
    assert (rows[2].class_name, rows[2].skipped, rows[2].annotator, rows[2].guess) == (None, True, "bob", "cat")
    assert all(rows[i].is_validation and rows[i].class_name is None for i in validation)


def test_annotator_counts_are_what_stands_per_annotator(project):
    a, b, c = storage.unlabeled_ids(project)[:3]
    storage.set_label(project, a, "cat", annotator="ana")
    storage.set_label(project, b, "cat", annotator="ana")
    storage.set_label(project, b, "dog", annotator="bo")  # bo relabels ana's: it counts for bo now
    storage.set_label(project, c, storage.SKIP, annotator="ana")
    storage.set_label(project, a, "dog", annotator="cy")
    storage.undo_label(project, a, annotator="cy")  # the label cy's undo restores is cy's row, as in exports
    counts = {x.annotator: (x.labels, x.skips) for x in storage.annotator_counts(project)}
    assert counts == {"ana": (0, 1), "bo": (1, 0), "cy": (1, 0)}
    storage.set_label(project, c, "cat", annotator="dee")
    counts = {x.annotator: (x.labels, x.skips) for x in storage.annotator_counts(project)}
    assert counts["ana"] == (0, 0) and counts["dee"] == (1, 0)  # ana worked, nothing of hers stands
    order = [x.annotator for x in storage.annotator_counts(project)]
    assert order == ["dee", "cy", "bo", "ana"]  # most labels first, then the most recently active
