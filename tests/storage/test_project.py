"""Projects: creation, settings validation, class edits, connections, migrations."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

import storage
from storage import schema
from storage.project import connect, writing
from tests.support import PETS, tiny_settings


def test_create_project_makes_folders_db_and_settings(tmp_path, image_root):
    settings = tiny_settings(image_root, (" cat ", "dog"), budget=10, initial_size=4, seed=3, warm_start=True)
    project = storage.create_project(tmp_path / "p", settings)
    assert project.db_path.is_file()
    assert all(d.is_dir() for d in (project.cache_dir, project.models_dir, project.exports_dir))
    loaded = storage.load_settings(storage.open_project(tmp_path / "p"))
    assert loaded == dataclasses.replace(settings, classes=("cat", "dog"), image_root=str(image_root.resolve()))
    assert storage.class_names(project) == ["cat", "dog"]


def test_connection_pragmas(project):
    db = connect(project)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO labels (item_id, kind, annotator, created_at) VALUES (999, 'skip', 'x', 0)")
    finally:
        db.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"round_size": 0}, "round_size is 0"),
        ({"budget": -1}, "budget is -1"),
        ({"budget": 2.5}, "budget must be a whole number"),
        ({"budget": True}, "budget must be a whole number"),
        ({"classes": ("cat", "Cat")}, "are the same"),
        ({"classes": ("cat",)}, "1 classes given"),
        ({"classes": tuple(f"c{i}" for i in range(101))}, "101 classes given"),
        ({"classes": ("cat", "  ")}, "class 2 has an empty name"),
        ({"classes": ("cat", "a\nb")}, "control characters"),
        ({"classes": ("cat", "x" * 101)}, "longer than"),
        ({"image_root": ""}, "image root is empty"),
        ({"initial_size": 11}, "initial batch (11) is larger than the budget (10)"),
        ({"validation_size": -2}, "validation_size is -2"),
        ({"image_size": 4}, "image size 4"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"strategy": " "}, "strategy must be a non-empty name"),
        ({"warm_start": "yes"}, "warm_start must be true or false"),
    ],
)
def test_invalid_settings_raise_actionable_errors_and_write_nothing(tmp_path, image_root, overrides, message):
    settings = dataclasses.replace(tiny_settings(image_root, PETS, budget=10, initial_size=4), **overrides)
    with pytest.raises(storage.SettingsError) as error:
        storage.create_project(tmp_path / "p", settings)
    assert message in str(error.value)
    assert not (tmp_path / "p").exists()


def test_missing_or_file_image_root(tmp_path, image_root):
    with pytest.raises(storage.SettingsError, match="does not exist"):
        storage.create_project(tmp_path / "p", tiny_settings(tmp_path / "nope", PETS))
    with pytest.raises(storage.SettingsError, match="is not a folder"):
        storage.create_project(tmp_path / "p", tiny_settings(image_root / "img_0000.png", PETS))
    assert not (tmp_path / "p").exists()


def test_budget_larger_than_pool():
    settings = storage.Settings(image_root="/", classes=("a", "b"), budget=15, validation_size=6, initial_size=5)
    storage.validate_settings(settings, pool_size=21)
    with pytest.raises(storage.SettingsError, match="larger than the 20 usable images"):
        storage.validate_settings(settings, pool_size=20)


def test_create_refuses_existing_project_and_open_refuses_missing(tmp_path, empty_project, image_root):
    with pytest.raises(storage.StorageError, match="already holds a project"):
        storage.create_project(empty_project.root, tiny_settings(image_root, PETS, budget=10, initial_size=4))
    with pytest.raises(storage.StorageError, match=r"project\.db is missing"):
        storage.open_project(tmp_path / "elsewhere")


def test_open_refuses_garbage_and_newer_schema(tmp_path, empty_project):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "project.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(storage.StorageError, match="not a project database"):
        storage.open_project(garbage)
    db = connect(empty_project)
    db.execute("INSERT INTO schema_version VALUES (?, 0)", (schema.LATEST_VERSION + 1,))
    db.close()
    with pytest.raises(storage.StorageError, match="newer than this app"):
        storage.open_project(empty_project.root)


def test_migrations_are_numbered_and_idempotent(empty_project):
    db = connect(empty_project)
    try:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, schema.LATEST_VERSION + 1))
        assert schema.migrate(db) == schema.LATEST_VERSION
        assert {"settings", "classes", "items", "labels", "rounds", "queue", "jobs"} <= set(db.table_names())
    finally:
        db.close()


def test_a_version_2_project_opens_with_its_labels(project):
    storage.set_label(project, 1, "cat")
    storage.set_label(project, 2, storage.SKIP)
    db = connect(project)
    db.execute("DROP VIEW item_states")  # back to the database at version 2
    db.execute("DROP VIEW current_labels")
    db.execute(next(statement for statement in schema.MIGRATIONS[0] if "VIEW current_labels" in statement))
    for table in ("label_reviews", "coreset_items", "coreset_runs"):  # version 4's
        db.execute(f"DROP TABLE {table}")
    db.execute("ALTER TABLE rounds DROP COLUMN proxy_val_n")  # version 5's
    db.execute("DELETE FROM schema_version WHERE version >= 3")
    db.close()
    reopened = storage.open_project(project.root)
    assert storage.labeled_ids(reopened) == [1]
    assert storage.skipped_ids(reopened) == [2]
    assert storage.current_label(reopened, 1) == "cat"
    assert storage.coreset_runs(reopened) == []  # version 4's tables are there again


def test_a_version_4_project_opens_with_its_rounds_accuracy_and_no_sample_size(project):
    storage.create_round(
        project, strategy="random", selector="random", item_ids=[3], scores=[0.0], n_labeled=0, index=0
    )
    db = connect(project)
    db.execute("ALTER TABLE rounds DROP COLUMN proxy_val_n")  # back to the database at version 4 ...
    db.execute("UPDATE rounds SET proxy_val_acc = 0.6")  # ... whose rounds stored an accuracy without its n
    db.execute("DELETE FROM schema_version WHERE version >= 5")
    db.close()
    reopened = storage.open_project(project.root)
    [old] = storage.list_rounds(reopened)
    assert (old.proxy_val_acc, old.proxy_val_n) == (0.6, None)  # not recorded then: not made up now
    new = storage.create_round(
        reopened,
        strategy="random",
        selector="x",
        item_ids=[4],
        scores=[0.0],
        n_labeled=1,
        proxy_val_acc=0.6,
        proxy_val_n=5,
    )
    assert storage.get_round(reopened, new.id).proxy_val_n == 5


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    broken = (("CREATE TABLE half_done (x)", "THIS IS NOT SQL"),)
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    monkeypatch.setattr(schema, "LATEST_VERSION", 1)
    project = storage.Project(tmp_path)
    db = connect(project)
    try:
        with pytest.raises(sqlite3.OperationalError):
            schema.migrate(db)
        assert schema.schema_version(db) == 0
        assert "half_done" not in db.table_names()
    finally:
        db.close()


def test_save_settings_validates_and_changes_nothing_on_error(project, image_root):
    before = storage.load_settings(project)
    with pytest.raises(storage.SettingsError, match="round_size is 0"):
        storage.save_settings(project, dataclasses.replace(before, round_size=0, budget=5))
    with pytest.raises(storage.SettingsError, match="larger than the 20 usable images"):
        storage.save_settings(project, dataclasses.replace(before, budget=18, validation_size=3))
    with pytest.raises(storage.SettingsError, match="cannot change after images are ingested"):
        storage.save_settings(project, dataclasses.replace(before, image_root=str(image_root.parent)))
    assert storage.load_settings(project) == before
    storage.save_settings(project, dataclasses.replace(before, budget=12, strategy="kcenter"))
    assert storage.load_settings(project).strategy == "kcenter"


def test_budget_cannot_drop_below_queued_and_validation_cannot_shrink(project):
    settings = dataclasses.replace(storage.load_settings(project), validation_size=2)
    storage.save_settings(project, settings)
    storage.reserve_validation(project)
    storage.create_round(
        project, strategy="random", selector="none", item_ids=[1, 2, 3, 4, 5], scores=[0] * 5, n_labeled=0
    )
    with pytest.raises(storage.SettingsError, match="below the 5 images already queued"):
        storage.save_settings(project, dataclasses.replace(settings, budget=4, initial_size=4))
    with pytest.raises(storage.SettingsError, match="can grow but not shrink"):
        storage.save_settings(project, dataclasses.replace(settings, validation_size=1))


def test_rename_reorder_add_and_remove_classes_keep_labels(project):
    settings = storage.load_settings(project)
    storage.set_label(project, 1, "cat")
    storage.set_label(project, 2, "dog")
    storage.save_settings(project, dataclasses.replace(settings, classes=("kitten", "dog", "bird")))
    assert storage.current_labels(project) == {1: "kitten", 2: "dog"}
    storage.save_settings(project, dataclasses.replace(settings, classes=("dog", "kitten", "bird", "fish")))
    assert storage.class_names(project) == ["dog", "kitten", "bird", "fish"]
    assert storage.training_labels(project) == {1: 1, 2: 0}
    assert storage.label_history(project, 1)[0].class_name == "kitten"
    storage.save_settings(project, dataclasses.replace(settings, classes=("dog", "kitten")))
    assert storage.label_counts(project) == {"dog": 1, "kitten": 1}


def test_removing_a_class_in_use_is_refused(project):
    settings = storage.load_settings(project)
    storage.set_label(project, 3, "bird")
    with pytest.raises(storage.SettingsError, match="'bird' still labels 1 images"):
        storage.save_settings(project, dataclasses.replace(settings, classes=("cat", "dog")))
    assert storage.class_names(project) == ["cat", "dog", "bird"]
    storage.set_label(project, 3, "cat")
    storage.save_settings(project, dataclasses.replace(settings, classes=("cat", "dog")))
    storage.save_settings(project, dataclasses.replace(settings, classes=("cat", "dog", "bird")))
    assert storage.label_history(project, 3)[0].class_name == "bird"
    assert storage.current_label(project, 3) == "cat"


@pytest.mark.parametrize("bad", ["0", "two", "-1", "", "1.5", "2000"])
def test_processes_must_be_auto_or_a_whole_number(tmp_path, bad):
    settings = dataclasses.replace(tiny_settings(tmp_path), processes=bad)
    with pytest.raises(storage.SettingsError, match=r"processes .* must be auto or a whole number from 1 to 1024"):
        storage.validate_settings(settings)


def test_processes_are_stored_and_read_back(tmp_path):
    project = storage.create_project(tmp_path / "p", dataclasses.replace(tiny_settings(tmp_path), processes="4"))
    assert storage.load_settings(project).processes == "4"
    assert storage.Settings(image_root="", classes=("a", "b")).processes == "auto"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"candidates": "nearest"}, "candidates 'nearest' must be one of all, seals"),
        ({"seals_k": 0}, "seals_k 0 must be a whole number of neighbours from 1 to 10000"),
        ({"seals_k": 2.5}, "seals_k 2.5 must be a whole number"),
        ({"seals_k": True}, "seals_k True must be a whole number"),
        ({"seals_k": 10_001}, "seals_k 10001 must be a whole number"),
    ],
)
def test_candidates_must_be_all_or_seals_with_a_whole_k(tmp_path, overrides, message):
    with pytest.raises(storage.SettingsError) as error:
        storage.validate_settings(dataclasses.replace(tiny_settings(tmp_path), **overrides))
    assert message in str(error.value)


def test_candidates_are_stored_and_a_project_from_before_reads_the_defaults(tmp_path):
    settings = dataclasses.replace(tiny_settings(tmp_path), candidates="seals", seals_k=20)
    project = storage.create_project(tmp_path / "p", settings)
    read = storage.load_settings(project)
    assert (read.candidates, read.seals_k) == ("seals", 20)
    with writing(project) as db:  # a project saved before these settings existed
        db.execute("DELETE FROM settings WHERE key IN ('candidates', 'seals_k')")
    read = storage.load_settings(project)
    assert (read.candidates, read.seals_k) == ("all", 100)
