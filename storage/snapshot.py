"""What a selection round reads, as one consistent snapshot (`read_round_inputs`).

A round decides from the settings, the usable items, the labels, the queue
and the budget together; read one by one, a label saved between two reads
could be counted in one and missed in the other. One read transaction sees
them all at a single commit.
"""

from __future__ import annotations

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
        return [item.id for item in self.items]

    @property
    def candidates(self) -> list[int]:
        """Usable items a round may still queue, ascending."""
        return [item.id for item in self.items if item.id not in self.taken]

    @property
    def next_index(self) -> int:
        return 0 if self.latest is None else self.latest.index + 1


_TAKEN = (
    "SELECT i.id FROM items i LEFT JOIN item_states s ON s.item_id = i.id WHERE i.status = 'ok' "
    "AND (i.is_validation = 1 OR s.state IS NOT NULL OR i.id IN (SELECT item_id FROM queue))"
)


def read_round_inputs(project: Project) -> RoundInputs:
    """The project's `RoundInputs`, read in one transaction."""
    with opened(project) as db, read_transaction(db):
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
        return RoundInputs(
            settings=read_settings(db),
            items=items,
            latest=latest,
            open_in_latest=open_items,
            budget_left=_budget_left(db),
            training=training,
            validation=validation,
            taken=frozenset(i for (i,) in db.execute(_TAKEN)),
            label_watermark=db.execute("SELECT COALESCE(MAX(id), 0) FROM labels").fetchone()[0],
        )
