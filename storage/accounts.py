"""Accounts of the people who may use a shared server, and the audit trail of what they did.

Kept in the app's home folder (`PROXY_LABELER_HOME`, default ~/.proxy_labeler), in `accounts.db`,
not inside any one project, with who belongs to which project. While the file holds no user the app
is the local tool it always was (localhost only, no sign-in); the first
`proxy-labeler users add NAME --role admin` turns sign-in on.

Passwords are hashed with Argon2id (argon2-cffi's PasswordHasher, its default parameters); there is
no default password anywhere. Each user has a `session_epoch`: changing the password, the role or
disabling the user bumps it, which ends every session signed with the old value.

Admins may open every project; annotators and viewers only those they are members of. Every change
of a user can carry the `updated_at` its editor saw (`seen`): when another admin changed the user in
between, the change is refused (and audited) rather than silently overwriting theirs.

Connections, transactions and errors follow storage/project.py: a connection per call, writes under
`BEGIN IMMEDIATE`, an environment failure becomes an UnavailableError saying what to do. The audit
table is append-only (triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import sqlite_utils

from storage.errors import StorageError, UnavailableError
from storage.project import BUSY_TIMEOUT_S, _environment_kind, write_transaction

ENV_HOME = "PROXY_LABELER_HOME"
ACCOUNTS_FILE = "accounts.db"
ROLES = ("admin", "annotator", "viewer")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


class AccountError(StorageError, ValueError):
    """A user name, role or password refused, or a user that does not exist; the message says why."""


_V1 = (
    """CREATE TABLE users (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'viewer')),
        enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        session_epoch INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
)
_V2 = (
    # who may open a project besides the admins; `project` is the project folder, resolved
    """CREATE TABLE members (
        project TEXT NOT NULL,
        user TEXT NOT NULL COLLATE NOCASE,
        added_at REAL NOT NULL,
        added_by TEXT NOT NULL,
        PRIMARY KEY (project, user)
    )""",
    "CREATE INDEX members_by_user ON members (user)",
)
_V3 = (
    # sessions signed out before their expiry (by their signature), kept until they would have expired
    "CREATE TABLE signed_out (signature TEXT PRIMARY KEY, until REAL NOT NULL)",
)
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    enabled: bool
    session_epoch: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: str
    address: str


def home_dir() -> Path:
    """The app's home folder: PROXY_LABELER_HOME, else ~/.proxy_labeler."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".proxy_labeler")


def accounts_path(home: Path | None = None) -> Path:
    return (home_dir() if home is None else Path(home)) / ACCOUNTS_FILE


# ---------------------------------------------------------------- validation


def check_name(name: str) -> str:
    """`name` if it is a valid user name, else AccountError saying what a name may hold."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = repr(name)[:40]
        raise AccountError(
            f"user name {shown} is refused: use 1 to 64 letters (a-z, A-Z), digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role {role!r} is unknown; choose one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: give at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters")
    if "\x00" in password:
        raise AccountError("the password holds a NUL character")
    return password


# ---------------------------------------------------------------- hashing


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(check_password(password))


_dummy_hash: str | None = None


def _verify(stored_hash: str | None, password: str) -> bool:
    """Argon2 verification; an unknown user is checked against a dummy hash, so it takes as long."""
    from argon2.exceptions import InvalidHashError, VerificationError

    global _dummy_hash
    if stored_hash is None:
        if _dummy_hash is None:
            _dummy_hash = _hasher().hash("not a password of anyone")
        stored_hash = _dummy_hash
        password = password + "\x01"  # never matches
    try:
        return bool(_hasher().verify(stored_hash, password))
    except (VerificationError, InvalidHashError):
        return False


# ---------------------------------------------------------------- connections


def connect(home: Path | None = None) -> sqlite_utils.Database:
    """A new connection to the accounts file (created with its folder, mode 0700, if missing), migrated."""
    path = accounts_path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not path.exists()
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        if fresh:
            os.chmod(path, 0o600)  # password hashes: readable by the server's account only
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    except (sqlite3.OperationalError, OSError) as exc:
        raise _unavailable(path, exc) from exc
    db = sqlite_utils.Database(conn)
    try:
        _migrate(db)
    except sqlite3.OperationalError as exc:
        db.close()
        raise _unavailable(path, exc) from exc
    return db


