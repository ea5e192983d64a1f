"""Importing labels that come with the images: CSV / JSONL files as the export writes them, class
subfolders; every problem reported at once, and all or nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import storage
from storage import SKIP
from storage.label_import import (
    SKIPS,
    SUBFOLDERS,
    LabelFile,
    LabelImportError,
    import_labels,
    subfolder_classes,
)
from storage.project import opened, writing
from tests.support import RGB, tiny_settings, write_image_folder


@pytest.fixture
def images(tmp_path: Path) -> dict[str, str]:
    """12 images in class folders red/ green/ blue/ (4 each): relative path -> class."""
    return write_image_folder(tmp_path / "images", classes=3, per_class=4, size=8)


def new_project(tmp_path: Path, name: str = "project", classes=RGB, **settings) -> storage.Project:
    project = storage.create_project(tmp_path / name, tiny_settings(tmp_path / "images", classes, **settings))
    storage.ingest(project, workers=1)
    return project


@pytest.fixture
def project(tmp_path: Path, images) -> storage.Project:
    return new_project(tmp_path)


def ids(project: storage.Project) -> dict[str, int]:
    return {item.path: item.id for item in storage.usable_items(project)}


def label_rows(project: storage.Project) -> list[tuple]:
    """Every row of the labels table: the whole history, to see that nothing was written."""
    with opened(project) as db:
        return db.execute("SELECT * FROM labels ORDER BY id").fetchall()


def csv_file(*rows: str, header: str = "path,class", name: str = "labels.csv") -> LabelFile:
    return LabelFile(name, "\n".join([header, *rows, ""]).encode())


def problems(excinfo) -> dict[str, int]:
    return {p.kind: p.count for p in excinfo.value.plan.problems}


# ---------------------------------------------------------------- round trips


def test_csv_and_jsonl_from_our_export_import_into_a_new_project_over_the_same_images(tmp_path, images):
    first = new_project(tmp_path, "first")
    by_path = ids(first)
    storage.set_label(first, by_path["red/img_0000.png"], "red", annotator="ana", source="typed")
    storage.set_label(first, by_path["green/img_0001.png"], "green", source="accepted")
    storage.set_label(first, by_path["blue/img_0002.png"], "red", source="bulk")  # a wrong label travels as given
    storage.set_label(first, by_path["blue/img_0003.png"], SKIP)  # exported as a skip: not imported
    csv_path = storage.export_labels_csv(first, tmp_path / "out" / "first.csv")
    jsonl_path = storage.export_labels_jsonl(first, tmp_path / "out" / "first.jsonl")
    expected = {"red/img_0000.png": "red", "green/img_0001.png": "green", "blue/img_0002.png": "red"}

    for number, path in enumerate((csv_path, jsonl_path)):
        other = new_project(tmp_path, f"other{number}")
        plan = import_labels(other, path)
        assert plan.imported and plan.ok
        assert (plan.read, plan.per_class, plan.left_out) == (4, {"red": 2, "green": 1}, {SKIPS: 1})
        assert "Imported 3 labels: red 2, green 1." in plan.report()
        names = {item.id: item.path for item in storage.usable_items(other)}
        assert {names[i]: name for i, name in storage.current_labels(other).items()} == expected
        for item in storage.labeled_items(other):
            assert (item.annotator, item.source, item.round_index) == (path.name, "imported", None)
        [event] = storage.label_history(other, ids(other)["red/img_0000.png"])
        assert (event.kind, event.source, event.round_id, event.annotator) == ("label", "imported", None, path.name)
        # imported labels are ordinary labels: they export (source imported) and train
        exported = storage.export_labels_jsonl(other, tmp_path / "out" / f"other{number}.jsonl")
        records = [json.loads(line) for line in exported.read_text().splitlines()]
        assert {(r["path"], r["class"], r["source"], r["split"]) for r in records} == {
            (p, c, "imported", "train") for p, c in expected.items()
        }
        assert sorted(storage.training_labels(other)) == sorted(ids(other)[p] for p in expected)


def test_class_names_and_paths_a_spreadsheet_would_run_round_trip_through_the_csv(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root, classes=2, per_class=2, size=8, flat=True)
    (root / "img_0000.png").rename(root / "=sum.png")
    classes = ("-1", "+1")
    first = new_project(tmp_path, "first", classes)
    by_path = ids(first)
    storage.set_label(first, by_path["=sum.png"], "-1")
    storage.set_label(first, by_path["img_0001.png"], "+1")
    exported = storage.export_labels_csv(first, tmp_path / "first.csv")
    assert "'=sum.png,'-1" in exported.read_text()  # protected in the file ...
    other = new_project(tmp_path, "other", classes)
    import_labels(other, exported)  # ... and read back as it was
    names = {item.id: item.path for item in storage.usable_items(other)}
    assert {names[i]: c for i, c in storage.current_labels(other).items()} == {"=sum.png": "-1", "img_0001.png": "+1"}


def test_a_plain_file_with_a_label_column_absolute_paths_and_spaces(project, tmp_path):
    root = storage.load_settings(project).image_root
    file = csv_file(
        f"{root}/red/img_0000.png, green ",  # absolute inside the root; spaces around the class
        "./blue/img_0001.png,blue",  # normalized
        header="Path,Label,notes",
    )
    plan = import_labels(project, file)
    assert plan.per_class == {"green": 1, "blue": 1}
    assert storage.current_label(project, ids(project)["red/img_0000.png"]) == "green"


def test_a_jsonl_file_with_blank_lines_and_extra_keys(project):
    lines = [
        json.dumps({"path": "red/img_0000.png", "class": "red", "note": 1}),
        "",
        json.dumps({"path": "green/img_0000.png", "label": "green"}),
        json.dumps({"path": "blue/img_0000.png", "class": None, "split": "skipped"}),
    ]
    plan = import_labels(project, LabelFile("x.jsonl", "\r\n".join(lines).encode()))
    assert (plan.read, plan.per_class) == (3, {"red": 1, "green": 1})


# ---------------------------------------------------------------- subfolders


def test_subfolders_label_each_image_by_its_first_folder_and_leave_the_root_unlabeled(tmp_path, images):
    (tmp_path / "images" / "red" / "deep").mkdir()
    (tmp_path / "images" / "red" / "img_0000.png").rename(tmp_path / "images" / "red" / "deep" / "x.png")
    (tmp_path / "images" / "green" / "img_0000.png").rename(tmp_path / "images" / "loose.png")
    project = new_project(tmp_path)
    plan = import_labels(project, SUBFOLDERS, dry_run=True)
    assert plan.per_class == {"red": 4, "green": 3, "blue": 4} and not plan.imported
    assert label_rows(project) == []  # a dry run writes nothing
    plan = import_labels(project, SUBFOLDERS)
    assert plan.imported and plan.unit == "image" and plan.read == 12
    assert "1 image not imported: directly in the image folder" in plan.report()
    names = {item.id: item.path for item in storage.usable_items(project)}
    labels = {names[i]: c for i, c in storage.current_labels(project).items()}
    assert labels == {p: p.split("/")[0] for p in names.values() if "/" in p}
    assert labels["red/deep/x.png"] == "red"
    assert {item.annotator for item in storage.labeled_items(project)} == {"subfolders"}
    assert subfolder_classes(["b/x.png", "a/y.png", "b/z/w.png", "top.png"]) == ["a", "b"]


def test_a_subfolder_that_is_not_a_class_is_a_problem_and_no_subfolder_at_all_an_error(tmp_path, images):
    (tmp_path / "images" / "unsorted").mkdir()
    (tmp_path / "images" / "red" / "img_0000.png").rename(tmp_path / "images" / "unsorted" / "x.png")
    project = new_project(tmp_path)
    with pytest.raises(LabelImportError) as excinfo:
        import_labels(project, SUBFOLDERS)
    assert problems(excinfo) == {"unknown class": 1}
    assert "not classes: 'unsorted'" in str(excinfo.value) and "unsorted/x.png: 'unsorted'" in str(excinfo.value)
    assert label_rows(project) == []

    flat = tmp_path / "flat"
    write_image_folder(flat, classes=2, per_class=2, size=8, flat=True)
    project = storage.create_project(tmp_path / "p2", tiny_settings(flat, RGB))
    storage.ingest(project, workers=1)
    with pytest.raises(storage.StorageError, match="no image lies in a subfolder"):
        import_labels(project, SUBFOLDERS)


# ---------------------------------------------------------------- problems: all or nothing


GOOD = "red/img_0000.png,red"


@pytest.mark.parametrize(
    "row, kind, shown",
    [
        (",red", "no path", "line 3"),
        ("red/missing.png,red", "unknown path", "line 3: red/missing.png"),
        ("/etc/hostname,red", "outside the image folder", "line 3: /etc/hostname"),
        ("green/img_0000.png,", "empty class", "line 3: green/img_0000.png"),
        ("green/img_0000.png,  ", "empty class", "line 3: green/img_0000.png"),
        ("green/img_0000.png,purple", "unknown class", "line 3: green/img_0000.png: 'purple'"),
        ("green/img_0000.png,Red", "unknown class", "'Red'"),  # class names are exact
        (GOOD, "duplicated row", "line 2 and line 3: red/img_0000.png"),
        ("red/img_0000.png,green", "conflicting rows", "red/img_0000.png is 'red' and 'green'"),
    ],
)
def test_each_problem_is_reported_and_nothing_is_imported(project, row, kind, shown):
    storage.set_label(project, ids(project)["blue/img_0000.png"], "blue")
    before = label_rows(project)
    for dry_run in (True, False):
        with pytest.raises(LabelImportError) as excinfo:
            import_labels(project, csv_file(GOOD, row, "green/img_0001.png,green"), dry_run=dry_run)
        assert problems(excinfo) == {kind: 1}
        assert shown in str(excinfo.value)
        assert "Nothing was imported" in str(excinfo.value)
        assert label_rows(project) == before


def test_rejected_and_duplicate_files_are_not_usable_and_name_the_image_to_label(tmp_path, images):
    root = tmp_path / "images"
    (root / "red" / "copy.png").write_bytes((root / "green" / "img_0000.png").read_bytes())
    (root / "red" / "broken.png").write_bytes(b"not a png")
    project = new_project(tmp_path)
    with pytest.raises(LabelImportError) as excinfo:
        import_labels(project, csv_file("red/copy.png,red", "red/broken.png,red", GOOD))
    assert problems(excinfo) == {"not usable": 2}
    assert "red/copy.png (a copy of green/img_0000.png)" in str(excinfo.value)
    assert "red/broken.png (not an image)" in str(excinfo.value)
    assert label_rows(project) == []


def test_every_problem_in_one_report_with_the_first_examples_and_a_count(project):
    rows = [f"red/none_{i}.png,red" for i in range(8)] + ["green/img_0000.png,teal", "green/img_0001.png,mauve"]
    with pytest.raises(LabelImportError) as excinfo:
        import_labels(project, csv_file(*rows, GOOD))
    report = str(excinfo.value)
    assert problems(excinfo) == {"unknown path": 8, "unknown class": 2}
    assert "Nothing was imported: 10 problems" in report
    assert "Unknown path (8 rows)" in report and "red/none_4.png" in report and "red/none_5.png" not in report
    assert "... and 3 more" in report
    assert "not classes: 'teal', 'mauve'; the classes: 'red', 'green', 'blue'" in report
    assert excinfo.value.plan.labels == ((ids(project)["red/img_0000.png"], "red"),)  # what would have gone in


def test_a_write_failing_at_the_last_label_leaves_none(project):
    """One transaction: the database refuses the last row (a trigger stands in for a full disk), and the
    labels written before it are rolled back with it."""
    last = max(ids(project).values())
    with writing(project) as db:
        db.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON labels WHEN NEW.item_id = {last} "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        import_labels(project, SUBFOLDERS)
    assert label_rows(project) == []


# ---------------------------------------------------------------- labels the app already has


def test_labels_already_in_the_app(project):
    by_path = ids(project)
    storage.set_label(project, by_path["red/img_0000.png"], "red", source="typed")  # same class: nothing to do
    storage.set_label(project, by_path["red/img_0001.png"], SKIP)  # a skip gets the file's label
    import_labels(project, csv_file("red/img_0002.png,green"))  # an earlier import ...
    plan = import_labels(project, SUBFOLDERS)  # ... is corrected by the next one
    assert (plan.already_labeled, plan.unskipped, plan.replaced, len(plan.labels)) == (1, 1, 1, 11)
    report = plan.report()
    assert "1 image already labeled so" in report and "1 of them replace another class" in report
    assert storage.current_label(project, by_path["red/img_0002.png"]) == "red"
    assert storage.current_label(project, by_path["red/img_0001.png"]) == "red"
    [kept] = storage.label_history(project, by_path["red/img_0000.png"])
    assert kept.source == "typed"  # not written again

    storage.set_label(project, by_path["blue/img_0003.png"], "green", annotator="ana", source="typed")
    before = label_rows(project)
    with pytest.raises(LabelImportError) as excinfo:
        import_labels(project, SUBFOLDERS)  # a person's label of another class is never overwritten
    assert problems(excinfo) == {"labeled otherwise": 1}
    assert "blue/img_0003.png: the source says 'blue', the app 'green' (typed by ana)" in str(excinfo.value)
    assert label_rows(project) == before


def test_a_label_whose_class_was_removed_or_cleared_counts_as_none(project):
    by_path = ids(project)
    storage.set_label(project, by_path["red/img_0000.png"], "green")
    storage.clear_label(project, by_path["red/img_0000.png"])
    plan = import_labels(project, csv_file(GOOD))
    assert len(plan.labels) == 1 and plan.already_labeled == 0


def test_validation_and_queued_images_get_imported_labels_with_no_round(tmp_path, images):
    project = new_project(tmp_path, validation_size=3)
    validation = storage.reserve_validation(project)
    queued = [i for i in ids(project).values() if i not in validation][:2]
    made = storage.create_round(
        project, strategy="random", selector="x", item_ids=queued, scores=[0, 0], n_labeled=0, index=0
    )
    plan = import_labels(project, SUBFOLDERS)
    assert plan.validation == 3 and "3 of them on validation images" in plan.report()
    assert sorted(storage.validation_labels(project)) == validation
    assert len(storage.training_labels(project)) == 9
    assert storage.round_complete(project, made.id)  # the queued images are labeled now
    assert {storage.label_history(project, i)[-1].round_id for i in queued} == {None}


def test_imported_is_a_label_source():
    assert "imported" in storage.SOURCES


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("x.csv", b"", "x.csv is empty"),
        ("x.csv", b"\n \n", "x.csv is empty"),
        ("x.jsonl", b"\n", "x.jsonl is empty"),
        ("x.csv", b"path,class\n", "has no rows, only a header"),
        ("x.csv", "path,class\nred/a.png,red\nred/b.png,r\xe9d\n".encode("latin-1"), "not UTF-8 text: line 3"),
        ("x.csv", b"file,class\nred/a.png,red\n", "no 'path' column: its first row (the header) has 'file', 'class'"),
        ("x.csv", b"path,kind\nred/a.png,red\n", "no 'class' or 'label' column"),
        ("x.csv", b'path,class\n"red/a.png,red\n', "line 2 is not valid CSV"),
        ("x.jsonl", b'{"path": "a", "class": "red"}\n{"path": "b" "class": "red"}\n', "line 2 is not valid JSON"),
        ("x.jsonl", b'{"path": "a", "class": "red"}\n["b", "red"]\n', "line 2 is not a JSON object"),
        ("x.jsonl", b'{"class": "red"}\n', 'line 1 has no "path"'),
        ("x.jsonl", b'{"path": "a"}\n', 'line 1 has no "class"'),
        ("x.jsonl", b'{"path": 3, "class": "red"}\n', "line 1: the path must be text"),
        ("x.jsonl", b'{"path": "a", "class": 3}\n', "line 1: the class must be text or null"),
        ("x.txt", b"path,class\na,red\n", "use a .csv or .jsonl file"),
    ],
)
def test_a_malformed_file_is_one_readable_error(project, name, data, message):
    with pytest.raises(storage.StorageError) as excinfo:
        import_labels(project, LabelFile(name, data))
    assert not isinstance(excinfo.value, LabelImportError)
    assert message in str(excinfo.value)
    assert label_rows(project) == []


def test_a_utf8_byte_order_mark_is_fine_and_a_missing_file_is_named(project, tmp_path):
    plan = import_labels(project, LabelFile("x.csv", b"\xef\xbb\xbfpath,class\nred/img_0000.png,red\n"))
    assert plan.per_class == {"red": 1}
    with pytest.raises(storage.StorageError, match=r"no file .*nowhere\.csv"):
        import_labels(project, tmp_path / "nowhere.csv")
    with pytest.raises(storage.StorageError, match="is a folder"):
        import_labels(project, tmp_path)


# ---------------------------------------------------------------- size


def test_a_hundred_thousand_rows_in_one_transaction(tmp_path):
    """The bulk path: 100,000 labels written by one statement (1.4-1.6 s here; timings live in the report)."""
    (tmp_path / "images").mkdir()
    project = storage.create_project(tmp_path / "p", tiny_settings(tmp_path / "images", RGB))
    n = 100_000
    paths = [f"{RGB[i % 3]}/img_{i:06d}.png" for i in range(n)]
    with writing(project) as db:  # items as ingest leaves them, without 100,000 image files
        db.conn.executemany(
            "INSERT INTO items (path, sha256, status, added_at, width, height, mode) "
            "VALUES (?, ?, 'ok', 0, 8, 8, 'RGB')",
            [(path, str(i)) for i, path in enumerate(paths)],
        )
    text = "path,class\n" + "".join(f"{path},{path.split('/')[0]}\n" for path in paths)
    plan = import_labels(project, LabelFile("big.csv", text.encode()))
    assert plan.per_class == {name: n // 3 + (name == "red") for name in RGB}
    assert storage.label_counts(project) == plan.per_class  # every one counts as a training label
    with opened(project) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT item_id) FROM labels").fetchone() == (n, n)
