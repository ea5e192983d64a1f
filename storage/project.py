"""A labeling project: a directory holding `project.db`, its settings and classes.

Every call opens its own connection (`connect`) and closes it: a sqlite3
connection belongs to the thread that opened it, and Streamlit runs scripts
on many threads. Writes run under `BEGIN IMMEDIATE` (`write_transaction`) so
a writer waits on the busy timeout instead of failing with "database is
locked" when it upgrades a read lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import shutil
import sqlite3
import stat
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import sqlite_utils

from storage import schema
from storage.classes import active_class_names, sync_classes
from storage.errors import SettingsError, StorageError, UnavailableError

BUSY_TIMEOUT_S = 30.0
SQLITE_HEADER = b"SQLite format 3\x00"
MIN_CLASSES, MAX_CLASSES = 2, 100
MAX_CLASS_NAME = 100
DEVICES = ("auto", "cpu", "cuda", "mps")
TRAINING_LEVELS = ("fast", "balanced", "thorough")
# round 0's picks; auto = typiclust when the project has a backbone, else random
INITIAL_STRATEGIES = ("auto", "random", "typiclust", "probcover")
MAX_PROCESSES = 1024  # per machine
# what a round chooses among: every free image, or SEALS's nearest neighbours of the labeled ones (docs/seals.md)
CANDIDATES = ("all", "seals")
MAX_SEALS_K = 10_000


@dataclass(frozen=True)
class Settings:
    """Everything a project is configured with; stored in the database."""

    image_root: str  # absolute path of the image folder
    classes: tuple[str, ...]  # 2..100 unique, non-empty names, in order
    budget: int = 500  # labels collected by selection (validation excluded)
    round_size: int = 50
    initial_size: int = 50  # round 0: seeded random batch
    validation_size: int = 0  # seeded random sample reserved for validation
    strategy: str = "least_confidence"
    proxy: str = "auto"  # a registered model, or auto: picked for the device
    target: str = "auto"
    image_size: int = 0  # pixels; 0 = let the engine pick from the data
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    proxy_training: str = "balanced"  # fast | balanced | thorough: steps planned and seconds allowed
    target_training: str = "balanced"
    proxy_steps: int = 0  # a fixed number of optimizer steps; 0 = planned by the training level
    target_steps: int = 0
    auto_next_round: bool = True
    warm_start: bool = False
    backbone: str = "none"  # none | ssl (learned on the pool) | a local weights file or resnet18/34/50
    initial_strategy: str = "auto"  # one of INITIAL_STRATEGIES
    ssl_minutes: float = 10.0  # the self-supervised backbone trains this long (on this machine's device)
    processes: str = "auto"  # training and scoring processes per machine: auto (one per GPU, 1 on a CPU) or N
    candidates: str = "all"  # one of CANDIDATES: all, or seals (the seals_k nearest neighbours of each labeled image)
    seals_k: int = 100  # neighbours per labeled image with candidates = seals (k = 100 in the SEALS paper)


@dataclass(frozen=True)
class Project:
    """A project directory; paths of its parts are properties."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "project.db"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"


# ---------------------------------------------------------------- validation


def normalize_settings(settings: Settings) -> Settings:
    """Strip class names, make `classes` a tuple and `image_root` absolute."""
    classes = tuple(str(name).strip() for name in settings.classes)
    root = str(Path(settings.image_root).expanduser().resolve()) if settings.image_root else ""
    return dataclasses.replace(settings, classes=classes, image_root=root)


def validate_settings(settings: Settings, pool_size: int | None = None) -> None:
    """Raise SettingsError naming the first invalid field; return None if valid.

    pool_size: number of usable images, once ingested; budget plus
    validation size must fit in it.
    """
    settings = normalize_settings(settings)
    _check_image_root(settings.image_root)
    _check_classes(settings.classes)
    _check_numbers(settings)
    _check_names(settings)
    if pool_size is not None and settings.budget + settings.validation_size > pool_size:
        raise SettingsError(
            f"budget ({settings.budget}) plus validation size ({settings.validation_size}) "
            f"is larger than the {pool_size} usable images; lower the budget or the validation size"
        )


