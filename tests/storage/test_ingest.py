"""Ingest: the bad-input folder, symlinks, limits, progress, re-runs, the process pool."""

from __future__ import annotations

import builtins
import importlib
import io
import multiprocessing
import os
import struct
import threading
import types
import zlib
from pathlib import Path

import pytest
from PIL import Image

import storage
import storage.parallel
from tests.support import PETS, image_bytes, tiny_settings, write_image_folder

ingest_module = importlib.import_module("storage.ingest")


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _noise_jpeg(size=(64, 64)) -> bytes:
    return _save(Image.effect_noise(size, 60).convert("RGB"), "JPEG", quality=90)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(width=100_000, height=100_000) -> bytes:
    """A ~60-byte PNG whose header declares a width x height RGB canvas."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _palette_png_with_transparency() -> bytes:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    return _save(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), (80 * i, 0, 0)) for i in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    return _save(Image.new("RGB", (20, 10), (0, 90, 0)), "JPEG", exif=exif)


NAMES = ("with space.png", 'quote\'s "double".png', "<angle>.png", "ünïcødé é.png")


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """Every tricky input from the issue, plus hidden and unrelated files."""
    root = tmp_path / "bad"
    root.mkdir()
    truncated = _noise_jpeg()
    files = {
        "empty.jpg": b"",
        "truncated.jpg": truncated[: len(truncated) // 2],
        "text.jpg": b"just some text, not pixels\n",
        "bomb.png": _bomb_png(),
        "cmyk.jpg": _save(Image.new("CMYK", (8, 8), (10, 20, 30, 40)), "JPEG"),
        "deep16.png": _save(Image.new("I;16", (8, 6), 40000), "PNG"),
        "palette_alpha.png": _palette_png_with_transparency(),
        "animated.gif": _animated_gif(),
        "exif_rotated.jpg": _exif_rotated_jpeg(),
        "dup_a.png": image_bytes(500),
        "dup_b.png": image_bytes(500),
        "UPPER.JPG": _save(Image.new("RGB", (5, 5), (1, 2, 3)), "JPEG"),
        "x.jpg/inner.png": image_bytes(501),
        ".hidden.png": image_bytes(502),
        ".hidden_dir/inside.png": image_bytes(503),
        "notes.txt": b"not a candidate",
    }
    for seed, name in enumerate(NAMES, start=600):
        files[name] = image_bytes(seed)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "x.jpg" / "back.jpg").symlink_to(root, target_is_directory=True)
    return root


EXPECTED_OK = {
    # path: (width, height, mode)
    "cmyk.jpg": (8, 8, "CMYK"),
    "deep16.png": (8, 6, "I;16"),
    "palette_alpha.png": (8, 8, "P"),
    "animated.gif": (8, 8, "P"),
    "exif_rotated.jpg": (10, 20, "RGB"),
    "dup_a.png": (8, 8, "RGB"),
    "UPPER.JPG": (5, 5, "RGB"),
    "x.jpg/inner.png": (8, 8, "RGB"),
    **{name: (8, 8, "RGB") for name in NAMES},
}
EXPECTED_REJECTED = [
    ("bomb.png", "too large (decompression bomb)"),
    ("empty.jpg", "empty file"),
    ("text.jpg", "not an image"),
    ("truncated.jpg", "truncated image"),
]


def test_bad_input_folder_outcomes(tmp_path, bad_folder):
    project = storage.create_project(tmp_path / "p", tiny_settings(bad_folder, PETS, budget=2, initial_size=1))
    report = storage.ingest(project)
    items = {item.path: (item.width, item.height, item.mode) for item in storage.usable_items(project)}
    assert items == EXPECTED_OK
    assert storage.rejected_files(project) == EXPECTED_REJECTED
    assert storage.duplicate_files(project) == [("dup_b.png", "dup_a.png")]
    assert report.added == len(EXPECTED_OK)
    assert report.duplicates == 1
    assert report.rejected == 4
    assert report.already_known == 0
    assert report.rejected_reasons == {reason: 1 for _, reason in EXPECTED_REJECTED}
    assert report.skipped == 2  # the two links back to the root
    db = storage.connect(project)
    n_frames = db.execute("SELECT n_frames FROM items WHERE path = 'animated.gif'").fetchone()[0]
    db.close()
    assert n_frames == 3


def test_rejected_and_duplicate_items_are_never_usable(tmp_path, bad_folder):
    project = storage.create_project(tmp_path / "p", tiny_settings(bad_folder, PETS, budget=2, initial_size=1))
    storage.ingest(project)
    db = storage.connect(project)
    unusable = dict(db.execute("SELECT path, id FROM items WHERE status != 'ok'").fetchall())
    db.close()
    for item_id in unusable.values():
        with pytest.raises(storage.StorageError, match="not usable"):
            storage.get_item(project, item_id)
        with pytest.raises(storage.StorageError, match="cannot be labeled"):
            storage.set_label(project, item_id, "cat")
        with pytest.raises(storage.StorageError, match="cannot be queued"):
            storage.create_round(project, strategy="r", selector="s", item_ids=[item_id], scores=[0], n_labeled=0)
    assert not set(unusable.values()) & set(storage.unlabeled_ids(project))


def test_symlinks_never_leave_the_root(tmp_path, image_root):
    outside = tmp_path / "outside"
    write_image_folder(outside, classes=1, per_class=2, size=8, start=900, flat=True)
    (image_root / "out_file.png").symlink_to(outside / "img_0900.png")
    (image_root / "out_dir").symlink_to(outside, target_is_directory=True)
    (image_root / "dangling.png").symlink_to(tmp_path / "missing.png")
    (image_root / "in_file.png").symlink_to(image_root / "img_0000.png")
    project = storage.create_project(tmp_path / "p", tiny_settings(image_root, PETS, budget=10, initial_size=4))
    report = storage.ingest(project)
    paths = {item.path for item in storage.usable_items(project)}
    assert not any(p.startswith("out_") for p in paths)
    assert storage.duplicate_files(project) == [("in_file.png", "img_0000.png")]
    assert (report.added, report.skipped) == (20, 3)


def test_folder_symlink_inside_root_is_walked_once(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root / ".real", classes=1, per_class=3, size=8, flat=True)
    (root / "alias").symlink_to(root / ".real", target_is_directory=True)
    (root / "alias2").symlink_to(root / ".real", target_is_directory=True)
    project = storage.create_project(tmp_path / "p", tiny_settings(root, PETS, budget=10, initial_size=4))
    report = storage.ingest(project)
    assert [item.path for item in storage.usable_items(project)] == [
        "alias/img_0000.png",
        "alias/img_0001.png",
        "alias/img_0002.png",
    ]
    assert report.skipped == 1


def test_fifo_with_image_name_is_unreadable_without_blocking(tmp_path, image_root):
    os.mkfifo(image_root / "pipe.png")
    project = storage.create_project(tmp_path / "p", tiny_settings(image_root, PETS, budget=10, initial_size=4))
    storage.ingest(project)
    assert storage.rejected_files(project) == [("pipe.png", "unreadable")]


def test_unreadable_file(tmp_path, image_root, monkeypatch):
    (image_root / "locked.png").write_bytes(image_bytes(999))
    (image_root / "locked.png").chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the read itself fail instead

        def refusing_open(path, *args, **kwargs):
            if str(path).endswith("locked.png"):
                raise PermissionError(13, "Permission denied", path)
            return builtins.open(path, *args, **kwargs)

        monkeypatch.setattr(ingest_module, "open", refusing_open, raising=False)
    project = storage.create_project(tmp_path / "p", tiny_settings(image_root, PETS, budget=10, initial_size=4))
    storage.ingest(project)
    assert storage.rejected_files(project) == [("locked.png", "unreadable")]


def test_pixel_and_file_size_limits_are_configurable(tmp_path, image_root):
    (image_root / "big.png").write_bytes(image_bytes(77, size=40))
    project = storage.create_project(tmp_path / "p", tiny_settings(image_root, PETS, budget=10, initial_size=4))
    report = storage.ingest(project, max_pixels=40 * 40 - 1, max_file_bytes=10_000)
    assert storage.rejected_files(project) == [("big.png", "too large (decompression bomb)")]
    assert report.added == 20
    (image_root / "heavy.png").write_bytes(image_bytes(78) + b"\0" * 20_000)
    storage.ingest(project, max_file_bytes=10_000)
    assert ("heavy.png", "too large") in storage.rejected_files(project)


def test_rerun_adds_only_new_files_and_reports_progress(tmp_path, image_root):
    project = storage.create_project(tmp_path / "p", tiny_settings(image_root, PETS, budget=10, initial_size=4))
    calls = []
    first = storage.ingest(project, lambda done, total, path: calls.append((done, total, path)))
    assert [c[0] for c in calls] == list(range(1, 21))
    assert {c[1] for c in calls} == {20}
    assert calls[0][2] == "img_0000.png"
    ids_before = [item.id for item in storage.usable_items(project)]
    write_image_folder(image_root, classes=1, per_class=2, size=8, start=100, flat=True)
    (image_root / "copy.png").write_bytes((image_root / "img_0005.png").read_bytes())
    calls.clear()
    second = storage.ingest(project, lambda *args: calls.append(args))
    assert (first.added, second.added, second.duplicates, second.already_known) == (20, 2, 1, 20)
    assert [c[1] for c in calls] == [3, 3, 3]
    assert [item.id for item in storage.usable_items(project)][:20] == ids_before
    third = storage.ingest(project)
    assert (third.added, third.already_known) == (0, 23)


def test_project_folder_inside_image_root_is_not_ingested(tmp_path, image_root):
    project = storage.create_project(image_root / "project", tiny_settings(image_root, PETS, budget=10, initial_size=4))
    (project.exports_dir / "preview.png").write_bytes(image_bytes(4444))
    storage.ingest(project)
    assert not any(item.path.startswith("project/") for item in storage.usable_items(project))


def _item_rows(project) -> list[tuple]:
    db = storage.connect(project)
    try:
        return db.execute(
            "SELECT id, path, sha256, width, height, mode, status, reason, duplicate_of FROM items ORDER BY id"
        ).fetchall()
    finally:
        db.close()


class PoolSpy:
    """Stands in for `multiprocessing` in storage.parallel: records the start method of every pool
    process_map makes, and the names of its worker processes once they run."""

    def __init__(self):
        self.pools: list[tuple[str, list[str]]] = []

    def get_context(self, method):
        context = multiprocessing.get_context(method)
        spy = self

        class Recording:
            def Pool(self, *args, **kwargs):  # multiprocessing's name
                before = set(multiprocessing.active_children())
                pool = context.Pool(*args, **kwargs)
                started = set(multiprocessing.active_children()) - before  # this pool's workers, now running
                spy.pools.append((context.get_start_method(), sorted(child.name for child in started)))
                return pool

        return Recording()


@pytest.mark.parametrize("threaded_caller", [False, True], ids=["fork", "spawn"])
def test_process_pool_gives_the_same_rows_as_in_process(tmp_path, monkeypatch, threaded_caller):
    root = tmp_path / "images"
    write_image_folder(root, classes=1, per_class=40, size=8, flat=True)
    (root / "bad.jpg").write_bytes(b"nope")
    (root / "copy.png").write_bytes((root / "img_0003.png").read_bytes())
    monkeypatch.setattr(storage.parallel, "POOL_THRESHOLD", 8)
    monkeypatch.setattr(ingest_module, "CHUNK", 16)
    spy = PoolSpy()
    monkeypatch.setattr(storage.parallel, "multiprocessing", spy)
    stop = threading.Event()
    if threaded_caller:  # a second live thread makes ingest spawn, as under Streamlit
        threading.Thread(target=stop.wait, daemon=True).start()
    else:  # a single-threaded caller, whatever threads earlier tests of this session left running
        monkeypatch.setattr(storage.parallel, "threading", types.SimpleNamespace(active_count=lambda: 1))
    rows, pools = [], []
    try:
        for name, workers in (("pool", 2), ("inline", 1)):
            project = storage.create_project(tmp_path / name, tiny_settings(root, PETS, budget=10, initial_size=4))
            report = storage.ingest(project, workers=workers)
            assert (report.added, report.duplicates, report.rejected) == (40, 1, 1)
            rows.append(_item_rows(project))
            pools.append(list(spy.pools))
            spy.pools.clear()
    finally:
        stop.set()
    assert rows[0] == rows[1]
    method = "spawn" if threaded_caller else "fork"
    # the pool run really had two worker processes started with that method; the inline run had none
    [(started_with, worker_names)], inline = pools
    assert started_with == method and inline == []
    assert len(worker_names) == 2 and all(w.startswith(f"{method.capitalize()}PoolWorker-") for w in worker_names)


@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "pool"])
def test_of_identical_files_the_first_in_path_order_stays_usable(tmp_path, monkeypatch, workers):
    """Path order is folder by folder: `photos/` before `photos (copy)/` (string order puts ' ' before
    '/'), a subfolder's `a/b.png` before the root's `b.png` (the walk meets the root's files first)."""
    root = tmp_path / "images"
    write_image_folder(root, classes=1, per_class=12, size=8, flat=True)
    pairs = {"photos/plain.png": "photos (copy)/plain.png", "a/b.png": "b.png", "c-d/e.png": "c.d/e.png"}
    for seed, (first, second) in enumerate(pairs.items(), start=500):
        for relative in (second, first):  # the copy is written first: older, and first in the walk
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(image_bytes(seed))
    monkeypatch.setattr(storage.parallel, "POOL_THRESHOLD", 4)
    monkeypatch.setattr(ingest_module, "CHUNK", 3)  # the pairs fall in different chunks
    project = storage.create_project(tmp_path / "project", tiny_settings(root, PETS, budget=4, initial_size=2))
    storage.ingest(project, workers=workers)
    assert sorted(storage.duplicate_files(project)) == sorted((second, first) for first, second in pairs.items())
    # a file added later that comes first in path order does not displace the usable item chosen before
    (root / "0.png").write_bytes((root / "photos/plain.png").read_bytes())
    storage.ingest(project, workers=workers)
    assert ("0.png", "photos/plain.png") in storage.duplicate_files(project)


def test_items_api(project, image_root):
    items = storage.usable_items(project)
    assert [item.id for item in items] == list(range(1, 21))
    first = storage.get_item(project, 1)
    assert (first.path, first.width, first.height, first.mode, first.is_validation) == (
        "img_0000.png",
        8,
        8,
        "RGB",
        False,
    )
    assert len(first.sha256) == 64
    assert storage.resolve_item_path(project, 1) == (image_root / "img_0000.png").resolve()
    assert storage.item_counts(project) == {"ok": 20, "duplicate": 0, "rejected": 0}
    with pytest.raises(storage.StorageError, match="no item with id 99"):
        storage.get_item(project, 99)
    with pytest.raises(storage.StorageError, match="no item with id 99"):
        storage.resolve_item_path(project, 99)
    for beyond_sqlite in (2**63, -1):  # an id SQLite cannot hold is no item either (was OverflowError)
        for read in (storage.get_item, storage.resolve_item_path):
            with pytest.raises(storage.StorageError, match=f"no item with id {beyond_sqlite}"):
                read(project, beyond_sqlite)


def test_resolve_refuses_a_file_swapped_for_a_link_outside(tmp_path, project, image_root):
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes(1234))
    (image_root / "img_0003.png").unlink()
    (image_root / "img_0003.png").symlink_to(outside)
    with pytest.raises(storage.StorageError, match="outside the image root"):
        storage.resolve_item_path(project, 4)


def test_missing_image_root_is_an_error(tmp_path, image_root, empty_project):
    image_root.rename(tmp_path / "moved")
    with pytest.raises(storage.StorageError, match="is missing or not a folder"):
        storage.ingest(empty_project)
