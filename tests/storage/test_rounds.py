"""Rounds: creation in one transaction, the queue in rank order, completion, budget."""

from __future__ import annotations

import dataclasses
import math

import pytest

import storage
from storage import SKIP


def _round(project, item_ids, **extra):
    scores = extra.pop("scores", [1.0 / (rank + 1) for rank in range(len(item_ids))])
    return storage.create_round(
        project,
        strategy="least_confidence",
        selector="proxy_tiny",
        item_ids=item_ids,
        scores=scores,
        n_labeled=extra.pop("n_labeled", 0),
        **extra,
    )


def test_create_round_records_figures_and_order(project):
    assert storage.current_round(project) is None
    first = _round(project, [5, 3, 9, 1])
    assert (first.index, first.strategy, first.selector, first.n_labeled) == (0, "least_confidence", "proxy_tiny", 0)
    assert first.train_s is None and first.proxy_val_acc is None and first.proxy_val_n is None
    second = _round(
        project, [2, 4], n_labeled=4, train_s=1.5, score_s=0.25, select_s=0.01, proxy_val_acc=0.75, proxy_val_n=4
    )
    assert (
        second.index,
        second.train_s,
        second.score_s,
        second.select_s,
        second.proxy_val_acc,
        second.proxy_val_n,
    ) == (1, 1.5, 0.25, 0.01, 0.75, 4)
    assert storage.current_round(project) == second
    assert storage.list_rounds(project) == [first, second]
    assert storage.get_round(project, first.id) == first
    assert storage.round_items(project, first.id) == [(5, 1.0), (3, 0.5), (9, 1 / 3), (1, 0.25)]
    assert storage.queued_ids(project) == [1, 2, 3, 4, 5, 9]


def test_queue_shrinks_as_items_are_labeled_or_skipped(project):
    made = _round(project, [5, 3, 9, 1])
    storage.set_label(project, 3, "cat")
    storage.set_label(project, 1, SKIP)
    assert storage.round_queue(project, made.id) == [(5, 1.0), (9, 1 / 3)]
    assert not storage.round_complete(project, made.id)
    storage.set_label(project, 5, "dog")
    storage.set_label(project, 9, "bird")
    assert storage.round_queue(project, made.id) == []
    assert storage.round_complete(project, made.id)
    storage.undo_label(project, 9)
    assert storage.round_queue(project, made.id) == [(9, 1 / 3)]
    assert len(storage.round_items(project, made.id)) == 4


def test_budget_left_counts_queued_items_not_validation(project):
    settings = dataclasses.replace(storage.load_settings(project), validation_size=3)
    storage.save_settings(project, settings)
    validation = storage.reserve_validation(project)
    assert storage.budget_left(project) == 10
    free = [i for i in range(1, 21) if i not in validation]
    _round(project, free[:4])
    assert storage.budget_left(project) == 6
    with pytest.raises(storage.StorageError, match="only 6 are left in the budget"):
        _round(project, free[4:11])
    _round(project, free[4:10])
    assert storage.budget_left(project) == 0


@pytest.mark.parametrize(
    ("item_ids", "scores", "message"),
    [
        ([1, 2], [0.5], "2 items but 1 scores"),
        ([1, 1], [0.5, 0.4], "same item twice"),
        ([99], [0.5], "no item with id 99"),
    ],
)
def test_invalid_rounds_write_nothing(project, item_ids, scores, message):
    with pytest.raises(storage.StorageError, match=message):
        _round(project, item_ids, scores=scores)
    assert storage.list_rounds(project) == []


def test_items_cannot_be_queued_twice_or_from_validation(project):
    settings = dataclasses.replace(storage.load_settings(project), validation_size=1)
    storage.save_settings(project, settings)
    (reserved,) = storage.reserve_validation(project)
    other = 1 if reserved != 1 else 2
    _round(project, [other])
    with pytest.raises(storage.StorageError, match=f"item {other} is already in another batch"):
        _round(project, [other])
    with pytest.raises(storage.StorageError, match="reserved for validation"):
        _round(project, [reserved])
    assert len(storage.list_rounds(project)) == 1


def test_non_finite_scores_are_stored_as_none(project):
    made = _round(project, [1, 2], scores=[math.nan, 2.0])
    assert storage.round_items(project, made.id) == [(1, None), (2, 2.0)]


def test_guesses_are_stored_by_class_and_survive_a_rename(project):
    made = _round(project, [5, 3, 9], guesses=[1, 0, 2], confidences=[0.9, 0.55, float("nan")])
    assert storage.round_guesses(project, made.id) == {5: ("dog", 0.9), 3: ("cat", 0.55), 9: ("bird", None)}
    settings = storage.load_settings(project)
    storage.save_settings(project, dataclasses.replace(settings, classes=("kitty", "dog")))  # bird removed
    assert storage.round_guesses(project, made.id) == {5: ("dog", 0.9), 3: ("kitty", 0.55)}


def test_rounds_without_guesses_and_mismatched_guesses(project):
    made = _round(project, [5, 3])
    assert storage.round_guesses(project, made.id) == {}
    with pytest.raises(storage.StorageError, match="guesses"):
        _round(project, [1, 2], guesses=[0])
    assert storage.queued_ids(project) == [3, 5]


def test_open_rounds_span_from_the_oldest_open_batch_to_the_newest(project):
    assert storage.open_rounds(project) == []
    first = _round(project, [5, 3])
    storage.set_label(project, 5, "cat")
    second = _round(project, [9, 1])  # made early: round 0 still has item 3 open
    assert storage.open_rounds(project) == [first, second]
    storage.set_label(project, 3, SKIP)
    assert storage.open_rounds(project) == [second]
    storage.set_label(project, 9, "dog")
    storage.set_label(project, 1, "cat")
    assert storage.open_rounds(project) == []


def test_a_maker_that_lost_the_race_for_a_round_index_is_told_so_first(project):
    _round(project, [1, 2], index=0)
    # the loser picked an item the winner queued: the answer is that the batch exists, not which item clashed
    with pytest.raises(storage.StorageError, match="already chosen, by another tab or the worker; reload the page"):
        _round(project, [2, 3], index=0)
    assert [made.index for made in storage.list_rounds(project)] == [0]


@pytest.mark.parametrize(
    ("accuracy", "n", "message"),
    [
        (0.75, None, "needs proxy_val_n"),
        (0.75, 0, "needs proxy_val_n"),
        (None, 4, "no proxy_val_acc"),
        (0.7, 4, "not a share of 4"),
        (1.25, 4, "not a share of 4"),
    ],
)
def test_an_accuracy_is_stored_only_with_the_number_of_images_it_was_measured_on(project, accuracy, n, message):
    with pytest.raises(storage.StorageError, match=message):
        _round(project, [2, 4], proxy_val_acc=accuracy, proxy_val_n=n)
    assert storage.list_rounds(project) == []
    assert _round(project, [2, 4], proxy_val_acc=2 / 3, proxy_val_n=3).proxy_val_n == 3