def _check_image_root(image_root: str) -> None:
    if not image_root:
        raise SettingsError("image root is empty; choose the folder that holds your images")
    path = Path(image_root)
    info = probe(path, SettingsError)
    if info is None:
        raise SettingsError(f"image root {image_root} does not exist; choose an existing folder")
    if not stat.S_ISDIR(info.st_mode):
        raise SettingsError(f"image root {image_root} is not a folder; choose a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise SettingsError(f"cannot read {image_root}: permission denied; {_READABLE}")


# ---------------------------------------------------------------- probing paths

_READABLE = "make the folder readable by the account running the app"
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # nothing usable there (as Path.exists says)


def probe(path: Path, error: type[StorageError] = StorageError) -> os.stat_result | None:
    """`os.stat(path)` (links followed), or None when nothing is there; `error` (a StorageError
    saying which folder to open up) when this account may not look, where Path.exists() would raise
    a bare PermissionError. Every path storage checks before using goes through here."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        if isinstance(exc, PermissionError):
            raise error(f"cannot read {_closed_folder(Path(path))}: permission denied; {_READABLE}") from exc
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc


def _closed_folder(path: Path) -> Path:
    """The outermost folder above `path` this account may not enter (the one to open up)."""
    for folder in reversed(path.parents):
        if not os.access(folder, os.X_OK):
            return folder
    return path.parent


def _check_classes(classes: tuple[str, ...]) -> None:
    if not MIN_CLASSES <= len(classes) <= MAX_CLASSES:
        raise SettingsError(f"{len(classes)} classes given; give between {MIN_CLASSES} and {MAX_CLASSES}")
    seen: dict[str, str] = {}
    for position, name in enumerate(classes, start=1):
        if not name:
            raise SettingsError(f"class {position} has an empty name; give it a name")
        if len(name) > MAX_CLASS_NAME:
            raise SettingsError(f"class name {name[:20]!r}... is longer than {MAX_CLASS_NAME} characters")
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise SettingsError(f"class name {name!r} contains control characters; remove them")
        key = name.casefold()
        if key in seen:
            raise SettingsError(f"class names {seen[key]!r} and {name!r} are the same; make them unique")
        seen[key] = name


_POSITIVE = ("budget", "round_size", "initial_size")
_NON_NEGATIVE = ("validation_size", "image_size", "seed", "proxy_steps", "target_steps")


def _check_numbers(settings: Settings) -> None:
    for name in _POSITIVE + _NON_NEGATIVE:
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingsError(f"{name} must be a whole number, got {value!r}")
        lowest = 1 if name in _POSITIVE else 0
        if value < lowest:
            raise SettingsError(f"{name} is {value}; it must be at least {lowest}")
    if settings.initial_size > settings.budget:
        raise SettingsError(
            f"initial batch ({settings.initial_size}) is larger than the budget ({settings.budget}); "
            "lower the initial batch or raise the budget"
        )
    if settings.image_size and not 8 <= settings.image_size <= 1024:
        raise SettingsError(f"image size {settings.image_size} must be 0 (automatic) or 8 to 1024 pixels")
    for name in ("auto_next_round", "warm_start"):
        if not isinstance(getattr(settings, name), bool):
            raise SettingsError(f"{name} must be true or false")


def _check_processes(value: str) -> None:
    text = str(value).strip().lower()
    if text != "auto" and not (text.isdigit() and 1 <= int(text) <= MAX_PROCESSES):
        raise SettingsError(f"processes {value!r} must be auto or a whole number from 1 to {MAX_PROCESSES}")


def _check_candidates(candidates: str, seals_k: int) -> None:
    if candidates not in CANDIDATES:
        raise SettingsError(f"candidates {candidates!r} must be one of {', '.join(CANDIDATES)}")
    if isinstance(seals_k, bool) or not isinstance(seals_k, int) or not 1 <= seals_k <= MAX_SEALS_K:
        raise SettingsError(f"seals_k {seals_k!r} must be a whole number of neighbours from 1 to {MAX_SEALS_K}")


def _check_names(settings: Settings) -> None:
    for name in ("strategy", "proxy", "target"):
        value = getattr(settings, name)
        if not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{name} must be a non-empty name")
    if settings.device not in DEVICES:
        raise SettingsError(f"device {settings.device!r} must be one of {', '.join(DEVICES)}")
    _check_processes(settings.processes)
    _check_candidates(settings.candidates, settings.seals_k)
    if not isinstance(settings.backbone, str) or not settings.backbone.strip():
        raise SettingsError("backbone must be none, ssl, or the path of a local weights file")
    if settings.initial_strategy not in INITIAL_STRATEGIES:
        raise SettingsError(
            f"initial strategy {settings.initial_strategy!r} must be one of {', '.join(INITIAL_STRATEGIES)}"
        )
    minutes = settings.ssl_minutes
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0.1 <= minutes <= 24 * 60:
        raise SettingsError(f"ssl_minutes {minutes!r} must be a number of minutes from 0.1 to 1440")
    for name in ("proxy_training", "target_training"):
        if getattr(settings, name) not in TRAINING_LEVELS:
            raise SettingsError(f"{name} {getattr(settings, name)!r} must be one of {', '.join(TRAINING_LEVELS)}")


FITTED = ("budget", "round_size", "initial_size", "validation_size")  # what the create form may leave empty
MAX_FITTED_VALIDATION = 500  # images: about +-3.5 points at 95 % around 80 % accuracy
SMALL_POOL_VALIDATION = 50  # a small pool sets aside up to a fifth of itself to get this many
MAX_FITTED_BUDGET = 500  # a first goal on a large pool; the budget can be raised later on the Project page
BUDGET_SHARE = 0.6  # of the images validation leaves: the last round still chooses among the other 40 %
FITTED_BATCHES = 10  # the budget in about this many batches, the first one included ...
MIN_FITTED_ROUND, MAX_FITTED_ROUND = 5, 50  # ... of this many images each


def fit_to_pool(settings: Settings, pool_size: int, keep: tuple[str, ...] = ()) -> Settings:
    """Settings whose budget, round size, first batch and validation size fit a pool of `pool_size` usable
    images; fields named in `keep` (the ones the user typed) stay as they are, the others fit around them.

    - validation: a tenth of the pool, and up to a fifth of a small one to reach SMALL_POOL_VALIDATION (a
      validation set of 20 moves in 5-point steps), at most MAX_FITTED_VALIDATION, at most half the budget
      (validation never takes over a third of the labeling) and never more than a typed budget leaves;
    - budget: BUDGET_SHARE of the images validation leaves, at most MAX_FITTED_BUDGET, so the last round
      still chooses its batch among many images instead of taking every one left;
    - round size: a FITTED_BATCHES-th of the budget, MIN_FITTED_ROUND to MAX_FITTED_ROUND images (a small
      pool gets about ten rounds), never above the budget; first batch: the round size.

    100 images: validation 20, budget 48, rounds of 5; 245: 49, 117, 12; 2,000: 200, 500, 50; 100,000: 250,
    500, 50 (tests/storage/test_project.py; docs/app.md, "Project page").
    """
    typed = {name: getattr(settings, name) for name in keep if name in FITTED}
    small = min(SMALL_POOL_VALIDATION, math.ceil(pool_size / 5))
    validation = typed.get("validation_size", min(MAX_FITTED_VALIDATION, max(math.ceil(pool_size / 10), small)))
    if "budget" in typed:
        budget = typed["budget"]
        if "validation_size" not in typed:
            validation = max(0, min(validation, budget // 2, pool_size - budget))
    else:
        budget = max(1, min(MAX_FITTED_BUDGET, math.floor(BUDGET_SHARE * (pool_size - validation))))
        if "validation_size" not in typed:
            validation = min(validation, budget // 2)
    round_size = typed.get("round_size", max(MIN_FITTED_ROUND, min(MAX_FITTED_ROUND, round(budget / FITTED_BATCHES))))
    if "round_size" not in typed:
        round_size = max(1, min(round_size, budget))
    initial_size = typed.get("initial_size", max(1, min(round_size, budget)))
    return dataclasses.replace(
        settings, budget=budget, round_size=round_size, initial_size=initial_size, validation_size=validation
    )


# ---------------------------------------------------------------- connections


def connect(project: Project) -> sqlite_utils.Database:
    """Open a new connection: WAL, 30 s busy timeout, foreign keys on, autocommit.

    The caller closes it (`db.close()`); never share it across threads.
    UnavailableError when the machine refuses (folder gone or unreadable).
    """
    try:
        conn = sqlite3.connect(project.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed label survives power loss too, not only a killed process.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.OperationalError as exc:
        raise unavailable(project, exc) from exc
    return sqlite_utils.Database(conn)


@contextlib.contextmanager
def opened(project: Project) -> Iterator[sqlite_utils.Database]:
    """`with opened(project) as db:` a connection closed on exit.

    An environment failure inside (disk full, read-only folder, a lock held
    past the busy timeout) becomes one UnavailableError naming the cause;
    the transaction it interrupted was rolled back, so nothing half-written stays.
    """
    db = connect(project)
    try:
        yield db
    except UnavailableError:
        raise
    except sqlite3.OperationalError as exc:
        if not _environmental(exc):
            raise  # a bug (bad SQL), not the machine: keep the traceback honest
        raise unavailable(project, exc) from exc
    finally:
        db.close()


_ENVIRONMENT = {  # sqlite's error code, message or errno -> what the user can do
    "full": "the disk holding {root} is full; free some space and try again",
    "readonly": "cannot write to {root}: the folder or project.db is read-only, or this account lacks "
    "permission; make it writable and try again",
    "locked": f"the project database is busy: another process held it for more than {BUSY_TIMEOUT_S:.0f} s; try again",
    "open": "cannot open {db}: the folder was moved, deleted or made unreadable",
    "io": "the disk failed reading or writing {db}; check the disk and try again",
}


# SQLite's result codes that mean the disk has no room: SQLITE_FULL, and the unix VFS's
# SQLITE_IOERR_SHMSIZE (the -shm file, the first thing a new WAL database writes, could not grow to
# its 32 KB); the latter arrives as a generic "disk I/O error".
SQLITE_FULL = 13
SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)
_FULL_CODES = (SQLITE_FULL, SQLITE_IOERR_SHMSIZE)


def _environment_kind(exc: BaseException) -> str | None:
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or getattr(exc, "sqlite_errorcode", None) in _FULL_CODES:
        return "full"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "readonly"
    text = str(exc).lower()
    for needle, kind in (
        ("full", "full"),
        ("readonly", "readonly"),
        ("read-only", "readonly"),
        ("locked", "locked"),
        ("busy", "locked"),
        ("unable to open", "open"),
        ("disk i/o", "io"),
    ):
        if needle in text:
            return kind
    return None


def _environmental(exc: BaseException) -> bool:
    return _environment_kind(exc) is not None


def unavailable(project: Project, exc: BaseException) -> UnavailableError:
    """The UnavailableError for an environment failure `exc` on `project` (its message says what to do)."""
    kind = _environment_kind(exc)
    if kind == "open" and os.path.isdir(project.root) and not os.access(project.root, os.W_OK):
        kind = "readonly"  # SQLite cannot create its -wal/-shm files beside the database
    if kind is None:
        return UnavailableError(f"{project.db_path}: {exc}; nothing saved before is lost")
    advice = _ENVIRONMENT[kind].format(root=project.root, db=project.db_path)
    return UnavailableError(f"{advice} (nothing saved before is lost; {type(exc).__name__}: {exc})")


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on any exception)."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


@contextlib.contextmanager
def read_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """`BEGIN` ... `COMMIT`: every read inside sees the database at one commit (WAL snapshot)."""
    db.conn.execute("BEGIN")
    try:
        yield db
    finally:
        if db.conn.in_transaction:
            db.conn.execute("COMMIT")  # nothing was written: this only ends the snapshot


@contextlib.contextmanager
def writing(project: Project) -> Iterator[sqlite_utils.Database]:
    """A fresh connection inside one write transaction, closed on exit."""
    with opened(project) as db, write_transaction(db):
        yield db


# ---------------------------------------------------------------- lifecycle


def create_project(root: str | Path, settings: Settings) -> Project:
    """Create the project directory, its database and settings.

    Validates first; raises StorageError if `root` already holds a project,
    cannot be read or created. On any error nothing is left behind.
    """
    settings = normalize_settings(settings)
    validate_settings(settings)
    project = Project(Path(root).expanduser().resolve())
    if probe(project.db_path) is not None:
        raise StorageError(f"{project.root} already holds a project; open it instead")
    info = probe(project.root)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"{project.root} is a file; choose a folder for the project")
    created: list[Path] = []
    try:
        _make_dirs(project, created)
        with opened(project) as db:
            schema.migrate(db)
            with write_transaction(db):
                _write_settings(db, settings)
                sync_classes(db, settings.classes)
    except BaseException:
        _remove_created(project, created)
        raise
    return project


def _make_dirs(project: Project, created: list[Path]) -> None:
    """Make the project's folders; `created` lists the ones made, for `_remove_created`."""
    for path in (project.root, project.cache_dir, project.models_dir, project.exports_dir):
        if probe(path) is not None:
            continue
        try:
            path.mkdir(parents=True)
        except PermissionError as exc:
            raise StorageError(
                f"cannot create {path}: permission denied; choose a folder this account may write to, "
                "or make it writable"
            ) from exc
        except OSError as exc:
            raise unavailable(project, exc) from exc
        created.append(path)


def _remove_created(project: Project, created: list[Path]) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{project.db_path}{suffix}").unlink(missing_ok=True)
    for path in reversed(created):
        shutil.rmtree(path, ignore_errors=True)


def open_project(root: str | Path) -> Project:
    """Open an existing project, applying any pending migrations.

    Never writes to a file that is not a project database of this app or an
    older version of it, and never crashes on one: a missing, empty,
    foreign, garbage, corrupted (`PRAGMA quick_check`, once per process),
    newer-schema, unreadable or read-only project raises one StorageError
    whose message says what to do, and leaves the files as they were.
    """
    project = Project(Path(root).expanduser().resolve())
    _check_file(project)
    try:
        version = _inspect(project)
        if version < schema.LATEST_VERSION:
            with opened(project) as db:
                schema.migrate(db)
    except StorageError:
        raise
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"{project.db_path} is not a readable project database ({exc}); "
            "restore it from a backup, or create a new project"
        ) from exc
    return project


