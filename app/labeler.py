"""The labeling view: a Streamlit custom component (components v2) that runs in the browser.

It holds the worklist, prefetches its images (app/images.py) and handles
keys and clicks locally, so the next image shows at once and a key always
acts on the image on screen. Its events reach `labeling.apply_events`
through the component's "outbox" state; the acknowledgement comes back in
the next render's data. See assets/labeler.js for the browser half.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import streamlit as st

import storage
from app import claims, images, jobs, labeling, state
from app.labeling import Entry

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ACKS = "labeler_acks"  # session key: client id -> {"seq": last committed, "errors": [...]}
TAB = "labeler_tab"  # session key: this session's holder id before it has a name (app/claims.py)
UNSAVED = "labeler_unsaved"  # session key: why the last commit could not be written (disk full...)
NOT_SERVED = (
    "Images cannot be shown: the app was started without its image route. "
    "Start it with `make run` or `streamlit run server.py`."
)

_component = st.components.v2.component(
    "proxy_labeler",
    html="",
    css=(ASSETS / "labeler.css").read_text(),
    js=(ASSETS / "labeler.js").read_text(),
)


def item_payload(
    entry: Entry, strategy: str, caption: str | None = None, held_by: str | None = None, on_tile: bool = False
) -> dict:
    why = "validation" if entry.is_validation else labeling.why_chosen(entry.strategy or strategy, entry.score)
    return {
        "id": entry.item_id,
        "path": entry.path,
        "label": entry.label,
        "skipped": entry.skipped,
        "guess": entry.guess,
        "conf": entry.confidence,
        "why": caption if caption is not None else why,
        "captioned": on_tile and caption is not None,  # the page's caption is written on the grid's tile
        "validation": entry.is_validation,  # marked on screen: measures the models, never trained on
        "heldBy": held_by,  # another annotator's next image (app/claims.py): the view moves past it
    }


TITLES = {"Batch": "This batch", "Validation": "Validation set", "Browser": "Shown"}
HELD_SOURCES = ("Batch", "Validation")  # worklists several annotators work through together


def held_by_others(project_root: str, source: str, entries: list[Entry], signed_in: str | None) -> dict[int, str]:
    """Renew this session's hold on its next open images (app/claims.py) and return the images others
    hold, with their names. The session holds as the signed-in user or the name it last labeled under;
    before its first label, as itself; when it may not label, nothing."""
    if source not in HELD_SOURCES:
        return {}
    order = [e.item_id for e in entries]
    in_order = set(order)
    acks = [a for a in st.session_state.get(ACKS, {}).values() if "at" in a]
    tab = "tab:" + st.session_state.setdefault(TAB, uuid.uuid4().hex)
    name = signed_in or max(acks, key=lambda a: a["at"], default={}).get("annotator")
    holder = claims.annotator_key(name) if name else tab
    here = [a for a in acks if a["last_item"] in in_order]
    after = max(here, key=lambda a: a["at"])["last_item"] if here else None
    open_ids = {e.item_id for e in entries if not e.done} if state.can("label") else set()
    return claims.HOLDS.hold(
        project_root, holder, name or "another annotator", order, open_ids, after, release=tab if name else None
    )


def payload(
    project_root: str,
    source: str,
    entries: list[Entry],
    strategy: str,
    classes: list[str],
    captions: dict[int, str] | None = None,
    mode: str | None = None,
    title: str | None = None,
    captions_on_tiles: bool = False,
) -> dict:
    """Everything the browser view needs, as plain JSON."""
    acks = st.session_state.get(ACKS, {})
    captions = captions or {}
    user = state.session_user()
    held = held_by_others(project_root, source, entries, user.name if user else None)
    return {
        "instance": f"{project_root}|{source}",
        "title": title or TITLES[source],
        "mode": mode,
        "progress": source in ("Batch", "Validation"),  # browsing views (Labels, Curate) count nothing
        "items": [
            item_payload(e, strategy, captions.get(e.item_id), held.get(e.item_id), captions_on_tiles) for e in entries
        ],
        "classes": classes,
        "urls": {size: images.url_template(project_root, size, user) for size in (*images.SIZES, images.FULL)},
        "signedIn": user.name if user else None,  # no name box: labels are saved under the session's user
        "acked": {client: ack["seq"] for client, ack in acks.items()},
        "errors": {client: ack["errors"] for client, ack in acks.items() if ack["errors"]},
        "served": images.served(),
        "notServed": NOT_SERVED,
    }


def commit(project_root: str, key: str) -> None:
    """on_outbox_change, and every render: commit the view's new events, then queue the next round
    if the batch is done. When the machine refuses the write the events stay in the view's outbox
    (shown as saving) and the reason is shown; the next render tries again."""
    outbox = (st.session_state.get(key) or {}).get("outbox")
    project = storage.Project(Path(project_root))
    try:
        committed = labeling.apply_events(project, outbox, st.session_state.setdefault(ACKS, {}))
    except storage.UnavailableError as exc:
        st.session_state[UNSAVED] = str(exc)
        return
    st.session_state.pop(UNSAVED, None)
    if committed:
        jobs.advance(project)


def show(
    project: storage.Project,
    source: str,
    entries: list[Entry],
    strategy: str,
    classes: list[str],
    *,
    captions: dict[int, str] | None = None,
    mode: str | None = None,
    title: str | None = None,
    captions_on_tiles: bool = False,
) -> None:
    """Mount the view on `entries`. `source` names the worklist ("Batch", "Validation", "Browser") and keys
    the view's state; `captions` replace the why-chosen line per item (`captions_on_tiles`: also written on
    the grid's tiles, not only shown on hover); `mode` fixes focus or grid."""
    root = str(project.root)
    key = f"labeler-{source}"
    if st.session_state.get(UNSAVED):
        commit(root, key)  # the write failed last time: try again before drawing
    if st.session_state.get(UNSAVED):
        st.error(
            f"Labels not saved yet: {st.session_state[UNSAVED]}. They are kept in this tab (shown as "
            "saving) and saved as soon as the write succeeds; do not close the tab until they are."
        )
    data = payload(root, source, entries, strategy, classes, captions, mode, title, captions_on_tiles)
    _component(key=key, data=data, default={"outbox": None}, on_outbox_change=functools.partial(commit, root, key))
