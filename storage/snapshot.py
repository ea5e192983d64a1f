"""What a selection round reads, as one consistent snapshot (`read_round_inputs`).

A round decides from the settings, the usable items, the labels, the queue
and the budget together; read one by one, a label saved between two reads
could be counted in one and missed in the other. One read transaction sees
them all at a single commit.

At a million items the read is the items list, once: the items "taken" are
found from the labels and the queue (the validation set from the list), not
by a pass over every item, and the cyclic garbage collector waits while the
list is built (`_no_gc`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator
from dataclasses import dataclass

from storage.items import _ITEM_COLUMNS, Item, _item
from storage.labels import _ACTIVE
from storage.project import Project, Settings, opened, read_settings, read_transaction
from storage.rounds import _OPEN, _QUEUE_SQL, _ROUND_SQL, Round, _budget_left, _round


@dataclass(frozen=True)
class RoundInputs:
    """Everything a round reads from the project, at one commit."""

    settings: Settings
    items: tuple[Item, ...]  # usable items, ascending id
    latest: Round | None  # the newest round, None before round 0
    open_in_latest: int  # items of `latest` neither labeled nor skipped
    budget_left: int
    training: dict[int, int]  # item id -> class position, labeled items outside the validation set
    validation: dict[int, int]  # item id -> class position, labeled validation items
    taken: frozenset[int]  # usable items labeled, skipped, reserved for validation or queued
    label_watermark: int = 0  # the newest label row's id in this snapshot: rows above it came later

    @property
    def item_ids(self) -> list[int]:
        return list(self._item_ids)

    @property
    def candidates(self) -> list[int]:
        """Usable items a round may still queue, ascending."""
        return list(self._candidates)

    # each a pass over every item: made once per snapshot (a round asks for them several times)
    @functools.cached_property
    def _item_ids(self) -> tuple[int, ...]:
        return tuple(item.id for item in self.items)

    @functools.cached_property
    def _candidates(self) -> tuple[int, ...]:
        taken = self.taken
        return tuple(i for i in self._item_ids if i not in taken)

    @property
    def next_index(self) -> int:
        return 0 if self.latest is None else self.latest.index + 1


# Usable items labeled or skipped, and queued: from the labels and the queue, each row's item looked up by id
# (CROSS JOIN keeps that order: the LEFT JOIN from `items` it replaces was a pass over every item).
_STATES_TAKEN = (
    "SELECT s.item_id FROM item_states s CROSS JOIN items i ON i.id = s.item_id "
    "WHERE s.state IS NOT NULL AND i.status = 'ok'"
)
_QUEUE_TAKEN = "SELECT q.item_id FROM queue q CROSS JOIN items i ON i.id = q.item_id WHERE i.status = 'ok'"


def read_round_inputs(project: Project) -> RoundInputs:
    """The project's `RoundInputs`, read in one transaction."""
    with _no_gc(), opened(project) as db, read_transaction(db):
        items = tuple(
            _item(row) for row in db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE status = 'ok' ORDER BY id")
        )
        row = db.execute(_ROUND_SQL + "ORDER BY idx DESC LIMIT 1").fetchone()
        latest = _round(row) if row else None
        open_items = len(db.execute(_QUEUE_SQL + _OPEN, (latest.id,)).fetchall()) if latest else 0
        training: dict[int, int] = {}
        validation: dict[int, int] = {}
        for item_id, position, _, is_validation in db.execute(_ACTIVE + "ORDER BY s.item_id"):
            (validation if is_validation else training)[item_id] = position
        taken = {item.id for item in items if item.is_validation}  # validation items are always usable
        taken.update(i for query in (_STATES_TAKEN, _QUEUE_TAKEN) for (i,) in db.execute(query))
        return RoundInputs(
            settings=read_settings(db),
            items=items,
            latest=latest,
            open_in_latest=open_items,
            budget_left=_budget_left(db),
            training=training,
            validation=validation,
            taken=frozenset(taken),
            label_watermark=db.execute("SELECT COALESCE(MAX(id), 0) FROM labels").fetchone()[0],
        )


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a read builds a tuple per item. Tuples of ints and strings
    make no cycles, and the collector's passes over a growing million of them were half the read: 0.9 s
    without them against 1.85 s with them for 300,000 items on the 2-core CPU (docs/scale.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