def _unavailable(path: Path, exc: BaseException) -> UnavailableError:
    kind = _environment_kind(exc)
    what = {
        "full": "the disk is full",
        "readonly": "the folder or file is read-only for this account",
        "locked": "another process held it too long",
    }.get(kind or "", str(exc))
    return UnavailableError(f"cannot use the accounts file {path}: {what}; nothing saved before is lost")


def _migrate(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    while (version := _version(db)) < len(MIGRATIONS):
        with write_transaction(db):
            if _version(db) == version:
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?, ?)", (version + 1, time.time()))


def _version(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]


@contextlib.contextmanager
def opened(home: Path | None = None) -> Iterator[sqlite_utils.Database]:
    db = connect(home)
    try:
        yield db
    except sqlite3.OperationalError as exc:
        if _environment_kind(exc) is None:
            raise
        raise _unavailable(accounts_path(home), exc) from exc
    finally:
        db.close()


_migrated: set[Path] = set()  # accounts files this process has brought to the current schema


@contextlib.contextmanager
def reading(home: Path | None = None) -> Iterator[sqlite3.Connection]:
    """A read-only connection, for the reads every request and script run makes (the session's user,
    their projects): the schema is brought up to date once per process, not on every read."""
    path = accounts_path(home)
    if path not in _migrated:
        connect(home).close()
        _migrated.add(path)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.OperationalError as exc:
        raise _unavailable(path, exc) from exc
    try:
        yield conn
    except sqlite3.OperationalError as exc:
        if _environment_kind(exc) is None:
            raise
        raise _unavailable(path, exc) from exc
    finally:
        conn.close()


@contextlib.contextmanager
def writing(home: Path | None = None) -> Iterator[sqlite_utils.Database]:
    with opened(home) as db, write_transaction(db):
        yield db


# ---------------------------------------------------------------- reading


def has_accounts(home: Path | None = None) -> bool:
    """True once any user exists: then every request needs a signed-in session. Never creates the file."""
    path = accounts_path(home)
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            row = conn.execute("SELECT 1 FROM users LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        # a file we cannot read must not open the server to everyone: it counts as holding accounts
        return "no such table" not in str(exc)
    return row is not None


def _user(row: tuple) -> User:
    name, role, enabled, epoch, created, updated = row
    return User(name, role, bool(enabled), epoch, created, updated)


_USER_COLUMNS = "name, role, enabled, session_epoch, created_at, updated_at"


def get_user(name: str, home: Path | None = None) -> User | None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return None
    with reading(home) as db:
        row = db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
    return _user(row) if row else None


def session_user(name: str, signature: str, home: Path | None = None) -> tuple[User | None, bool]:
    """The user `name` (None when there is none) and whether the session signed `signature` was signed
    out: what every request asks, in one query."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return None, False
    with reading(home) as db:
        row = db.execute(
            f"SELECT {_USER_COLUMNS}, EXISTS(SELECT 1 FROM signed_out WHERE signature = ?) FROM users WHERE name = ?",
            (signature, name),
        ).fetchone()
    return (_user(row[:-1]), bool(row[-1])) if row else (None, False)


def sign_out(name: str, signature: str, until: float, *, address: str = "", home: Path | None = None) -> None:
    """End one session of `name` (its signature) before it expires at `until`; audited as a sign-out.
    Sessions that would have expired by now are forgotten."""
    now = time.time()
    with writing(home) as db:
        db.execute("DELETE FROM signed_out WHERE until < ?", (now,))
        db.execute("INSERT OR REPLACE INTO signed_out (signature, until) VALUES (?, ?)", (signature, until))
        _audit(db, name, "signout", "", "", address)


def list_users(home: Path | None = None) -> list[User]:
    with reading(home) as db:
        rows = db.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name COLLATE NOCASE").fetchall()
    return [_user(row) for row in rows]


def authenticate(name: str, password: str, home: Path | None = None) -> User | None:
    """The user `name` if `password` is theirs, else None (same work whether the user exists or not).
    The user may be disabled: the caller refuses them, saying so. A hash made with weaker parameters
    than today's is replaced."""
    known = isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None
    row = None
    if known:
        with reading(home) as db:
            row = db.execute(f"SELECT password_hash, {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        password = ""
    ok = _verify(row[0] if row else None, password)
    if not ok or row is None:
        return None
    user = _user(row[1:])
    if user.enabled and _hasher().check_needs_rehash(row[0]):
        with writing(home) as db:
            db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hash_password(password), user.name))
    return user


