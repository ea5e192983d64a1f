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
from tests.storage.conftest import png_bytes, settings_for


@pytest.fixture
def labeled(project):
    made = storage.create_round(project, strategy="random", selector="none", item_ids=[1, 2, 3],
                                scores=[0.0] * 3, n_labeled=0)
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
    assert [(r["path"], r["class"], r["annotator"], r["round"]) for r in rows] == [
        ("img_0000.png", "cat", "ana", "0"), ("img_0001.png", "dog", "user", "0"), ("img_0003.png", "cat", "user", "")]
    assert all(ISO.match(r["labeled_at"]) for r in rows)
    assert list(rows[0]) == ["path", "class", "annotator", "labeled_at", "round", "source"]


def test_jsonl(labeled, tmp_path):
    project, _ = labeled
    dest = storage.export_labels_jsonl(project, tmp_path / "labels.jsonl")
    rows = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
    assert [(r["path"], r["class"], r["round"]) for r in rows] == [
        ("img_0000.png", "cat", 0), ("img_0001.png", "dog", 0), ("img_0003.png", "cat", None)]
    assert storage.export_summary(project) == {"cat": 2, "dog": 1}


def test_imagefolder_zip(labeled, tmp_path, image_root):
    project, _ = labeled
    dest = storage.export_imagefolder_zip(project, tmp_path / "set.zip")
    with zipfile.ZipFile(dest) as archive:
        assert sorted(archive.namelist()) == ["cat/img_0000.png", "cat/img_0003.png", "dog/img_0001.png"]
        assert archive.read("dog/img_0001.png") == (image_root / "img_0001.png").read_bytes()


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
        (root / folder / "same.png").write_bytes(png_bytes(seed))
    (root / "c" / "SAME.png").write_bytes(png_bytes(4))
    classes = ("../escape", "a/b", "a_b")
    project = storage.create_project(tmp_path / "p", settings_for(root, classes=classes, budget=3, initial_size=1))
    storage.ingest(project)
    ids = {item.path: item.id for item in storage.usable_items(project)}
    storage.set_label(project, ids["a/same.png"], "../escape")
    storage.set_label(project, ids["b/same.png"], "a/b")
    storage.set_label(project, ids["c/same.png"], "a/b")
    storage.set_label(project, ids["c/SAME.png"], "a_b")
    with zipfile.ZipFile(storage.export_imagefolder_zip(project, tmp_path / "x.zip")) as archive:
        names = sorted(archive.namelist())
    assert names == sorted([
        "_escape/same.png",
        f"a_b/{ids['b/same.png']}_same.png",
        f"a_b/{ids['c/same.png']}_same.png",
        "a_b-2/SAME.png",
    ])
    assert not any(name.startswith(("/", "..")) or "/../" in name for name in names)


def test_zip_refuses_files_outside_the_root_and_leaves_no_file(labeled, tmp_path, image_root):
    project, _ = labeled
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(4242))
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
    with pytest.raises(FileNotFoundError):
        storage.export_imagefolder_zip(project, dest)
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["images", "project", "set.zip"])


def test_renamed_class_exports_new_name(labeled, tmp_path):
    project, _ = labeled
    settings = storage.load_settings(project)
    storage.save_settings(project, dataclasses.replace(settings, classes=("kitten", "dog", "bird")))
    dest = storage.export_labels_jsonl(project, tmp_path / "l.jsonl")
    assert [json.loads(line)["class"] for line in dest.read_text().splitlines()] == ["kitten", "dog", "kitten"]
