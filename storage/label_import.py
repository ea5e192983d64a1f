"""Labels that come with the images: class subfolders, or a CSV / JSONL file of paths and classes.

A source is read, every row checked against the project, and then either
all its labels are written in one transaction or none is (`import_labels`;
`dry_run=True` checks and writes nothing). The check returns plain data, an
`ImportPlan`, whose `report()` is the text the command line prints and the
Project page shows.

Sources:
- a CSV with a header row, or JSON Lines (one object per line), as the
  export writes them (storage.export): a `path` column / key and a `class`
  one (`label` is accepted too); other columns are ignored, except that a
  row whose `split` is `skipped` is an exported skip and is not imported. A
  path is relative to the image root as the export writes it (POSIX
  separators), or absolute and inside the root. In a CSV, a cell the export
  protected from spreadsheets (a leading `'` before = + - @) is read back
  without the `'`. Annotator: the file's name.
- `SUBFOLDERS`: each usable image's first folder under the image root is
  its class (`root/cat/x.jpg` is a cat); images directly in the root stay
  unlabeled. Annotator: "subfolders".

Rules (all or nothing: any problem and nothing is imported):
- a path must name a usable item: unknown paths, paths outside the root,
  and rejected or duplicate files (ingest keeps one copy of identical
  bytes: label that one) are problems;
- a class must be one of the project's classes, not empty (surrounding
  spaces ignored, as in the settings);
- the same image twice with the same class is a duplicated row, with two
  classes a conflicting one;
- an image a person already labeled in the app keeps that label: the same
  class needs nothing (counted as already labeled), another class is a
  conflict (relabel it on the Labels page or fix the file). A label from an
  earlier import is replaced by the new file's (re-importing a corrected
  file fixes it); a skip is replaced too (a skip means "no label").
Imported labels are ordinary labels: kind 'label', source 'imported', no
round; validation images get them like any other image.
"""

from __future__ import annotations

import codecs
import csv
import enum
import io
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import sqlite_utils

from storage.classes import active_class_names
from storage.export import FORMULA_START
from storage.labels import append_labels
from storage.project import (
    Project,
    StorageError,
    opened,
    read_settings,
    read_transaction,
    write_transaction,
)

IMPORTED: Final = "imported"
SUBFOLDERS_ANNOTATOR: Final = "subfolders"
CSV_SUFFIXES: Final = (".csv",)
JSONL_SUFFIXES: Final = (".jsonl", ".ndjson")
PATH_KEY, LABEL_KEYS, SPLIT_KEY, SKIPPED = "path", ("class", "label"), "split", "skipped"
EXAMPLES = 5  # examples shown per problem kind


class _Subfolders(enum.Enum):
    SUBFOLDERS = "subfolders"

    def __repr__(self) -> str:
        return "SUBFOLDERS"


SUBFOLDERS: Final = _Subfolders.SUBFOLDERS
"""Pass as the source of `import_labels`: each image's first folder under the image root is its class."""


@dataclass(frozen=True)
class LabelFile:
    """A CSV or JSONL file's bytes and its name (the name says the format and becomes the annotator)."""

    name: str
    data: bytes

    @classmethod
    def read(cls, path: Path | str) -> LabelFile:
        """The file at `path`; StorageError, saying what to choose instead, when it cannot be read."""
        path = Path(path)
        try:
            return cls(path.name, path.read_bytes())
        except FileNotFoundError as exc:
            raise StorageError(f"no file {path}: choose the CSV or JSONL file that holds the labels") from exc
        except IsADirectoryError as exc:
            raise StorageError(f"{path} is a folder: choose the CSV or JSONL file that holds the labels") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {path} ({exc.strerror or exc})") from exc


Source = Path | str | LabelFile | _Subfolders


# Problem kinds in report order: (title, what is counted: the source's unit or "image", what to do).
KINDS: Final = {
    "no path": ("No path", None, "give every row the image's path"),
    "unknown path": (
        "Unknown path",
        None,
        "no image of the project has this path; paths are relative to the image folder, as the export "
        "writes them, or absolute inside it (scan the folder again on the Project page if the image is new)",
    ),
    "outside the image folder": ("Outside the image folder", None, "only images inside the image folder are labeled"),
    "not usable": (
        "Not a usable image",
        None,
        "the file was rejected at the scan, or is a copy of another image (identical files are kept once): "
        "label the image named in brackets instead, or leave the row out",
    ),
    "empty class": ("Empty class", None, "give every row a class, or leave the row out"),
    "unknown class": ("Unknown class", None, "add the class on the Project page (Classes), or fix the source"),
    "duplicated row": ("Duplicated rows", "image", "the same image is named more than once: keep one row"),
    "conflicting rows": ("Conflicting rows", "image", "the same image has two classes: keep the right one"),
    "labeled otherwise": (
        "Labeled otherwise in the app",
        "image",
        "a person gave the image another class in the app: relabel or clear it on the Labels page, or fix the source",
    ),
}


