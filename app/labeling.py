"""What the label page shows and does: worklists, the cursor, and label actions.

Every action commits through `storage` before the page shows it as saved;
the session keeps only the cursor and the undo stack of this tab.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

import storage

KEYS = "1234567890"          # class position -> keyboard key (first ten classes)
SKIP_KEY, UNDO_KEY, UNDO_KEY2 = "S", "U", "Backspace"
PREV_KEY, NEXT_KEY = "Left", "Right"


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
    """Every item reserved for validation, by id."""
    return _entries(project, [(i, None) for i in storage.validation_ids(project)], validation=True)


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
    """Index of the focused entry: the stored cursor if still listed, else the first open one."""
    wanted = st.session_state["cursor"].get(cursor_key(project, source))
    ids = [e.item_id for e in entries]
    if wanted in ids:
        return ids.index(wanted)
    return next_open(entries, -1)


def next_open(entries: list[Entry], after: int) -> int:
    """Index of the next entry not yet done after `after`, wrapping; `after` itself if none."""
    n = len(entries)
    for step in range(1, n + 1):
        i = (after + step) % n
        if not entries[i].done:
            return i
    return max(after, 0)


def set_cursor(project: storage.Project, source: str, item_id: int) -> None:
    st.session_state["cursor"][cursor_key(project, source)] = item_id


def move(project_root: str, source: str, item_ids: list[int], index: int, step: int) -> None:
    """Arrow keys: focus the previous or next image (wrapping)."""
    project = storage.Project(Path(project_root))
    set_cursor(project, source, item_ids[(index + step) % len(item_ids)])


# ---------------------------------------------------------------- actions

def give(project_root: str, source: str, item_id: int, value: str | object, next_id: int | None) -> None:
    """Commit a label (class name) or storage.SKIP, then move the cursor on."""
    project = storage.Project(Path(project_root))
    storage.set_label(project, item_id, value)
    st.session_state["undo_stack"].append(item_id)
    shown = "skipped" if value is storage.SKIP else str(value)
    st.session_state["last_saved"] = (item_path(project_root, item_id), shown)
    if next_id is not None:
        set_cursor(project, source, next_id)


def undo(project_root: str, source: str, fallback_id: int | None) -> None:
    """Undo this tab's latest label (or the focused item's) and focus that item."""
    project = storage.Project(Path(project_root))
    stack = st.session_state["undo_stack"]
    item_id = stack.pop() if stack else fallback_id
    if item_id is None:
        return
    storage.undo_label(project, item_id)
    st.session_state["last_saved"] = (item_path(project_root, item_id), "undone")
    set_cursor(project, source, item_id)


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
    st.session_state["last_saved"] = (item_path(project_root, item_id), shown)
