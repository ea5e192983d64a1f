"""Opening a broken project never writes and never crashes; the machine refusing a write is a readable error.

The bad-input corpus (docs/storage.md, "Broken projects"): each case gives one StorageError with the
expected message, and the files on disk are byte for byte what they were.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from pathlib import Path

import pytest

import storage
from storage import project as project_module
from storage import schema
from tests.support import PETS, as_nobody, nobody_dir, tiny_settings, write_image_folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def fresh_project(tmp_path: Path, name: str = "project") -> storage.Project:
    images = tmp_path / "images"
    if not images.exists():
        write_image_folder(images, classes=1, per_class=12, size=8, flat=True)
    project = storage.create_project(tmp_path / name, tiny_settings(images, PETS, budget=10, initial_size=4))
    storage.ingest(project)
    return project


def corrupt_page(db_path: Path) -> None:
    """Overwrite the second b-tree page (a table's root) with garbage, behind a valid header."""
    page_size = int.from_bytes(db_path.read_bytes()[16:18], "big")
    with open(db_path, "r+b") as handle:
        handle.seek(page_size * 2)
        handle.write(b"\xff" * page_size)


def foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.commit()
    conn.close()


def newer_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (schema.LATEST_VERSION + 1,))
    conn.commit()
    conn.close()


CASES = {
    "zero bytes": (lambda p: p.write_bytes(b""), "is empty \\(0 bytes\\)"),
    "garbage": (lambda p: p.write_bytes(b"not a database at all " * 200), "not a SQLite file"),
    "truncated header": (lambda p: p.write_bytes(b"SQLite"), "not a SQLite file"),
    "foreign sqlite": (foreign_sqlite, "not a project database \\(it has no schema version\\)"),
    "corrupted page": (corrupt_page, "damaged|not a readable project database"),
    "newer schema": (newer_schema, "newer than this app"),
}


@pytest.mark.parametrize("case", CASES)
def test_open_refuses_a_broken_database_and_leaves_it_as_it_was(tmp_path, case):
    project = fresh_project(tmp_path)
    damage, expected = CASES[case]
    if case in ("zero bytes", "garbage", "truncated header", "foreign sqlite"):
        project.db_path.unlink()
    damage(project.db_path)
    before = snapshot(project.root)
    with pytest.raises(storage.StorageError, match=expected):
        storage.open_project(project.root)
    after = snapshot(project.root)
    assert after["project.db"] == before["project.db"]
    # a valid SQLite file in WAL mode is read through its -wal/-shm side files, which any reader
    # creates; a file that is not SQLite is never handed to SQLite at all
    side_files = set(after) - set(before)
    assert side_files <= ({"project.db-wal", "project.db-shm"} if case in ("corrupted page", "newer schema") else set())


def test_missing_database_and_missing_folder(tmp_path):
    with pytest.raises(storage.StorageError, match=r"project\.db is missing"):
        storage.open_project(tmp_path / "nowhere")
    with pytest.raises(storage.StorageError, match=r"project\.db is missing"):
        storage.open_project(tmp_path)


def test_read_only_project_is_refused_before_sqlite_sees_it(tmp_path, monkeypatch):
    project = fresh_project(tmp_path)
    before = snapshot(project.root)
    real_access = project_module.os.access
    monkeypatch.setattr(
        project_module.os,
        "access",
        lambda path, mode: False if mode == project_module.os.W_OK else real_access(path, mode),
    )
    with pytest.raises(storage.StorageError, match="is read-only: the app saves every label there"):
        storage.open_project(project.root)
    assert snapshot(project.root) == before


def test_unreadable_project_is_a_readable_error(tmp_path, monkeypatch):
    project = fresh_project(tmp_path)

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(project_module, "open", refuse, raising=False)
    with pytest.raises(storage.StorageError, match="permission denied; make the folder readable"):
        storage.open_project(project.root)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str):
    """A small tmpfs at `where` (root only); skips the test where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def label_until_refused(project: storage.Project, limit: int = 100_000) -> tuple[int, storage.UnavailableError]:
    """Label item 1 over and over (every label is a new row) until the machine refuses; (acknowledged, error)."""
    for n in range(limit):
        try:
            storage.set_label(project, 1, ("cat", "dog")[n % 2], annotator="a")
        except storage.UnavailableError as exc:
            return n, exc
    raise AssertionError("the disk never filled")


def test_full_disk_is_a_readable_error_and_loses_no_acknowledged_label(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "600k") as disk:
        project = fresh_project(disk)
        acknowledged, error = label_until_refused(project)
        assert "the disk holding" in str(error) and "is full; free some space" in str(error)
        assert isinstance(error, sqlite3.OperationalError)  # callers that retry those still do
        assert len(storage.label_history(project, 1)) == acknowledged
        # everything acknowledged is readable, and a write succeeds again once space is freed
        for path in (tmp_path / "small" / "images").iterdir():
            path.unlink()
        storage.set_label(project, 2, "dog", annotator="a")
        assert storage.current_label(project, 2) == "dog"


def test_full_database_file_is_the_same_readable_error(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: SQLite's own limit on the file's pages gives the same SQLITE_FULL."""
    project = fresh_project(tmp_path)
    connect = project_module.connect
    with storage.project.opened(project) as db:
        cap = db.execute("PRAGMA page_count").fetchone()[0] + 2

    def capped(p):
        db = connect(p)
        db.execute(f"PRAGMA max_page_count = {cap}")
        return db

    monkeypatch.setattr(project_module, "connect", capped)
    acknowledged, error = label_until_refused(project)
    assert "is full; free some space" in str(error)
    monkeypatch.undo()
    assert len(storage.label_history(project, 1)) == acknowledged