@dataclass(frozen=True)
class Problem:
    """One kind of problem (a key of KINDS): how many rows or images, and the first EXAMPLES of them as text."""

    kind: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ImportPlan:
    """What an import does, or would do, as plain data; `report()` says it in words."""

    source: str  # the file's name, or "class subfolders"
    annotator: str  # written with every label: the file's name, or "subfolders"
    unit: str  # what the source lists: "row" (a file) or "image" (subfolders)
    read: int  # rows (images) read
    classes: tuple[str, ...]  # the project's classes, in order
    labels: tuple[tuple[int, str], ...]  # (item id, class name) to write, in the source's order
    per_class: dict[str, int]  # of `labels`, how many per class, in class order (classes with none left out)
    validation: int  # of `labels`, how many are on validation images
    replaced: int  # of `labels`, how many replace another class given by an earlier import
    unskipped: int  # of `labels`, how many are on images skipped in the app
    already_labeled: int  # rows whose image already has that class: nothing to do
    left_out: dict[str, int] = field(default_factory=dict)  # rows read that are not labels: why -> how many
    problems: tuple[Problem, ...] = ()
    unknown_classes: tuple[str, ...] = ()  # the class names not among the classes, first seen first
    imported: bool = False  # True once written

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """The plan in plain text, one fact a line: what is (or would be) imported, or every problem."""
        lines = [f"{self.source}: {_count(self.read, self.unit)} read."]
        if self.problems:
            total = sum(p.count for p in self.problems)
            lines.append(
                f"Nothing was imported: {_count(total, 'problem')} to fix first "
                "(the whole source is imported or nothing)."
            )
            for problem in self.problems:
                title, noun, advice = KINDS[problem.kind]
                if problem.kind == "unknown class":
                    advice += f"; not classes: {_names(self.unknown_classes)}; the classes: {_names(self.classes)}"
                lines.append(f"{title} ({_count(problem.count, noun or self.unit)}): {advice}.")
                lines += [f"  {example}" for example in problem.examples]
                if problem.count > len(problem.examples):
                    lines.append(f"  ... and {problem.count - len(problem.examples):,} more")
            return "\n".join(lines)
        split = ", ".join(f"{name} {n:,}" for name, n in self.per_class.items())
        verb = "Imported" if self.imported else "Would import"
        lines.append(f"{verb} {_count(len(self.labels), 'label')}" + (f": {split}." if split else "."))
        if self.validation:
            lines.append(f"{self.validation:,} of them on validation images (these measure accuracy, never train).")
        if self.replaced:
            lines.append(f"{self.replaced:,} of them replace another class given by an earlier import.")
        if self.unskipped:
            lines.append(f"{self.unskipped:,} of them on images skipped in the app.")
        if self.already_labeled:
            lines.append(f"{_count(self.already_labeled, self.unit)} already labeled so: nothing to do.")
        lines += [f"{_count(n, self.unit)} not imported: {why}." for why, n in self.left_out.items()]
        return "\n".join(lines)


class LabelImportError(StorageError):
    """The source has problems and nothing was imported: the message is the plan's report, `plan` the plan."""

    def __init__(self, plan: ImportPlan):
        super().__init__(plan.report())
        self.plan = plan


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _names(names: tuple[str, ...], most: int = 10) -> str:
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# ---------------------------------------------------------------- the import


