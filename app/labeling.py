"""What the label page shows and commits: worklists, and the labeling view's events.

The browser view (app/labeler.py, assets/labeler.js) holds the cursor and
the undo stack of its tab; every label it sends is committed through
`storage` here before the view shows it as saved.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

import storage
from app import state
from engine import names
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


# ---------------------------------------------------------------- validation as you go


def validation_due(validation_size: int, budget: int, queued: int) -> int:
    """How many validation images are due once `queued` images of the budget are queued: the set spread
    evenly over the budget (validation_size / budget per batch image), rounded up, so the batch that
    queues the budget's last image finishes the validation set at the latest."""
    if validation_size <= 0:
        return 0
    if budget <= 0 or queued >= budget:
        return validation_size
    return min(validation_size, math.ceil(validation_size * max(0, queued) / budget))


def interleave(batch: list[Entry], extra: list[Entry]) -> list[Entry]:
    """`extra` spread evenly through `batch`: the j-th of m goes before batch item (j + 1) * n // (m + 1), so
    the batch's last item always comes after every extra one."""
    n, m = len(batch), len(extra)
    if not m:
        return list(batch)
    places = [(j + 1) * n // (m + 1) for j in range(m)]
    out: list[Entry] = []
    j = 0
    for i, entry in enumerate(batch):
        while j < m and places[j] == i:
            out.append(extra[j])
            j += 1
        out.append(entry)
    return out + extra[j:]


def mixed_batch_entries(project: storage.Project) -> list[Entry]:
    """The open batches (`open_batch_entries`) with validation images mixed in until the validation set is
    labeled, so that it keeps pace with the training labels (`validation_due`).

    Validation image k of `storage.validation_order` belongs to the first batch whose end makes more than k
    due. A batch shows its own images and, the oldest open one, those of earlier batches still unlabeled
    (a batch completes by its queued images alone, so validation images passed over there come back);
    each stays in the list, labeled, while the batch is open when it was labeled since the batch began
    (since the batch before it ended, for the earlier ones). A validation image labeled before on its own,
    in the Validation worklist, is not shown again. Validation images are never queued, so they neither
    hold up nor start a round, and their labels are validation labels.
    """
    made = storage.open_rounds(project)
    if not made:
        return []
    batches = [(r, batch_entries(project, r.id)) for r in made]
    settings = storage.load_settings(project)
    order = storage.validation_order(project) if settings.validation_size > 0 else []
    if not order:
        return [dataclasses.replace(e, strategy=r.strategy) for r, entries in batches for e in entries]
    done_at = storage.validation_done_at(project)
    due = functools.partial(validation_due, len(order), settings.budget)
    queued = len(storage.queued_ids(project)) - sum(len(entries) for _, entries in batches)
    backlog_since = made[0].created_at
    earlier = [r for r in storage.list_rounds(project) if r.index == made[0].index - 1]
    if earlier and (times := storage.round_label_times(project, earlier[0].id)):
        backlog_since = max(backlog_since, times[-1])
    out: list[Entry] = []
    for position, (r, entries) in enumerate(batches):
        start, end = due(queued), due(queued + len(entries))
        queued += len(entries)
        own = [i for i in order[start:end] if done_at.get(i, r.created_at) >= r.created_at]
        if position == 0:
            own = [i for i in order[:start] if done_at.get(i, backlog_since) >= backlog_since] + own
        mixed = _entries(project, [(i, None) for i in own], validation=True)
        out += interleave([dataclasses.replace(e, strategy=r.strategy) for e in entries], mixed)
    return out


def batch_offset(project: storage.Project) -> int:
    """What to add to a round index to get the batch number people read: batches count from 1 (round
    indexes stay 0-based in storage), and a round 0 that stands for imported labels is no batch
    (engine.names.batch_offset, the rule the engine's messages use too)."""
    return names.batch_offset(storage.list_rounds(project))


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
    twice, and, after a label or skip, who gave it, its last item and when (app/claims.py reads
    where the annotator is from them). Each event names the items that were on screen when it was
    given: a label always lands on the image the person saw, whatever happened in other tabs
    meanwhile. When the machine
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
            annotator = _apply(project, event)
            committed += 1
            if event["action"] != "undo":
                ack.update(annotator=annotator, last_item=int(event["items"][-1]), at=time.time())
        except storage.UnavailableError:
            raise
        except (storage.StorageError, ValueError, TypeError, KeyError) as exc:
            ack["errors"] = (ack["errors"] + [{"seq": seq, "message": str(exc)}])[-5:]
        ack["seq"] = seq
    return committed


def _apply(project: storage.Project, event: dict) -> str:
    """Commit one event; returns the name it was saved under."""
    action, items = event["action"], [int(i) for i in event["items"]]
    annotator = state.annotator_for(event.get("annotator"))  # the signed-in user's name once accounts exist
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if not annotator:
        raise ValueError("no annotator name: type your name first")
    if action == "undo":
        for item_id in items:
            storage.undo_label(project, item_id, annotator=annotator)
        return annotator
    value = storage.SKIP if action == "skip" else str(event["value"])
    how = event.get("how") if event.get("how") in VIEW_SOURCES else None
    storage.set_labels(project, items, value, annotator=annotator, source=how)
    return annotator


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