def test_creating_a_project_on_a_nearly_full_disk_says_the_disk_is_full(tmp_path):
    """8 KB free: SQLite cannot grow the new database's -shm file and reports a generic "disk I/O
    error" (SQLITE_IOERR_SHMSIZE), which is the full disk, not a failing one."""
    write_image_folder(tmp_path / "images", classes=1, per_class=3, size=8, flat=True)
    with mounted_tmpfs(tmp_path / "small", "8k") as disk:
        with pytest.raises(storage.UnavailableError) as caught:
            storage.create_project(disk / "project", tiny_settings(tmp_path / "images", PETS, budget=2, initial_size=1))
        assert f"the disk holding {disk / 'project'} is full; free some space" in str(caught.value)
        assert list(disk.iterdir()) == []  # nothing left behind


def test_read_only_mount_refuses_open_and_writes_readably(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "2m") as disk:
        project = fresh_project(disk)
        done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot remount read-only here")
        with pytest.raises(storage.StorageError, match="is read-only"):
            storage.open_project(project.root)
        with pytest.raises(storage.UnavailableError, match=r"cannot write to .* read-only"):
            storage.set_label(project, 1, "cat", annotator="a")


def test_a_bug_in_sql_is_not_dressed_up_as_the_machine(tmp_path):
    project = fresh_project(tmp_path)
    with pytest.raises(sqlite3.OperationalError) as caught, storage.project.opened(project) as db:
        db.execute("SELECT no_such_column FROM items")
    assert not isinstance(caught.value, storage.UnavailableError)


def test_an_export_on_a_full_disk_is_a_readable_error_and_leaves_no_part_file(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "600k") as disk:
        project = fresh_project(tmp_path)
        for item in storage.usable_items(project):
            storage.set_label(project, item.id, "cat", annotator="a")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
            while True:  # fill the disk to the last block
                filler.write(b"\0" * 4096)
                filler.flush()
        with pytest.raises(storage.UnavailableError, match=r"cannot write .*free some space"):
            storage.export_imagefolder_zip(project, disk / "out" / "set.zip")
        assert list((disk / "out").iterdir()) == []


# ---------------------------------------------------------------- as an ordinary account


@pytest.fixture
def shared_dir():
    """A folder under /tmp that the ordinary account may enter; removed after."""
    with nobody_dir() as folder:
        yield folder


OUTCOMES = """
import json, sys
from pathlib import Path
import storage
from tests.support import PETS, tiny_settings

base = Path(sys.argv[1])

def outcome(call):
    try:
        call()
        return "ok"
    except storage.StorageError as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        return f"CRASH {type(exc).__name__}: {exc}"

settings = lambda images: tiny_settings(images, PETS, budget=2, initial_size=1)
print(json.dumps({
    "validate": outcome(lambda: storage.validate_settings(settings(base / "closed" / "images"))),
    "validate_own": outcome(lambda: storage.validate_settings(settings(base / "closed_images"))),
    "create": outcome(lambda: storage.create_project(base / "closed" / "project", settings(base / "images"))),
    "create_in_read_only": outcome(lambda: storage.create_project(base / "read_only" / "p", settings(base / "images"))),
    "open": outcome(lambda: storage.open_project(base / "project")),
}))
"""


def test_unreadable_folders_are_readable_errors_for_an_ordinary_account(shared_dir):
    write_image_folder(shared_dir / "images", classes=1, per_class=3, size=8, flat=True)
    write_image_folder(shared_dir / "closed" / "images", classes=1, per_class=3, size=8, flat=True)
    write_image_folder(shared_dir / "closed_images", classes=1, per_class=3, size=8, flat=True)
    storage.create_project(shared_dir / "project", tiny_settings(shared_dir / "images", PETS, budget=2, initial_size=1))
    (shared_dir / "read_only").mkdir()
    for folder in ("closed", "closed_images", "project"):
        (shared_dir / folder).chmod(0o000)
    (shared_dir / "read_only").chmod(0o555)
    found = as_nobody(OUTCOMES, str(shared_dir))
    readable = "permission denied; make the folder readable by the account running the app"
    assert found["validate"] == f"SettingsError: cannot read {shared_dir / 'closed'}: {readable}"
    assert found["validate_own"] == f"SettingsError: cannot read {shared_dir / 'closed_images'}: {readable}"
    assert found["create"] == f"StorageError: cannot read {shared_dir / 'closed'}: {readable}"
    assert found["create_in_read_only"].startswith(f"StorageError: cannot create {shared_dir / 'read_only' / 'p'}: ")
    assert found["open"] == f"StorageError: cannot read {shared_dir / 'project'}: {readable}"
    assert not (shared_dir / "read_only" / "p").exists()