def import_labels(project: Project, source: Source, *, dry_run: bool = False) -> ImportPlan:
    """Check every row of `source` against the project, then write all its labels in one transaction.

    `source`: the path of a CSV or JSONL file (or a `LabelFile` of its bytes), or SUBFOLDERS. Returns
    the plan (`imported` True once written). Raises LabelImportError, whose message is the readable
    report, when any row has a problem, and writes nothing; StorageError when the file cannot be read
    as labels (not UTF-8, no path or class column, bad JSON on a line, empty), naming the line.
    `dry_run`: the same checks in a read transaction; nothing is written, whatever the outcome.
    """
    file = None if source is SUBFOLDERS else _label_file(source)
    rows = None if file is None else read_label_file(file)
    transaction = read_transaction if dry_run else write_transaction
    with opened(project) as db, transaction(db):
        plan = _plan(db, file.name if file else None, rows)
        if plan.problems:
            raise LabelImportError(plan)
        if dry_run:
            return plan
        class_ids = dict(db.execute("SELECT name, id FROM classes WHERE position IS NOT NULL").fetchall())
        append_labels(db, ((item_id, class_ids[name]) for item_id, name in plan.labels), plan.annotator, IMPORTED)
    return replace(plan, imported=True)


def subfolder_classes(paths: list[str]) -> list[str]:
    """The classes SUBFOLDERS would read from these image paths (relative, POSIX): each first folder, sorted."""
    return sorted({path.split("/", 1)[0] for path in paths if "/" in path})


def _label_file(source: Path | str | LabelFile) -> LabelFile:
    return source if isinstance(source, LabelFile) else LabelFile.read(source)


# ---------------------------------------------------------------- reading a file


@dataclass(frozen=True)
class Row:
    """One record of a label file: where it is (for messages), its path and class as written
    (None: no class given), and whether it is an exported skip."""

    where: str
    path: str
    label: str | None
    skipped: bool = False


def read_label_file(file: LabelFile) -> list[Row]:
    """The rows of a CSV or JSONL label file; StorageError (naming the line) when it cannot be read as one."""
    suffix = os.path.splitext(file.name)[1].lower()
    if suffix not in CSV_SUFFIXES + JSONL_SUFFIXES:
        raise StorageError(
            f"{file.name}: use a .csv or .jsonl file (the formats the Export page writes), not {suffix or 'no suffix'}"
        )
    text = _text(file)
    rows = list(_csv_rows(file.name, text) if suffix in CSV_SUFFIXES else _jsonl_rows(file.name, text))
    if not rows:
        raise StorageError(f"{file.name} has no rows, only a header: nothing to import")
    return rows


def _text(file: LabelFile) -> str:
    data = file.data.removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        raise StorageError(f"{file.name} is empty: it needs a row per image with its path and class")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise StorageError(
            f"{file.name} is not UTF-8 text: line {line} has the byte 0x{data[exc.start]:02x}; "
            'save it as UTF-8 ("CSV UTF-8" in a spreadsheet) and try again'
        ) from exc


def _csv_rows(name: str, text: str) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next((cells for cells in reader if any(cell.strip() for cell in cells)), None)
        if header is None:
            raise StorageError(f"{name} is empty: it needs a header row, then a row per image with its path and class")
        columns = [cell.strip().casefold() for cell in header]
        path_at = _column(name, columns, (PATH_KEY,), header)
        label_at = _column(name, columns, LABEL_KEYS, header)
        split_at = columns.index(SPLIT_KEY) if SPLIT_KEY in columns else None
        width = len(columns)
        for cells in reader:
            if "".join(cells).strip():
                cells += [""] * (width - len(cells))
                skipped = split_at is not None and cells[split_at].strip() == SKIPPED
                yield Row(f"line {reader.line_num}", cells[path_at], cells[label_at], skipped)
    except csv.Error as exc:
        raise StorageError(
            f'{name} line {reader.line_num} is not valid CSV ({exc}); check the quotes (") on it and the lines above'
        ) from exc


def _column(name: str, columns: list[str], keys: tuple[str, ...], header: list[str]) -> int:
    for key in keys:
        if key in columns:
            return columns.index(key)
    shown = ", ".join(repr(cell) for cell in header) or "nothing"
    wanted = " or ".join(repr(key) for key in keys)
    raise StorageError(
        f"{name} has no {wanted} column: its first row (the header) has {shown}; "
        "the header needs a path and a class column, as the export writes them"
    )


