"""Ingest an image folder: walk it safely, fully decode every file, dedupe by sha256.

Every candidate file becomes one `items` row: `ok` (usable), `duplicate`
(same bytes as an earlier usable item; `duplicate_of` points at it) or
`rejected` with one of the REASONS. Decoding and hashing run in a small
process pool whose results come back in submission order; rows are inserted
in path order (`storage.walk.path_order`), one transaction per chunk, so an
interrupted ingest keeps what it did and a re-run adds only new paths. Of
identical files the first in path order is the usable one, and a file added
later never displaces the usable item an earlier ingest chose.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
from PIL import Image, UnidentifiedImageError

from storage.items import restore_found
from storage.parallel import default_workers, process_map
from storage.project import Project, StorageError, opened, probe, read_settings, write_transaction
from storage.walk import find_images

DEFAULT_MAX_PIXELS = 100_000_000  # pixels (width x height) of the first frame
DEFAULT_MAX_FILE_BYTES = 256 * 2**20  # bytes
CHUNK = 512  # files per insert transaction

EMPTY = "empty file"
TRUNCATED = "truncated image"
NOT_IMAGE = "not an image"
TOO_LARGE = "too large"
BOMB = "too large (decompression bomb)"
UNREADABLE = "unreadable"
REASONS = (EMPTY, TRUNCATED, NOT_IMAGE, TOO_LARGE, BOMB, UNREADABLE)

# Formats Pillow may pick for a file with an image extension; anything else
# (PDF, EPS, ICO, ...) named .jpg is "not an image".
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "GIF", "TIFF")  # JPEG covers MPO
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class IngestReport:
    """Counts of one ingest run. `already_known`: paths ingested by an earlier run;
    `skipped`: symlinks that leave the root or dangle, never read."""

    added: int
    duplicates: int
    rejected: int
    already_known: int
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    skipped: int = 0


@dataclass(frozen=True)
class Examined:
    """What decoding one file found; `reason` is None for a usable image."""

    path: str
    size_bytes: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    n_frames: int | None = None
    reason: str | None = None


def ingest(
    project: Project,
    on_progress: Callable[[int, int, str], None] | None = None,
    *,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IngestReport:
    """Ingest new files under the project's image root.

    on_progress(done, total, relative_path) is called after each new file;
    total counts the new files only. workers: decoding processes (default
    min(2, CPUs)). Files larger than max_file_bytes are "too large"; images
    over max_pixels (width x height) are "too large (decompression bomb)".
    From a multithreaded caller the pool is spawned, which re-imports the
    `__main__` module: scripts must guard their entry point as usual.
    """
    with opened(project) as db:
        root = Path(read_settings(db).image_root).resolve()
        known = {path for (path,) in db.execute("SELECT path FROM items")}
    info = probe(root)
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"image root {root} is missing or not a folder; restore it or create a new project")
    restore_found(project)
    found = find_images(root, exclude=project.root)
    new = [path for path in found.paths if path not in known]
    counts = {"ok": 0, "duplicate": 0, "rejected": 0}
    reasons: dict[str, int] = {}
    done = 0
    with opened(project) as db:
        results = _examine_all(root, new, workers, max_pixels, max_file_bytes)
        for chunk in _chunks(results, CHUNK):
            for status, reason in _insert_chunk(db, chunk):
                counts[status] += 1
                if reason:
                    reasons[reason] = reasons.get(reason, 0) + 1
            for examined in chunk:
                done += 1
                if on_progress is not None:
                    on_progress(done, len(new), examined.path)
    return IngestReport(
        added=counts["ok"],
        duplicates=counts["duplicate"],
        rejected=counts["rejected"],
        already_known=len(found.paths) - len(new),
        rejected_reasons=reasons,
        skipped=found.skipped,
    )


def _chunks(results: Iterable[Examined], size: int) -> Iterator[list[Examined]]:
    chunk: list[Examined] = []
    for examined in results:
        chunk.append(examined)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _examine_all(root, paths, workers, max_pixels, max_file_bytes) -> Iterator[Examined]:
    args = [(str(root), path, max_pixels, max_file_bytes) for path in paths]
    yield from process_map(
        _examine_args,
        args,
        workers or default_workers(),
        initializer=_init_worker,
        initargs=(max_pixels,),
        chunksize=64,
    )


def _init_worker(max_pixels: int) -> None:
    # Pillow's own bomb check must not fire below our limit (it errors at 2x).
    Image.MAX_IMAGE_PIXELS = max(max_pixels, Image.MAX_IMAGE_PIXELS or 0)


def _examine_args(args: tuple[str, str, int, int]) -> Examined:
    return examine_file(*args)


def examine_file(root: str, path: str, max_pixels: int, max_file_bytes: int) -> Examined:
    """Read, hash and fully decode `root/path`; never raises for a bad file."""
    full = os.path.join(root, path)
    try:
        info = os.stat(full)
    except OSError:
        return Examined(path, reason=UNREADABLE)
    meta: dict[str, Any] = {"size_bytes": info.st_size, "mtime": info.st_mtime}
    if not stat.S_ISREG(info.st_mode):
        return Examined(path, **meta, reason=UNREADABLE)
    if info.st_size == 0:
        return Examined(path, **meta, sha256=hashlib.sha256(b"").hexdigest(), reason=EMPTY)
    if info.st_size > max_file_bytes:
        return Examined(path, **meta, reason=TOO_LARGE)
    try:
        with open(full, "rb") as handle:
            data = handle.read()
    except OSError:
        return Examined(path, **meta, reason=UNREADABLE)
    sha = hashlib.sha256(data).hexdigest()
    return Examined(path, **meta, sha256=sha, **_decode(data, max_pixels))


def _decode(data: bytes, max_pixels: int) -> dict:
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                return {"reason": BOMB}
            n_frames = getattr(image, "n_frames", 1)
            image.load()
            orientation = image.getexif().get(0x0112)
            mode = image.mode
    except Image.DecompressionBombError:
        return {"reason": BOMB}
    except UnidentifiedImageError:
        return {"reason": NOT_IMAGE}
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        truncated = isinstance(exc, EOFError) or "truncat" in str(exc).lower()
        return {"reason": TRUNCATED if truncated else UNREADABLE}
    if orientation in _ROTATED:
        width, height = height, width
    return {"width": width, "height": height, "mode": mode, "n_frames": n_frames}


def _insert_chunk(db: sqlite_utils.Database, chunk: list[Examined]) -> list[tuple[str, str | None]]:
    """Insert one chunk in one transaction; returns (status, reason) per new row."""
    outcomes = []
    now = time.time()
    with write_transaction(db):
        for examined in chunk:
            status, duplicate_of = _classify(db, examined)
            cursor = db.execute(
                "INSERT OR IGNORE INTO items (path, size_bytes, mtime, sha256, width, height, mode, "
                "n_frames, status, reason, duplicate_of, added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    examined.path,
                    examined.size_bytes,
                    examined.mtime,
                    examined.sha256,
                    examined.width,
                    examined.height,
                    examined.mode,
                    examined.n_frames,
                    status,
                    examined.reason,
                    duplicate_of,
                    now,
                ),
            )
            if cursor.rowcount:  # 0 when a concurrent ingest inserted the path first
                outcomes.append((status, examined.reason))
    return outcomes


def _classify(db: sqlite_utils.Database, examined: Examined) -> tuple[str, int | None]:
    if examined.reason is not None:
        return "rejected", None
    row = db.execute("SELECT id FROM items WHERE sha256 = ? AND status = 'ok'", (examined.sha256,)).fetchone()
    return ("duplicate", row[0]) if row else ("ok", None)