# ---------------------------------------------------------------- changing


def add_user(name: str, role: str, password: str, *, actor: str, address: str = "", home: Path | None = None) -> User:
    """Create a user; AccountError when the name is taken or anything is invalid."""
    check_name(name)
    check_role(role)
    password_hash = hash_password(password)
    now = time.time()
    with writing(home) as db:
        taken = db.execute("SELECT name FROM users WHERE name = ?", (name,)).fetchone()
        if taken:
            raise AccountError(f"user {taken[0]!r} exists already; choose another name (names ignore case)")
        db.execute(
            "INSERT INTO users (name, password_hash, role, enabled, session_epoch, created_at, updated_at) "
            "VALUES (?, ?, ?, 1, 0, ?, ?)",
            (name, password_hash, role, now, now),
        )
        _audit(db, actor, "user.add", name, f"role={role}", address)
    user = get_user(name, home)
    assert user is not None
    return user


def set_password(
    name: str, password: str, *, actor: str, address: str = "", seen: float | None = None, home: Path | None = None
) -> None:
    """A new password; every session of the user ends."""
    password_hash = hash_password(password)
    with _changing(name, "user.passwd", actor, address, seen, home) as (db, _user_now):
        db.execute(
            "UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1, updated_at = ? WHERE name = ?",
            (password_hash, time.time(), name),
        )
        _audit(db, actor, "user.passwd", name, "", address)


def set_enabled(
    name: str, enabled: bool, *, actor: str, address: str = "", seen: float | None = None, home: Path | None = None
) -> None:
    """Enable or disable a user; disabling ends every session of the user. The last enabled admin
    cannot be disabled (nobody could manage the server any more)."""
    action = "user.enable" if enabled else "user.disable"
    with _changing(name, action, actor, address, seen, home) as (db, user):
        if not enabled and user.enabled and user.role == "admin":
            _keep_an_admin(db, user.name, "disable")
        db.execute(
            "UPDATE users SET enabled = ?, session_epoch = session_epoch + ?, updated_at = ? WHERE name = ?",
            (int(enabled), 0 if enabled else 1, time.time(), name),
        )
        _audit(db, actor, action, user.name, "", address)


def set_role(
    name: str, role: str, *, actor: str, address: str = "", seen: float | None = None, home: Path | None = None
) -> None:
    """Change a user's role; their sessions end (they sign in again with the new rights)."""
    check_role(role)
    with _changing(name, "user.role", actor, address, seen, home) as (db, user):
        if user.role == "admin" and role != "admin" and user.enabled:
            _keep_an_admin(db, user.name, f"make {role}")
        db.execute(
            "UPDATE users SET role = ?, session_epoch = session_epoch + 1, updated_at = ? WHERE name = ?",
            (role, time.time(), name),
        )
        _audit(db, actor, "user.role", user.name, f"{user.role} -> {role}", address)


@contextlib.contextmanager
def _changing(
    name: str, action: str, actor: str, address: str, seen: float | None, home: Path | None
) -> Iterator[tuple[sqlite_utils.Database, User]]:
    """A write transaction on an existing user. With `seen` (the user's `updated_at` as its editor saw
    it), AccountError when someone changed the user since: nothing is changed, the refusal is audited."""
    with writing(home) as db:
        user = _existing(db, name)
        if seen is None or abs(user.updated_at - seen) < 1e-6:
            yield db, user
            return
    audit(
        actor, f"{action}.refused", user.name, "changed by someone else since it was read", address=address, home=home
    )
    raise AccountError(
        f"{user.name} was changed by someone else since you opened this page "
        f"(at {time.strftime('%H:%M:%S', time.localtime(user.updated_at))}); nothing changed: "
        "look at the user again and redo the change if it still holds"
    )


