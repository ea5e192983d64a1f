"""Export current labels as CSV, JSONL or an ImageFolder-layout zip.

CSV and JSONL cover every usable item whose current label is a class or a
skip; the zip holds the labeled images. Each is written to a temporary
file in the destination's folder, then renamed into place, so a reader
never sees half a file. Columns / keys: path (relative to the image root),
class (empty / null when skipped), split (train, validation or skipped),
annotator, labeled_at (ISO 8601 UTC), round (round index, empty / null when
the label came from no round), source (how the label was given:
storage.SOURCES; empty for labels made before the schema recorded it).
Given a core-set run (`coreset_run`), CSV and JSONL add `kept` (1 / 0, true /
false; empty / null for an item the run did not train on: validation, skipped,
labeled after it) and the zip's train split holds only the kept items.

In the CSV a cell that a spreadsheet would run as a formula (it starts with
= + - @, a tab or a carriage return) gets a leading `'` (OWASP's advice);
the JSONL keeps every value verbatim, for programs: each record is one line
for any line splitter, because json escapes the control characters and the
three other characters Python's str.splitlines() breaks at (U+0085, U+2028,
U+2029) are written as \\u escapes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import unicodedata
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from storage.classes import active_class_names
from storage.coreset import get_coreset_run, kept_flags
from storage.errors import StorageError, UnavailableError
from storage.files import atomic_write
from storage.items import inside_root
from storage.project import Project, opened, read_settings

COLUMNS = ("path", "class", "split", "annotator", "labeled_at", "round", "source")
SPLITS = ("train", "validation", "skipped")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CLASSES_FILE = "classes.json"
_FORBIDDEN = set('/\\:*?"<>|')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
MAX_NAME_BYTES = 200


def sanitize_class_name(name: str) -> str:
    """A folder name safe on Linux, macOS and Windows that keeps the name readable.

    Separators, control characters and characters Windows forbids become
    '_'; leading/trailing dots and spaces are dropped (so no '.' or '..');
    reserved Windows device names get a '_' prefix; never empty.
    """
    name = unicodedata.normalize("NFC", str(name))
    safe = "".join("_" if ch in _FORBIDDEN or unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in name)
    safe = safe.strip(" .")
    while len(safe.encode("utf-8")) > MAX_NAME_BYTES:
        safe = safe[:-1]
    if not safe:
        return "_"
    if safe.split(".")[0].upper() in _RESERVED:
        return "_" + safe
    return safe


def _label_rows(project: Project, skipped: bool = True, coreset_run: int | None = None) -> tuple[Path, list[dict]]:
    """(image root, rows) of every usable item labeled with an active class, and skipped ones unless told not;
    with a core-set run, each row's `kept` (None for an item the run did not train on)."""
    if coreset_run is not None:
        get_coreset_run(project, coreset_run)  # StorageError for an unknown run, before any file is made
    with opened(project) as db:
        root = Path(read_settings(db).image_root).resolve()
        rows = db.execute(
            "SELECT s.item_id, i.path, s.class_name, s.annotator, s.created_at, r.idx, s.source, "
            "CASE WHEN s.state = 'skip' THEN 'skipped' WHEN i.is_validation = 1 THEN 'validation' ELSE 'train' END "
            "FROM item_states s JOIN items i ON i.id = s.item_id LEFT JOIN rounds r ON r.id = s.round_id "
            "WHERE i.status = 'ok' AND (s.state = 'label' OR (s.state = 'skip' AND ?)) ORDER BY s.item_id",
            (int(skipped),),
        ).fetchall()
        kept = kept_flags(db, coreset_run) if coreset_run is not None else None
    keys = ("item_id", "path", "class", "annotator", "created_at", "round", "source", "split")
    found = [dict(zip(keys, row, strict=True)) for row in rows]
    if kept is not None:
        for row in found:
            row["kept"] = kept.get(row["item_id"]) if row["split"] == "train" else None
    return root, found


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _public(row: dict) -> dict:
    kept = {"kept": row["kept"]} if "kept" in row else {}
    return {
        "path": row["path"],
        "class": row["class"],
        "split": row["split"],
        "annotator": row["annotator"],
        "labeled_at": _iso(row["created_at"]),
        "round": row["round"],
        "source": row["source"],
        **kept,
    }


@contextlib.contextmanager
def _atomic_file(dest: Path, mode: str) -> Iterator[IO]:
    text: dict[str, Any] = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
    try:
        with atomic_write(dest) as tmp, open(tmp, mode, **text) as handle:
            yield handle
    except OSError as exc:
        raise UnavailableError(
            f"cannot write {dest} ({exc.strerror or exc}): free some space or make the "
            "folder writable, then export again; the labels are not affected"
        ) from exc


