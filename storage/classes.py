"""The ordered class list: stable ids, renames by position, guarded removal.

Labels reference `classes.id`, so a rename keeps every label. Positions
0..n-1 are the training class indices; a removed class keeps its row with
position NULL so old history rows still resolve.
"""

from __future__ import annotations

import sqlite_utils

from storage.errors import SettingsError


def active_class_names(db: sqlite_utils.Database) -> list[str]:
    """Current class names in position order."""
    rows = db.execute("SELECT name FROM classes WHERE position IS NOT NULL ORDER BY position")
    return [name for (name,) in rows]


def sync_classes(db: sqlite_utils.Database, names: tuple[str, ...]) -> None:
    """Make the active classes exactly `names`, in order, inside the caller's transaction.

    Existing rows are matched by name, then a new name at the position of a
    vanished name takes over that row (a rename); other names get new rows.
    Raises SettingsError if a class to remove is some item's current label.
    """
    rows = db.execute("SELECT id, position, name FROM classes").fetchall()
    by_name = {name: cid for cid, _, name in rows}
    by_position = {pos: (cid, name) for cid, pos, name in rows if pos is not None}
    ids = _match_class_ids(names, by_name, by_position)
    _refuse_retiring_labeled(db, {cid for cid, _ in by_position.values()} - set(ids.values()))
    db.execute("UPDATE classes SET position = NULL")
    for position, name in enumerate(names):
        cid = ids.get(name)
        if cid is None:
            db.execute("INSERT INTO classes (position, name) VALUES (?, ?)", (position, name))
        else:
            db.execute("UPDATE classes SET position = ?, name = ? WHERE id = ?", (position, name, cid))


def _match_class_ids(names, by_name, by_position) -> dict[str, int]:
    ids = {name: by_name[name] for name in names if name in by_name}
    taken = set(ids.values())
    for position, name in enumerate(names):
        if name in ids or position not in by_position:
            continue
        cid, old_name = by_position[position]
        if old_name not in names and cid not in taken:
            ids[name] = cid
            taken.add(cid)
    return ids


def _refuse_retiring_labeled(db: sqlite_utils.Database, retired: set[int]) -> None:
    for cid in retired:
        row = db.execute(
            "SELECT c.name, COUNT(*) FROM current_labels l JOIN classes c ON c.id = l.class_id "
            "WHERE l.class_id = ? AND l.kind = 'label'",
            (cid,),
        ).fetchone()
        if row[1]:
            raise SettingsError(
                f"class {row[0]!r} still labels {row[1]} images; relabel them before removing the class"
            )
