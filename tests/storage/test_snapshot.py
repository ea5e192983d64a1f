from __future__ import annotations

import dataclasses

import storage
from storage import SKIP, snapshot


def test_round_inputs_agree_with_the_single_reads(project):
    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), validation_size=2))
    validation = storage.reserve_validation(project)
    a, b, c, d = [item.id for item in storage.usable_items(project) if item.id not in validation][:4]
    storage.create_round(project, strategy="random", selector="random", item_ids=[a, b, c], scores=[0] * 3, n_labeled=0)
    storage.set_label(project, a, "cat")
    storage.set_label(project, b, SKIP)
    storage.set_label(project, d, "dog")  # labeled outside any round
    storage.set_label(project, validation[0], "bird")
    inputs = storage.read_round_inputs(project)
    assert inputs.settings == storage.load_settings(project)
    assert inputs.item_ids == [item.id for item in storage.usable_items(project)]
    assert inputs.latest == storage.current_round(project)
    assert inputs.open_in_latest == len(storage.round_queue(project, inputs.latest.id)) == 1
    assert inputs.budget_left == storage.budget_left(project) == 7
    assert inputs.training == storage.training_labels(project) == {a: 0, d: 1}
    assert inputs.validation == storage.validation_labels(project) == {validation[0]: 2}
    assert inputs.taken == {a, b, c, d, *validation}
    assert inputs.candidates == [i for i in inputs.item_ids if i not in inputs.taken]
    assert inputs.next_index == 1


def test_round_inputs_are_one_snapshot(project, monkeypatch):
    """A label saved while the inputs are being read is in none of them, not in some."""
    read_round = snapshot._round

    def label_between_reads(row):
        storage.set_label(project, 7, "cat")  # another connection commits mid-read
        return read_round(row)

    storage.create_round(project, strategy="random", selector="random", item_ids=[7], scores=[0], n_labeled=0)
    monkeypatch.setattr(snapshot, "_round", label_between_reads)
    inputs = storage.read_round_inputs(project)
    assert inputs.training == {}
    assert inputs.open_in_latest == 1  # the queue as it was before the label
    assert storage.training_labels(project) == {7: 0}  # the label itself was saved
