"""Export: CSV, JSONL and ImageFolder zip; sanitized names; atomic writes; root confinement."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import zipfile

import pytest

import storage
from storage import SKIP
from tests.support import image_bytes, tiny_settings


@pytest.fixture
def labeled(project):
    made = storage.create_round(
        project, strategy="random", selector="none", item_ids=[1, 2, 3], scores=[0.0] * 3, n_labeled=0
    )
    storage.set_label(project, 1, "cat", annotator="ana")
    storage.set_label(project, 2, "dog")
    storage.set_label(project, 3, SKIP)
    storage.set_label(project, 4, "cat")
    storage.set_label(project, 5, "dog")
    storage.clear_label(project, 5)
    return project, made


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_csv(labeled, tmp_path):
    project, _ = labeled
    dest = storage.export_labels_csv(project, tmp_path / "out" / "labels.csv")
    with dest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["path"], r["class"], r["split"], r["annotator"], r["round"]) for r in rows] == [
        ("img_0000.png", "cat", "train", "ana", "0"),
        ("img_0001.png", "dog", "train", "user", "0"),
        ("img_0002.png", "", "skipped", "user", "0"),
        ("img_0003.png", "cat", "train", "user", ""),
    ]
    assert all(ISO.match(r["labeled_at"]) for r in rows)
    assert list(rows[0]) == ["path", "class", "split", "annotator", "labeled_at", "round", "source"]


def test_jsonl(labeled, tmp_path):
    project, _ = labeled
    dest = storage.export_labels_jsonl(project, tmp_path / "labels.jsonl")
    rows = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
    assert [(r["path"], r["class"], r["split"], r["round"]) for r in rows] == [
        ("img_0000.png", "cat", "train", 0),
        ("img_0001.png", "dog", "train", 0),
        ("img_0002.png", None, "skipped", 0),
        ("img_0003.png", "cat", "train", None),
    ]
    assert storage.export_summary(project) == {"cat": 2, "dog": 1}


def test_imagefolder_zip(labeled, tmp_path, image_root):
    project, _ = labeled
    dest = storage.export_imagefolder_zip(project, tmp_path / "set.zip")
    with zipfile.ZipFile(dest) as archive:
        assert sorted(archive.namelist()) == [
            "classes.json",
            "train/cat/img_0000.png",
            "train/cat/img_0003.png",
            "train/dog/img_0001.png",
        ]
        assert archive.read("train/dog/img_0001.png") == (image_root / "img_0001.png").read_bytes()
        index = json.loads(archive.read("classes.json"))
    assert index["classes"] == [
        {"index": 0, "name": "cat", "folder": "cat"},
        {"index": 1, "name": "dog", "folder": "dog"},
        {"index": 2, "name": "bird", "folder": "bird"},
    ]
    assert index["splits"] == {"train": 3, "validation": 0}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat", "cat"),
        ("../../etc", "_.._etc"),
        ("..", "_"),
        ("a/b\\c", "a_b_c"),
        ("tab\there", "tab_here"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        (" spaced. ", "spaced"),
        ("<script>", "_script_"),
        ("Café", "Café"),
    ],
)
def test_sanitize_class_name(name, expected):
    assert storage.sanitize_class_name(name) == expected


def test_hostile_class_names_and_repeated_file_names(tmp_path):
    root = tmp_path / "images"
    for folder, seed in (("a", 1), ("b", 2), ("c", 3)):
        (root / folder).mkdir(parents=True)
        (root / folder / "same.png").write_bytes(image_bytes(seed))
    (root / "c" / "SAME.png").write_bytes(image_bytes(4))
    classes = ("../escape", "a/b", "a_b")
    project = storage.create_project(tmp_path / "p", tiny_settings(root, classes, budget=3, initial_size=1))
    storage.ingest(project)
    ids = {item.path: item.id for item in storage.usable_items(project)}
    storage.set_label(project, ids["a/same.png"], "../escape")
    storage.set_label(project, ids["b/same.png"], "a/b")
    storage.set_label(project, ids["c/same.png"], "a/b")
    storage.set_label(project, ids["c/SAME.png"], "a_b")
    with zipfile.ZipFile(storage.export_imagefolder_zip(project, tmp_path / "x.zip")) as archive:
        names = sorted(archive.namelist())
    assert names == sorted(
        [
            "classes.json",
            "train/_escape/same.png",
            f"train/a_b/{ids['b/same.png']}_same.png",
            f"train/a_b/{ids['c/same.png']}_same.png",
            "train/a_b-2/SAME.png",
        ]
    )
    assert not any(name.startswith(("/", "..")) or "/../" in name for name in names)


def test_zip_refuses_files_outside_the_root_and_leaves_no_file(labeled, tmp_path, image_root):
    project, _ = labeled
    secret = tmp_path / "secret.png"
    secret.write_bytes(image_bytes(4242))
    (image_root / "img_0003.png").unlink()
    (image_root / "img_0003.png").symlink_to(secret)
    dest = tmp_path / "exports" / "set.zip"
    with pytest.raises(storage.StorageError, match="outside the image root"):
        storage.export_imagefolder_zip(project, dest)
    assert not dest.exists()
    assert os.listdir(dest.parent) == []


def test_failed_export_keeps_the_previous_file(labeled, tmp_path, image_root):
    project, _ = labeled
    dest = storage.export_imagefolder_zip(project, tmp_path / "set.zip")
    before = dest.read_bytes()
    (image_root / "img_0000.png").unlink()
    with pytest.raises(storage.StorageError, match=r"cannot read img_0000\.png"):
        storage.export_imagefolder_zip(project, dest)
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["images", "project", "set.zip"])


def test_renamed_class_exports_new_name(labeled, tmp_path):
    project, _ = labeled
    settings = storage.load_settings(project)
    storage.save_settings(project, dataclasses.replace(settings, classes=("kitten", "dog", "bird")))
    dest = storage.export_labels_jsonl(project, tmp_path / "l.jsonl")
    assert [json.loads(line)["class"] for line in dest.read_text().splitlines()] == ["kitten", "dog", None, "kitten"]


def test_csv_cells_a_spreadsheet_would_run_are_neutralized_and_jsonl_is_verbatim(tmp_path):
    """OWASP CSV injection: every cell starting with = + - @ tab or CR gets a leading quote."""
    root = tmp_path / "images"
    hostile_files = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM.png", "\tx.png", "plain.png"]
    root.mkdir()
    for seed, name in enumerate(hostile_files):
        (root / name).write_bytes(image_bytes(seed))
    classes = ("=cmd|' /C calc'!A0", "+plus", "-minus", "@at", "fine")
    project = storage.create_project(tmp_path / "p", tiny_settings(root, classes, budget=3, initial_size=1))
    storage.ingest(project)
    for item, name in zip(storage.usable_items(project), [*classes, "fine"], strict=True):
        storage.set_label(project, item.id, name, annotator="=1+1")
    with storage.export_labels_csv(project, tmp_path / "l.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
    by_path = {row[0]: row for row in rows}
    assert by_path["'=HYPERLINK(1).png"][1] in {"'" + c for c in classes if c != "fine"}
    assert {row[3] for row in rows} == {"'=1+1"}
    assert by_path["plain.png"][1:3] == ["fine", "train"]
    verbatim = [
        json.loads(line)
        for line in storage.export_labels_jsonl(project, tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {row["path"] for row in verbatim} == set(hostile_files)
    assert {row["annotator"] for row in verbatim} == {"=1+1"}


def test_validation_labels_go_to_their_own_split_and_folder(project, tmp_path):
    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), validation_size=2))
    validation = storage.reserve_validation(project)
    storage.set_label(project, validation[0], "dog")
    storage.set_label(project, validation[1], SKIP)
    train_item = next(i.id for i in storage.usable_items(project) if i.id not in validation)
    storage.set_label(project, train_item, "cat")
    with storage.export_labels_csv(project, tmp_path / "l.csv").open(newline="") as handle:
        splits = {int(row["path"][4:8]) + 1: row["split"] for row in csv.DictReader(handle)}
    assert splits == {validation[0]: "validation", validation[1]: "skipped", train_item: "train"}
    with zipfile.ZipFile(storage.export_imagefolder_zip(project, tmp_path / "x.zip")) as archive:
        members = sorted(archive.namelist())
        assert json.loads(archive.read("classes.json"))["splits"] == {"train": 1, "validation": 1}
    assert members == sorted(
        ["classes.json", f"train/cat/img_{train_item - 1:04d}.png", f"validation/dog/img_{validation[0] - 1:04d}.png"]
    )


def test_jsonl_is_one_record_per_line_whatever_the_text_holds(tmp_path):
    """U+2028 and U+2029 are valid raw in JSON, yet str.splitlines() breaks a line at them (and at U+0085)."""
    root = tmp_path / "images"
    root.mkdir()
    names = ["a\u2028b.png", "c\u2029d.png", "e\u0085f.png"]
    for seed, name in enumerate(names):
        (root / name).write_bytes(image_bytes(seed))
    classes = ("line\u2028sep", "para\u2029sep")
    project = storage.create_project(tmp_path / "p", tiny_settings(root, classes, budget=3, initial_size=1))
    storage.ingest(project)
    for item, name in zip(storage.usable_items(project), [*classes, classes[0]], strict=True):
        storage.set_label(project, item.id, name, annotator="ana\u2028\u0085bob")
    text = storage.export_labels_jsonl(project, tmp_path / "l.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(names)
    assert {row["class"] for row in rows} == set(classes)
    assert {row["annotator"] for row in rows} == {"ana\u2028\u0085bob"}