def export_labels_csv(project: Project, dest: Path, coreset_run: int | None = None) -> Path:
    """Write current labels and skips as UTF-8 CSV with a header row, formula cells neutralized; returns dest.
    With `coreset_run`, a `kept` column (1, 0, or empty for an item the run did not train on)."""
    _, rows = _label_rows(project, coreset_run=coreset_run)
    with _atomic_file(dest, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS + (("kept",) if coreset_run is not None else ()))
        writer.writeheader()
        for row in rows:
            record = _public(row)
            if "kept" in record:
                record["kept"] = "" if record["kept"] is None else int(record["kept"])
            writer.writerow({k: spreadsheet_safe(v) for k, v in record.items()})
    return Path(dest)


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: `'` before a leading = + - @ tab or CR; None as empty."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


# Line breaks to str.splitlines() that json.dumps(ensure_ascii=False) leaves raw (it escapes controls below U+0020).
_LINE_BREAKS = str.maketrans({ch: f"\\u{ord(ch):04x}" for ch in "\u0085\u2028\u2029"})


def _json_line(record: dict) -> str:
    """`record` as one line of JSON (no newline): UTF-8 text kept readable, and no character that any
    line splitter (str.splitlines, JavaScript before ES2019) breaks a line at."""
    return json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKS)


def export_labels_jsonl(project: Project, dest: Path, coreset_run: int | None = None) -> Path:
    """Write current labels and skips as JSON Lines, one object per item, values verbatim; returns dest.
    With `coreset_run`, a `kept` key (true, false, or null for an item the run did not train on)."""
    _, rows = _label_rows(project, coreset_run=coreset_run)
    with _atomic_file(dest, "w") as handle:
        for row in rows:
            handle.write(_json_line(_public(row)) + "\n")
    return Path(dest)


def export_imagefolder_zip(project: Project, dest: Path, coreset_run: int | None = None) -> Path:
    """Write a zip of `<split>/<sanitized class>/<file name>` for every labeled item, split being
    train or validation, plus `classes.json` (each class's index, name and folder, in the project's
    class order: the model's output order); returns dest.

    File names repeated within a folder (ignoring case) get an `<item id>_`
    prefix; colliding sanitized class names get a `-<n>` suffix. Only files
    that resolve inside the image root are read: StorageError otherwise,
    and nothing is written. With `coreset_run`, the train split holds only
    the run's kept items (the validation split stays whole: it is what the
    subset's model is measured on), and `classes.json` names the run.
    """
    root, rows = _label_rows(project, skipped=False, coreset_run=coreset_run)
    if coreset_run is not None:
        rows = [row for row in rows if row["split"] != "train" or row["kept"]]
    with opened(project) as db:
        classes = active_class_names(db)
    folders = _class_folders([*classes, *(row["class"] for row in rows)])
    names = _member_names(rows, folders)
    index = {
        "classes": [{"index": i, "name": name, "folder": folders[name]} for i, name in enumerate(classes)],
        "splits": {split: sum(row["split"] == split for row in rows) for split in SPLITS[:2]},
    }
    if coreset_run is not None:
        run = get_coreset_run(project, coreset_run)
        index["coreset"] = {"run": run.id, "method": run.method, "keep": run.keep, "kept": run.n_kept}
    with _atomic_file(dest, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(CLASSES_FILE, json.dumps(index, indent=1, ensure_ascii=False))
        for row, member in zip(rows, names, strict=True):
            try:
                archive.write(inside_root(root, row["path"]), member)
            except OSError as exc:
                raise StorageError(
                    f"cannot read {row['path']} ({exc.strerror or exc}): the image was moved or "
                    "deleted; restore it, or scan the folder again on the Project page"
                ) from exc
    return Path(dest)


def _class_folders(classes: list[str]) -> dict[str, str]:
    folders: dict[str, str] = {}
    used: set[str] = set()
    for name in dict.fromkeys(classes):
        folder, n = sanitize_class_name(name), 1
        while folder.casefold() in used:
            n += 1
            folder = f"{sanitize_class_name(name)}-{n}"
        used.add(folder.casefold())
        folders[name] = folder
    return folders


def _member_names(rows: list[dict], folders: dict[str, str]) -> list[str]:
    def key(row: dict) -> tuple[str, str, str]:
        return row["split"], folders[row["class"]], _file_name(row["path"]).casefold()

    counts: dict[tuple[str, str, str], int] = {}
    for row in rows:
        counts[key(row)] = counts.get(key(row), 0) + 1
    names = []
    for row in rows:
        file_name = _file_name(row["path"])
        if counts[key(row)] > 1:
            file_name = f"{row['item_id']}_{file_name}"
        names.append(f"{row['split']}/{folders[row['class']]}/{file_name}")
    return names


def _file_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return sanitize_class_name(stem) + dot + ext if dot else sanitize_class_name(name)


def export_summary(project: Project) -> dict[str, int]:
    """Number of labeled items an export would contain, per class name (skipped items not counted)."""
    _, rows = _label_rows(project, skipped=False)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    return counts