def _existing(db: sqlite_utils.Database, name: str) -> User:
    check_name(name)
    row = db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise AccountError(f"there is no user {name!r}; `proxy-labeler users list` shows them")
    return _user(row)


def _keep_an_admin(db: sqlite_utils.Database, name: str, what: str) -> None:
    others = db.execute(
        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND enabled = 1 AND name != ?", (name,)
    ).fetchone()[0]
    if not others:
        raise AccountError(f"cannot {what} {name!r}: it is the only enabled admin; add another admin first")


# ---------------------------------------------------------------- project members


def project_key(root: Path | str) -> str:
    """How a project is named in the members table: its folder, resolved."""
    return str(Path(root).expanduser().resolve())


def may_open(user: User, root: Path | str, home: Path | None = None) -> bool:
    """Whether `user` may open the project at `root`: admins every project, others their own."""
    if user.role == "admin":
        return True
    return project_key(root) in projects_of(user.name, home)


def projects_of(name: str, home: Path | None = None) -> list[str]:
    """The project folders `name` is a member of (admins open every project besides)."""
    if not accounts_path(home).exists():
        return []
    with reading(home) as db:
        rows = db.execute("SELECT project FROM members WHERE user = ? ORDER BY project", (name,)).fetchall()
    return [row[0] for row in rows]


def members(root: Path | str, home: Path | None = None) -> list[str]:
    """The user names that are members of the project at `root`."""
    if not accounts_path(home).exists():
        return []
    with reading(home) as db:
        rows = db.execute(
            "SELECT user FROM members WHERE project = ? ORDER BY user COLLATE NOCASE", (project_key(root),)
        ).fetchall()
    return [row[0] for row in rows]


def set_member(
    root: Path | str, name: str, member: bool, *, actor: str, address: str = "", home: Path | None = None
) -> bool:
    """Add `name` to the project at `root` (or remove them); False when nothing had to change."""
    key = project_key(root)
    with writing(home) as db:
        user = _existing(db, name)
        if member:
            changed = db.execute(
                "INSERT OR IGNORE INTO members (project, user, added_at, added_by) VALUES (?, ?, ?, ?)",
                (key, user.name, time.time(), actor),
            ).rowcount
        else:
            changed = db.execute("DELETE FROM members WHERE project = ? AND user = ?", (key, user.name)).rowcount
        if changed:
            _audit(db, actor, "member.add" if member else "member.remove", user.name, key, address)
    return bool(changed)


# ---------------------------------------------------------------- audit


def _audit(db: sqlite_utils.Database, actor: str, action: str, target: str, detail: str, address: str) -> None:
    db.execute(
        "INSERT INTO audit (at, actor, action, target, detail, address) VALUES (?, ?, ?, ?, ?, ?)",
        (time.time(), actor, action, target, detail[:500], address),
    )


def audit(
    actor: str, action: str, target: str = "", detail: str = "", *, address: str = "", home: Path | None = None
) -> None:
    """Append one entry to the audit trail (sign-ins, failed sign-ins, exports, settings, user changes)."""
    with writing(home) as db:
        _audit(db, actor, action, target, detail, address)


def audit_entries(home: Path | None = None, limit: int | None = None) -> list[AuditEntry]:
    """The audit trail, newest first."""
    if not accounts_path(home).exists():
        return []
    sql = "SELECT id, at, actor, action, target, detail, address FROM audit ORDER BY id DESC"
    with reading(home) as db:
        rows = db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
    return [AuditEntry(*row) for row in rows]


AUDIT_COLUMNS = ("at", "actor", "action", "target", "detail", "address")


def write_audit_csv(entries: Iterable[AuditEntry], out: TextIO) -> None:
    """The audit trail as CSV, one row per entry with its time in ISO 8601 (UTC), formula cells
    neutralized as in the labels' CSV; the app's download and `proxy-labeler users audit` write it."""
    from storage.export import spreadsheet_safe

    writer = csv.writer(out)
    writer.writerow(AUDIT_COLUMNS)
    for entry in entries:
        at = datetime.datetime.fromtimestamp(entry.at, datetime.UTC).isoformat(timespec="seconds")
        cells = [at, entry.actor, entry.action, entry.target, entry.detail, entry.address]
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