def _jsonl_rows(name: str, text: str) -> Iterator[Row]:
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StorageError(
                f"{name} line {number} is not valid JSON ({exc.msg} at column {exc.colno}); "
                'each line holds one object such as {"path": "cat/1.jpg", "class": "cat"}'
            ) from exc
        if not isinstance(record, dict):
            raise StorageError(f"{name} line {number} is not a JSON object (found {type(record).__name__})")
        where = f"line {number}"
        if PATH_KEY not in record:
            raise StorageError(f'{name} line {number} has no "path"; each object needs a path and a class')
        key = next((k for k in LABEL_KEYS if k in record), None)
        if key is None:
            raise StorageError(f'{name} line {number} has no "class" (or "label"); each object needs one')
        path, label = record[PATH_KEY], record[key]
        if not isinstance(path, str):
            raise StorageError(f"{name} line {number}: the path must be text, not {json.dumps(path)}")
        if label is not None and not isinstance(label, str):
            raise StorageError(f"{name} line {number}: the class must be text or null, not {json.dumps(label)}")
        yield Row(where, path, label, record.get(SPLIT_KEY) == SKIPPED)


# ---------------------------------------------------------------- the check

NO_FOLDER = "directly in the image folder, in no class subfolder (left unlabeled)"
SKIPS = 'skips in the file (split "skipped")'


@dataclass
class _Checked:
    """A source's rows resolved to items, and every problem found."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    named: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # item id -> [(where, class)]
    left_out: dict[str, int] = field(default_factory=dict)
    unknown_classes: dict[str, None] = field(default_factory=dict)

    def problem(self, kind: str, example: str) -> None:
        self.problems.setdefault(kind, []).append(example)

    def leave_out(self, why: str) -> None:
        self.left_out[why] = self.left_out.get(why, 0) + 1


def _plan(db: sqlite_utils.Database, file_name: str | None, rows: list[Row] | None) -> ImportPlan:
    """Check `rows` (None: the class subfolders) against the project, inside the caller's transaction."""
    classes = tuple(active_class_names(db))
    items = {
        path: (item_id, status, reason, original)
        for item_id, path, status, reason, original in db.execute(
            "SELECT i.id, i.path, i.status, i.reason, o.path FROM items i LEFT JOIN items o ON o.id = i.duplicate_of"
        )
    }
    paths = {item_id: path for path, (item_id, *_) in items.items()}
    subfolders = rows is None
    if rows is None:
        rows = _subfolder_rows(items)
    root = read_settings(db).image_root
    known = frozenset(classes)
    checked = _Checked()
    for row in rows:
        if row.skipped:
            checked.leave_out(SKIPS)
        elif subfolders and row.label is None:
            checked.leave_out(NO_FOLDER)
        else:
            item_id = _item_for(checked, items, root, row)
            label = _class_for(checked, known, row, paths[item_id] if item_id is not None else row.path)
            if item_id is not None and label is not None:
                checked.named.setdefault(item_id, []).append((row.where, label))
    labels, counts = _against_the_app(db, checked, paths)
    counted = Counter(label for _, label in labels)
    per_class = {name: counted[name] for name in classes if counted[name]}
    validation = {i for (i,) in db.execute("SELECT id FROM items WHERE is_validation = 1")}
    return ImportPlan(
        source=file_name or "class subfolders",
        annotator=file_name or SUBFOLDERS_ANNOTATOR,
        unit="image" if subfolders else "row",
        read=len(rows),
        classes=classes,
        labels=tuple(labels),
        per_class=per_class,
        validation=sum(item_id in validation for item_id, _ in labels),
        left_out=checked.left_out,
        problems=tuple(
            Problem(kind, len(examples), tuple(examples[:EXAMPLES]))
            for kind in KINDS
            if (examples := checked.problems.get(kind))
        ),
        unknown_classes=tuple(checked.unknown_classes),
        already_labeled=counts["already_labeled"],
        replaced=counts["replaced"],
        unskipped=counts["unskipped"],
    )


def _subfolder_rows(items: dict) -> list[Row]:
    """One row per usable image: its path, and its first folder as the class (None in the root itself)."""
    usable = sorted((found[0], path) for path, found in items.items() if found[1] == "ok")
    rows = [Row(path, path, path.split("/", 1)[0] if "/" in path else None) for _, path in usable]
    if not any(row.label is not None for row in rows):
        raise StorageError(
            "no image lies in a subfolder of the image folder: with class subfolders each class is a folder "
            "(cat/1.jpg, dog/2.jpg); nothing to import"
        )
    return rows


