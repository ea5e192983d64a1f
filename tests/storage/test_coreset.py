"""Core-set runs: one transaction per run, suspects and their review, the kept column in exports."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import zipfile

import pytest

import storage
from storage import SKIP, CoresetRow

CAT, DOG, BIRD = 0, 1, 2


@pytest.fixture
def labeled(project):
    """Items 1..6 labeled cat, cat, dog, dog, bird, bird (training labels)."""
    for item_id, name in zip(range(1, 7), ["cat", "cat", "dog", "dog", "bird", "bird"], strict=True):
        storage.set_label(project, item_id, name, annotator="ana")
    return project


def rows_for(project) -> list[CoresetRow]:
    """Items 1, 3, 5 kept (ranks 0..2); item 2 never learned and predicted dog (a suspect); item 4 forgotten
    3 times and predicted cat (a suspect); item 6 forgotten 3 times but predicted its own class (not one)."""
    return [
        CoresetRow(1, CAT, True, 0, score=0.9, forgetting=0, predicted=CAT, confidence=0.9),
        CoresetRow(2, CAT, False, None, score=0.1, forgetting=math.inf, predicted=DOG, confidence=0.1, suspect=True),
        CoresetRow(3, DOG, True, 1, score=0.8, forgetting=1, predicted=DOG, confidence=0.8),
        CoresetRow(4, DOG, False, None, score=0.2, forgetting=3, predicted=CAT, confidence=0.3, suspect=True),
        CoresetRow(5, BIRD, True, 2, score=0.7, forgetting=0, el2n=0.5, grand=1.5, predicted=BIRD, confidence=0.7),
        CoresetRow(6, BIRD, False, None, score=float("nan"), forgetting=3, predicted=BIRD, confidence=0.6),
    ]


def save(project, rows=None, **overrides):
    fields = dict(
        method="forgetting",
        keep=0.5,
        balance=True,
        selector="proxy",
        selector_model="proxy_tiny",
        label_watermark=storage.read_round_inputs(project).label_watermark,
        rows=rows_for(project) if rows is None else rows,
    )
    return storage.save_coreset_run(project, **{**fields, **overrides})


def test_a_run_is_saved_with_its_items_kept_first_by_rank(labeled):
    run = save(labeled, val_acc=0.75, n_val=4, train_s=1.5)
    assert (run.n_labeled, run.n_kept, run.method, run.balance, run.val_acc, run.n_val) == (
        6,
        3,
        "forgetting",
        True,
        0.75,
        4,
    )
    assert storage.latest_coreset_run(labeled) == run == storage.get_coreset_run(labeled, run.id)
    items = storage.coreset_items(labeled, run.id)
    assert [i.item_id for i in items] == [1, 3, 5, 2, 4, 6]
    assert [i.kept for i in items] == [True] * 3 + [False] * 3
    assert storage.kept_item_ids(labeled, run.id) == [1, 3, 5]
    never = next(i for i in items if i.item_id == 2)
    assert never.never_learned and never.forgetting == math.inf and never.predicted == "dog" and never.label == "cat"
    assert next(i for i in items if i.item_id == 6).score is None  # nan stores as unknown
    assert next(i for i in items if i.item_id == 5).grand == 1.5


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "at least one"),
        ([CoresetRow(1, CAT, True, 0), CoresetRow(1, CAT, False)], "twice"),
        ([CoresetRow(99, CAT, True, 0)], "not a usable item"),
        ([CoresetRow(1, 7, True, 0)], "class position 7"),
        ([CoresetRow(1, CAT, True, 1)], "ranked 0..n-1"),
        ([CoresetRow(1, CAT, True, 0), CoresetRow(2, CAT, False, 1)], "ranked 0..n-1"),
    ],
)
def test_a_bad_run_is_refused_and_nothing_is_written(labeled, rows, message):
    with pytest.raises(storage.StorageError, match=message):
        save(labeled, rows=rows)
    assert storage.coreset_runs(labeled) == []


@pytest.mark.parametrize("keep", [0, -0.1, 1.5])
def test_a_keep_outside_zero_one_is_refused(labeled, keep):
    with pytest.raises(storage.StorageError, match="keep"):
        save(labeled, keep=keep)
    assert storage.coreset_runs(labeled) == []


def test_suspects_and_their_review(labeled):
    run = save(labeled)
    assert [s.item_id for s in storage.suspects(labeled, run.id)] == [2, 4]
    assert [s.item_id for s in storage.open_suspects(labeled)] == [2, 4]
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 0, 0)

    storage.set_label(labeled, 2, "dog", annotator="ben")  # relabeled: reviewed and changed
    storage.confirm_label(labeled, run.id, 4, "ben")  # the label is right: reviewed, not changed
    storage.confirm_label(labeled, run.id, 4, "ben")  # idempotent
    assert storage.open_suspects(labeled) == []
    counts = storage.review_counts(labeled, run.id)
    assert (counts.suspects, counts.reviewed, counts.changed, counts.open) == (2, 2, 1, 0)


def test_a_relabel_to_the_same_class_reviews_without_changing(labeled):
    run = save(labeled)
    storage.set_label(labeled, 4, "dog", annotator="ben")
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 1, 0)
    storage.set_label(labeled, 2, SKIP, annotator="ben")  # a skip is a change of the trained label
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 2, 1)


def test_labels_given_before_the_run_snapshot_do_not_count_as_review(labeled):
    watermark = storage.read_round_inputs(labeled).label_watermark
    storage.set_label(labeled, 2, "cat", annotator="ana")
    run = save(labeled)  # a run that read the newest labels
    assert storage.review_counts(labeled, run.id).reviewed == 0
    run = save(labeled, label_watermark=watermark)  # a run that read the labels before that one ...
    assert storage.review_counts(labeled, run.id).reviewed == 1  # ... so it is newer than what the run saw


def test_an_undone_relabel_is_no_review(labeled):
    run = save(labeled)
    storage.set_label(labeled, 4, "cat", annotator="ben")
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 1, 1)
    storage.undo_label(labeled, 4, annotator="ben")  # back to dog, the label the run flagged
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 0, 0)
    assert [s.item_id for s in storage.open_suspects(labeled)] == [2, 4]
    storage.undo_label(labeled, 2, annotator="ben")  # undoes ana's label from before the run: an action
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 1, 1)


def test_an_imported_label_reviews_only_when_it_changes_the_label(labeled):
    run = save(labeled)
    storage.set_label(labeled, 4, "dog", annotator="labels.csv", source="imported")  # the same class, from a file
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 0, 0)
    storage.set_label(labeled, 2, "dog", annotator="labels.csv", source="imported")
    assert storage.review_counts(labeled, run.id) == storage.ReviewCounts(2, 1, 1)


def flagged_again(project, *suspect_ids):
    """A second run over the labels as they are now, flagging `suspect_ids`."""
    current = storage.current_labels(project)
    position = {name: i for i, name in enumerate(storage.class_names(project))}
    rows = [
        CoresetRow(
            i,
            position[current[i]],
            i in (1, 3, 5),
            (1, 3, 5).index(i) if i in (1, 3, 5) else None,
            suspect=i in suspect_ids,
        )
        for i in range(1, 7)
    ]
    return save(project, rows=rows)


def test_a_review_carries_over_to_the_next_run_that_flags_the_item(labeled):
    run = save(labeled)
    storage.confirm_label(labeled, run.id, 4, "ben")  # dog is right
    storage.set_label(labeled, 2, "dog", annotator="ben")  # cat was wrong
    again = flagged_again(labeled, 2, 4, 6)
    assert [s.item_id for s in storage.open_suspects(labeled)] == [6]
    assert storage.review_counts(labeled, again.id) == storage.ReviewCounts(3, 2, 0)
    third = flagged_again(labeled, 2, 4)  # carried again, run to run
    assert storage.review_counts(labeled, third.id) == storage.ReviewCounts(2, 2, 0)


def test_a_review_nobody_made_does_not_carry_over(labeled):
    save(labeled)
    storage.set_label(labeled, 2, "dog", annotator="labels.csv", source="imported")  # changed, by a file
    storage.set_label(labeled, 4, "cat", annotator="ben")
    storage.undo_label(labeled, 4, annotator="ben")  # looked at, then taken back
    flagged_again(labeled, 2, 4)
    assert [s.item_id for s in storage.open_suspects(labeled)] == [2, 4]


def test_only_a_suspect_can_be_confirmed(labeled):
    run = save(labeled)
    with pytest.raises(storage.StorageError, match="not a suspect"):
        storage.confirm_label(labeled, run.id, 1, "ben")
    with pytest.raises(storage.StorageError, match="not a suspect"):
        storage.confirm_label(labeled, run.id + 1, 2, "ben")
    with pytest.raises(storage.StorageError, match="no core-set run"):
        storage.coreset_items(labeled, run.id + 1)


def test_the_latest_run_decides_the_open_suspects(labeled):
    save(labeled)
    rows = [CoresetRow(r.item_id, r.label, r.kept, r.rank, suspect=r.item_id == 6) for r in rows_for(labeled)]
    save(labeled, rows=rows)
    assert [s.item_id for s in storage.open_suspects(labeled)] == [6]


def test_exports_carry_the_kept_column_and_the_zip_only_the_kept(labeled, tmp_path):
    storage.save_settings(labeled, dataclasses.replace(storage.load_settings(labeled), validation_size=2))
    validation = storage.reserve_validation(labeled)
    storage.set_label(labeled, validation[0], "cat")
    storage.set_label(labeled, 7, SKIP)
    run = save(labeled)
    storage.set_label(labeled, 8, "dog")  # labeled after the run: not in it
    with storage.export_labels_csv(labeled, tmp_path / "l.csv", coreset_run=run.id).open(encoding="utf-8") as f:
        kept = {row["path"]: row["kept"] for row in csv.DictReader(f)}
    paths = {i.id: i.path for i in storage.usable_items(labeled)}
    assert {k: kept[paths[k]] for k in (1, 2, 3, 4, 5, 6, 7, 8, validation[0])} == {
        1: "1",
        2: "0",
        3: "1",
        4: "0",
        5: "1",
        6: "0",
        7: "",
        8: "",
        validation[0]: "",
    }
    lines = storage.export_labels_jsonl(labeled, tmp_path / "l.jsonl", coreset_run=run.id).read_text().splitlines()
    records = {r["path"]: r["kept"] for r in map(json.loads, lines)}
    assert records[paths[1]] is True and records[paths[2]] is False and records[paths[8]] is None
    with zipfile.ZipFile(storage.export_imagefolder_zip(labeled, tmp_path / "l.zip", coreset_run=run.id)) as z:
        names = z.namelist()
        index = json.loads(z.read("classes.json"))
    train = sorted(n for n in names if n.startswith("train/"))
    assert len(train) == 3 and all(paths[i].rsplit("/", 1)[-1] in " ".join(train) for i in (1, 3, 5))
    assert sum(n.startswith("validation/") for n in names) == 1
    assert index["coreset"] == {"run": run.id, "method": "forgetting", "keep": 0.5, "kept": 3}


def test_an_export_of_an_unknown_run_writes_nothing(labeled, tmp_path):
    with pytest.raises(storage.StorageError, match="no core-set run"):
        storage.export_labels_csv(labeled, tmp_path / "l.csv", coreset_run=5)
    assert not (tmp_path / "l.csv").exists()


def test_exports_without_a_run_are_unchanged(labeled, tmp_path):
    save(labeled)
    with storage.export_labels_csv(labeled, tmp_path / "l.csv").open(encoding="utf-8") as f:
        assert "kept" not in next(csv.reader(f))


def test_suspects_are_listed_least_likely_label_first(labeled):
    rows = [
        dataclasses.replace(r, confidence=0.05) if r.item_id == 4 else r for r in rows_for(labeled)
    ]  # item 4, forgotten 3 times, is less likely labeled right than item 2, never learned
    run = save(labeled, rows=rows)
    assert [s.item_id for s in storage.suspects(labeled, run.id)] == [4, 2]
