"""What the label page shows and does: worklists, the cursor, and label actions.

Every action commits through `storage` before the page shows it as saved;
the session keeps only the cursor and the undo stack of this tab.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

import storage

KEYS = "1234567890"          # class position -> keyboard key (first ten classes); assets/keys.js maps them


@dataclass(frozen=True)
class Entry:
    """One image in a worklist, with its current state."""

    item_id: int
    path: str
    score: float | None
    is_validation: bool
    label: str | None          # current class name, None when unlabeled or skipped
    skipped: bool

    @property
    def done(self) -> bool:
        return self.label is not None or self.skipped


def class_key(position: int) -> str | None:
    """Keyboard key of the class at `position` (0-based): 1..9, then 0, then none."""
    return KEYS[position] if 0 <= position < len(KEYS) else None


@st.cache_data(max_entries=20_000, show_spinner=False)
def item_path(project_root: str, item_id: int) -> str:
    """Relative path of an item; items never change once ingested, so this is cached."""
    return storage.get_item(storage.Project(Path(project_root)), item_id).path


def _entries(project: storage.Project, scored: list[tuple[int, float | None]], validation: bool) -> list[Entry]:
    labels = storage.current_labels(project)
    skipped = set(storage.skipped_ids(project))
    root = str(project.root)
    return [Entry(item_id, item_path(root, item_id), score, validation, labels.get(item_id), item_id in skipped)
            for item_id, score in scored]


def batch_entries(project: storage.Project, round_id: int) -> list[Entry]:
    """Every item of the round in rank order (most informative first)."""
    return _entries(project, storage.round_items(project, round_id), validation=False)


def validation_entries(project: storage.Project) -> list[Entry]:
    """Every item reserved for validation, in its seeded random labeling order."""
    return _entries(project, [(i, None) for i in storage.validation_order(project)], validation=True)


def why_chosen(strategy: str, score: float | None) -> str:
    """A short caption saying why the selector picked an item."""
    if strategy == "random":
        return "random pick"
    if score is None:
        return "first pick" if strategy == "kcenter" else strategy
    captions = {
        "least_confidence": lambda s: f"proxy {1 - s:.0%} sure",
        "margin": lambda s: f"margin {1 - s:.2f}",
        "entropy": lambda s: f"entropy {s:.2f}",
        "kcenter": lambda s: f"distance {s:.2f}",
    }
    return captions.get(strategy, lambda s: f"score {s:.2f}")(score)


# ---------------------------------------------------------------- cursor

def cursor_key(project: storage.Project, source: str) -> str:
    return f"{project.root}|{source}"


def focused(entries: list[Entry], project: storage.Project, source: str) -> int:
    """Index of the focused entry: the cursor's, unless another tab has labeled it meanwhile
    (then the next open one); the first open entry when there is no cursor."""
    item_id, pinned = st.session_state["cursor"].get(cursor_key(project, source), (None, False))
    ids = [e.item_id for e in entries]
    if item_id not in ids:
        return next_open(entries, -1)
    index = ids.index(item_id)
    return index if pinned or not entries[index].done else next_open(entries, index)


def next_open(entries: list[Entry], after: int) -> int:
    """Index of the next entry not yet done after `after`, wrapping; `after` itself if none."""
    n = len(entries)
    for step in range(1, n + 1):
        i = (after + step) % n
        if not entries[i].done:
            return i
    return max(after, 0)


def set_cursor(project: storage.Project, source: str, item_id: int, *, pinned: bool = False) -> None:
    """Focus `item_id`; pinned (arrows, undo) keeps it focused even once it is labeled."""
    st.session_state["cursor"][cursor_key(project, source)] = (item_id, pinned)


def keep_cursor(project: storage.Project, source: str, item_id: int) -> None:
    """Store the item the page shows, so keys act on it; a pin on the same item is kept."""
    stored = st.session_state["cursor"].get(cursor_key(project, source))
    if not stored or stored[0] != item_id:
        set_cursor(project, source, item_id)


def worklist(project: storage.Project, source: str) -> list[Entry]:
    """The entries of `source` ("Batch": the current round; "Validation") as stored now."""
    if source == "Validation":
        return validation_entries(project)
    current = storage.current_round(project)
    return batch_entries(project, current.id) if current else []


# Key callbacks act on the session's cursor, never on ids captured when the buttons were
# drawn: a key pressed while a rerun is still drawing would otherwise hit the previous image.

def _at_cursor(project: storage.Project, source: str) -> tuple[list[Entry], int]:
    entries = worklist(project, source)
    return entries, focused(entries, project, source) if entries else -1


def move(project_root: str, source: str, step: int) -> None:
    """Arrow keys: focus the previous or next image (wrapping)."""
    project = storage.Project(Path(project_root))
    entries, index = _at_cursor(project, source)
    if entries:
        set_cursor(project, source, entries[(index + step) % len(entries)].item_id, pinned=True)


def give(project_root: str, source: str, value: str | object) -> None:
    """Commit a label (class name) or storage.SKIP for the focused image, then focus the next open one."""
    project = storage.Project(Path(project_root))
    entries, index = _at_cursor(project, source)
    if not entries:
        return
    item_id = entries[index].item_id
    storage.set_label(project, item_id, value)
    st.session_state["undo_stack"].append(item_id)
    shown = "skipped" if value is storage.SKIP else str(value)
    st.session_state["last_saved"] = f"Saved: {item_path(project_root, item_id)} → {shown} ✓"
    entries = worklist(project, source)
    set_cursor(project, source, entries[next_open(entries, index)].item_id)


def undo(project_root: str, source: str) -> None:
    """Undo this tab's latest label (or the focused image's) and focus that image."""
    project = storage.Project(Path(project_root))
    stack = st.session_state["undo_stack"]
    if stack:
        item_id = stack.pop()
    else:
        entries, index = _at_cursor(project, source)
        if not entries:
            return
        item_id = entries[index].item_id
    storage.undo_label(project, item_id)
    st.session_state["last_saved"] = f"Undone: {item_path(project_root, item_id)}"
    set_cursor(project, source, item_id, pinned=True)


def choose_in_grid(project_root: str, item_id: int, widget_key: str, classes: list[str]) -> None:
    """A tile's class choice changed: commit it (None clears, -1 skips)."""
    project = storage.Project(Path(project_root))
    choice = st.session_state.get(widget_key)
    if choice is None:
        storage.clear_label(project, item_id)
        shown = "cleared"
    else:
        value = storage.SKIP if choice < 0 else classes[choice]
        storage.set_label(project, item_id, value)
        shown = "skipped" if choice < 0 else classes[choice]
    st.session_state["undo_stack"].append(item_id)
    st.session_state["last_saved"] = f"Saved: {item_path(project_root, item_id)} → {shown} ✓"