def _check_file(project: Project) -> None:
    """Refuse what is not a SQLite file we may write, before SQLite sees it (it would write an
    empty file into a database)."""
    info = probe(project.db_path)
    if info is None or not stat.S_ISREG(info.st_mode):
        raise StorageError(f"no project at {project.root} (project.db is missing); create one first")
    try:
        with open(project.db_path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except PermissionError as exc:
        raise StorageError(f"cannot read {project.db_path}: permission denied; {_READABLE}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {project.db_path}: {exc.strerror or exc}") from exc
    if not header:
        raise StorageError(
            f"{project.db_path} is empty (0 bytes), not a project database; "
            "restore it from a backup, or create a new project in another folder"
        )
    if header != SQLITE_HEADER:
        raise StorageError(
            f"{project.db_path} is not a project database (not a SQLite file); "
            "restore it from a backup, or create a new project in another folder"
        )
    for path in (project.root, project.db_path):
        if not os.access(path, os.W_OK):
            raise StorageError(
                f"{path} is read-only: the app saves every label there; "
                "make it writable (or copy the project to a writable folder) and open it again"
            )


_verified: set[Path] = set()
_verified_lock = threading.Lock()


def _inspect(project: Project) -> int:
    """The schema version, read without writing; the first time in this process also `quick_check`."""
    conn = sqlite3.connect(f"{project.db_path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            raise StorageError(
                f"{project.db_path} is a SQLite file but not a project database "
                "(it has no schema version); choose the folder of a project"
            )
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        _check_version(project, version)
        with _verified_lock:
            done = project.db_path in _verified
        if not done:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StorageError(
                    f"{project.db_path} is damaged ({'; '.join(problems[:3])}); "
                    "restore it from a backup (labels can also be read from an export)"
                )
            with _verified_lock:
                _verified.add(project.db_path)
        return version
    except sqlite3.OperationalError as exc:
        if _environment_kind(exc) in ("locked", "full", "readonly"):
            raise unavailable(project, exc) from exc
        raise
    finally:
        conn.close()


def _check_version(project: Project, version: int) -> None:
    if version > schema.LATEST_VERSION:
        raise StorageError(
            f"{project.db_path} has schema version {version}, newer than this app "
            f"({schema.LATEST_VERSION}); update the app"
        )


# ---------------------------------------------------------------- settings


def load_settings(project: Project) -> Settings:
    """Read the project's settings, classes in their current order."""
    with opened(project) as db:
        return read_settings(db)


def read_settings(db: sqlite_utils.Database) -> Settings:
    """Settings read through an open connection (inside the caller's transaction)."""
    stored = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM settings")}
    known = {f.name for f in fields(Settings)} - {"classes"}
    values = {key: value for key, value in stored.items() if key in known}
    return Settings(classes=tuple(active_class_names(db)), **values)


def _write_settings(db: sqlite_utils.Database, settings: Settings) -> None:
    for f in fields(Settings):
        if f.name != "classes":
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (f.name, json.dumps(getattr(settings, f.name))),
            )


