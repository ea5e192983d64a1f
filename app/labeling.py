"""What the label page shows and commits: worklists, and the labeling view's events.

The browser view (app/labeler.py, assets/labeler.js) holds the cursor and
the undo stack of its tab; every label it sends is committed through
`storage` here before the view shows it as saved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

import storage
from engine.names import STRATEGY_INFO

KEYS = "1234567890"  # class position -> keyboard key (first ten classes); assets/labeler.js maps them


@dataclass(frozen=True)
class Entry:
    """One image in a worklist, with its current state."""

    item_id: int
    path: str
    score: float | None
    is_validation: bool
    label: str | None  # current class name, None when unlabeled or skipped
    skipped: bool
    guess: str | None = None  # the selector's predicted class, when it made one
    confidence: float | None = None
    strategy: str | None = None  # the strategy of the round that queued it

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


def _entries(
    project: storage.Project,
    scored: list[tuple[int, float | None]],
    validation: bool,
    guesses: dict[int, tuple[str, float | None]] | None = None,
) -> list[Entry]:
    labels = storage.current_labels(project)
    skipped = set(storage.skipped_ids(project))
    root = str(project.root)
    guesses = guesses or {}
    return [
        Entry(
            item_id,
            item_path(root, item_id),
            score,
            validation,
            labels.get(item_id),
            item_id in skipped,
            *guesses.get(item_id, (None, None)),
        )
        for item_id, score in scored
    ]


def batch_entries(project: storage.Project, round_id: int) -> list[Entry]:
    """Every item of the round in rank order (most informative first), with the selector's guesses."""
    return _entries(
        project,
        storage.round_items(project, round_id),
        validation=False,
        guesses=storage.round_guesses(project, round_id),
    )


def open_batch_entries(project: storage.Project) -> list[Entry]:
    """The batches still being labeled, oldest first: with a round made early, the batch the user
    is finishing and the next one after it, so the next image is there the moment it is needed."""
    return [
        dataclasses.replace(entry, strategy=made.strategy)
        for made in storage.open_rounds(project)
        for entry in batch_entries(project, made.id)
    ]


def validation_entries(project: storage.Project) -> list[Entry]:
    """Every item reserved for validation, in its seeded random labeling order."""
    return _entries(project, [(i, None) for i in storage.validation_order(project)], validation=True)


def why_chosen(strategy: str, score: float | None) -> str:
    """A short caption saying why the selector picked an item."""
    if strategy == "random":
        return "random pick"
    if score is None:
        return "first pick" if strategy == "kcenter" else strategy
    info = STRATEGY_INFO.get(strategy)
    return info.caption(score) if info is not None else f"score {score:.2f}"


# ---------------------------------------------------------------- events from the labeling view

ACTIONS = ("label", "skip", "undo")


VIEW_SOURCES = ("typed", "accepted", "bulk")  # how the labeling view may say a label was given (not oracle, imported)


def apply_events(project: storage.Project, outbox: dict | None, acks: dict) -> int:
    """Commit the labeling view's events not committed yet, in order; returns how many.

    `outbox` is the view's state: {"client": id, "events": [{seq, action, items, value, how,
    annotator}]}, every event it has not seen acknowledged. `acks[client]` remembers the last
    committed seq and the events refused (with why), so an event sent again is never committed
    twice. Each event names the items that were on screen when it was given: a label always
    lands on the image the person saw, whatever happened in other tabs meanwhile. When the machine
    refuses the write (storage.UnavailableError: disk full, read-only folder) the event and those
    after it stay unacknowledged, so the view keeps them and they are committed on a later call.
    """
    if not outbox or not outbox.get("client"):
        return 0
    ack = acks.setdefault(str(outbox["client"]), {"seq": 0, "errors": []})
    committed = 0
    for event in sorted(outbox.get("events") or [], key=lambda e: int(e.get("seq", 0))):
        seq = int(event.get("seq", 0))
        if seq <= ack["seq"]:
            continue
        try:
            _apply(project, event)
            committed += 1
        except storage.UnavailableError:
            raise
        except (storage.StorageError, ValueError, TypeError, KeyError) as exc:
            ack["errors"] = (ack["errors"] + [{"seq": seq, "message": str(exc)}])[-5:]
        ack["seq"] = seq
    return committed


def _apply(project: storage.Project, event: dict) -> None:
    action, items = event["action"], [int(i) for i in event["items"]]
    annotator = str(event.get("annotator") or "").strip()
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if not annotator:
        raise ValueError("no annotator name: type your name first")
    if action == "undo":
        for item_id in items:
            storage.undo_label(project, item_id, annotator=annotator)
        return
    value = storage.SKIP if action == "skip" else str(event["value"])
    how = event.get("how") if event.get("how") in VIEW_SOURCES else None
    storage.set_labels(project, items, value, annotator=annotator, source=how)


def suspect_caption(item: storage.CoresetItem) -> str:
    """Why a core-set run flagged an item as possibly mislabeled, in a tile's caption."""
    parts = [f"labeled {item.label}"]
    if item.alternative is not None:
        parts.append(f"proxy suggests {item.alternative}")
    if item.never_learned:
        parts.append("never learned")
    elif item.forgetting:
        parts.append(f"forgotten {item.forgetting:.0f}×")
    if item.right_share is not None:
        parts.append(f"right {item.right_share:.0%} of the time")
    return " · ".join(parts)
