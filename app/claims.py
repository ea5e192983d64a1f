"""Keep annotators who label the same batch at once apart.

Each annotator holds the next few open images of the worklist from where they are (`HOLD`, from the
image after the last one they labeled). Every render of their labeling view renews the hold, and it
lapses `TTL_S` seconds after their last render: a closed tab frees its images within two minutes. The
labeling view (assets/labeler.js) moves on to the next image nobody else holds, and says on screen when
an image is held by someone else; it still goes there when nothing else is open, so one person can
always finish a batch whoever left it. Nothing is refused: an image reached by hand can be labeled.

An annotator is the signed-in user or, without accounts, the name this session last labeled under:
one name's tabs share one hold. A session that has not labeled yet holds images as itself, so two
people who open a batch at the same moment start on different images. The holds live in the server
process (they are a minute's state, not data), so two servers on one project do not see each other's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

HOLD = 10  # images held ahead: more than one person labels between two renders of their view
TTL_S = 120.0


@dataclass
class _Hold:
    holder: str  # who holds it: an annotator's name casefolded, or a session not named yet
    name: str  # what other annotators are told
    at: float


class Holds:
    """The images each annotator holds, per project, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, dict[int, _Hold]] = {}

    def hold(
        self,
        project_root: str,
        holder: str,
        name: str,
        order: Sequence[int],
        open_ids: set[int],
        after: int | None = None,
        *,
        release: str | None = None,
        count: int = HOLD,
        ttl_s: float = TTL_S,
        now: float | None = None,
    ) -> dict[int, str]:
        """Give `holder` the first `count` items of `order` that are open and held by nobody else, counting
        from the item after `after` (from the start when `after` is None or not in `order`) and wrapping
        around; release its other holds in the project, and those of `release` (the provisional holder a
        session was before it had a name). Returns the items of `order` that others hold, with their names."""
        now = time.time() if now is None else now
        with self._lock:
            held = self._held.setdefault(project_root, {})
            for item_id in [i for i, h in held.items() if h.at < now - ttl_s or h.holder in (holder, release)]:
                del held[item_id]
            start = order.index(after) + 1 if after is not None and after in order else 0
            mine = 0
            for item_id in [*order[start:], *order[:start]]:
                if mine >= count:
                    break
                if item_id in open_ids and item_id not in held:
                    held[item_id] = _Hold(holder, name, now)
                    mine += 1
            return {i: held[i].name for i in order if i in held and held[i].holder != holder}

    def holders(self, project_root: str, ttl_s: float = TTL_S, now: float | None = None) -> dict[str, int]:
        """Who holds images of the project now (the names others are told), with how many."""
        now = time.time() if now is None else now
        with self._lock:
            live = [h.name for h in self._held.get(project_root, {}).values() if h.at >= now - ttl_s]
        return {name: live.count(name) for name in sorted(set(live))}


def annotator_key(name: str) -> str:
    """The holder an annotator's name stands for: one person's tabs share a hold."""
    return "name:" + name.strip().casefold()


HOLDS = Holds()