def save_settings(project: Project, settings: Settings) -> None:
    """Validate and store new settings in one transaction; on error change nothing.

    Classes keep their ids by name, then by position: a new name at the
    position of a vanished name is a rename and keeps its labels. A class
    can be removed only while no item is currently labeled with it. Once
    images are ingested the image root is fixed and budget plus validation
    size must fit the usable images.
    """
    settings = normalize_settings(settings)
    validate_settings(settings)
    with writing(project) as db:
        _check_against_data(db, settings)
        _write_settings(db, settings)
        sync_classes(db, settings.classes)


def _check_against_data(db: sqlite_utils.Database, settings: Settings) -> None:
    n_items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    if not n_items:
        return
    old = read_settings(db)
    if Path(old.image_root) != Path(settings.image_root):
        raise SettingsError("the image root cannot change after images are ingested; create a new project")
    usable = db.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0]
    validate_settings(settings, pool_size=usable)
    queued = db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    if settings.budget < queued:
        raise SettingsError(f"budget {settings.budget} is below the {queued} images already queued; raise it")
    reserved = db.execute("SELECT COUNT(*) FROM items WHERE is_validation = 1").fetchone()[0]
    if settings.validation_size < reserved:
        raise SettingsError(
            f"{reserved} images are already reserved for validation; the validation size can grow but not shrink"
        )


def class_names(project: Project) -> list[str]:
    """Current class names in order (position 0 first)."""
    with opened(project) as db:
        return active_class_names(db)