def _item_for(checked: _Checked, items: dict, root: str, row: Row) -> int | None:
    """The usable item `row.path` names, or None after recording why it names none."""
    found = items.get(row.path)  # a path as the export writes it, and as ingest stored it
    if found is not None and found[1] == "ok":
        return found[0]
    if not row.path.strip():
        checked.problem("no path", row.where)
        return None
    shown = _at(row.where, row.path)
    relative = _relative(row.path, root)
    found = found or (None if relative is None else _lookup(items, relative))
    if found is None:
        checked.problem("outside the image folder" if relative is None else "unknown path", shown)
        return None
    item_id, status, reason, original = found
    if status != "ok":
        checked.problem("not usable", f"{shown} ({f'a copy of {original}' if original else reason or status})")
        return None
    return item_id


def _at(where: str, path: str) -> str:
    """A row as the report names it: `line N: path` in a file, the path alone with subfolders."""
    return path if where == path else f"{where}: {path}"


def _relative(raw: str, root: str) -> str | None:
    """`raw` relative to the image root: as given when relative; when absolute, the part under the root
    (as written, or once the file's folder is resolved); None for an absolute path outside the root."""
    if not os.path.isabs(raw):
        return raw
    prefix = root.rstrip(os.sep) + os.sep
    folder, base = os.path.split(raw)
    for candidate in (raw, os.path.join(os.path.realpath(folder), base)):
        if candidate.startswith(prefix):
            return candidate[len(prefix) :]
    return None


def _lookup(items: dict, relative: str) -> tuple | None:
    """The item at `relative`: as written, without the `'` the export puts before a spreadsheet formula
    character, or normalized (./a.jpg, a//b.jpg)."""
    for candidate in (relative, _unprotected(relative), posixpath.normpath(relative.strip())):
        if candidate is not None and candidate in items:
            return items[candidate]
    return None


def _unprotected(value: str) -> str | None:
    """A CSV cell without the `'` the export puts before a leading = + - @ tab or CR; None when it has none."""
    return value[1:] if value[:1] == "'" and value[1:2] and value[1] in FORMULA_START else None


def _class_for(checked: _Checked, classes: frozenset[str], row: Row, path: str) -> str | None:
    """The project class `row` gives (surrounding spaces ignored), or None after recording the problem."""
    if row.label in classes:
        return row.label
    label = (row.label or "").strip()
    if not label:
        checked.problem("empty class", _at(row.where, path))
        return None
    unprotected = (_unprotected(label) or "").strip()
    for candidate in (label, unprotected):
        if candidate and candidate in classes:
            return candidate
    checked.problem("unknown class", f"{_at(row.where, path)}: {label!r}")
    checked.unknown_classes[label] = None
    return None


def _against_the_app(
    db: sqlite_utils.Database, checked: _Checked, paths: dict[int, str]
) -> tuple[list[tuple[int, str]], dict[str, int]]:
    """The labels to write, of the images the source names: each named once with one class, and not
    labeled otherwise by a person (problems recorded); with the counts of what the app already has."""
    states = {
        item_id: (state, name, source, who)
        for item_id, state, name, source, who in db.execute(
            "SELECT item_id, state, class_name, source, annotator FROM item_states"
        )
    }
    labels: list[tuple[int, str]] = []
    counts = {"already_labeled": 0, "replaced": 0, "unskipped": 0}
    for item_id, named in checked.named.items():
        if len(named) > 1:
            _named_twice(checked, paths[item_id], named)
            continue
        [(where, label)] = named
        state, current, source, who = states.get(item_id, (None, None, None, None))
        if state == "label" and current == label:
            counts["already_labeled"] += 1
        elif state == "label" and source != IMPORTED:
            how = f"{source} by {who}" if source else f"by {who}"
            example = f"{_at(where, paths[item_id])}: the source says {label!r}, the app {current!r} ({how})"
            checked.problem("labeled otherwise", example)
        else:
            counts["replaced"] += state == "label"
            counts["unskipped"] += state == "skip"
            labels.append((item_id, label))
    return labels, counts


def _named_twice(checked: _Checked, path: str, named: list[tuple[str, str]]) -> None:
    """Record an image the source names more than once: a duplicated row, or conflicting rows."""
    wheres = " and ".join(where for where, _ in named[:3]) + (" and more" if len(named) > 3 else "")
    distinct = list(dict.fromkeys(label for _, label in named))
    if len(distinct) > 1:
        checked.problem("conflicting rows", f"{wheres}: {path} is {' and '.join(map(repr, distinct))}")
    else:
        checked.problem("duplicated row", f"{wheres}: {path}")
