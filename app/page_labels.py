"""Labels page: every labeled, skipped and validation item, filtered, and relabeled in place.

The same browser view as the Label page (app/labeler.py), in grid mode:
select tiles and press a class key; each change appends to the item's
history, which storage keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

import storage
from app import labeler, project_forms, widgets
from app.labeling import Entry, batch_offset, item_path, suspect_caption

KINDS = ("labeled", "skipped", "validation")
CLASS_FILTER = "browse_classes"  # session key the Project page's class editor sets to show one class
SUSPECT_FILTER = "browse_suspects"  # session key: only the latest curation's possibly mislabeled, unreviewed


def kind_of(row: storage.LabeledItem) -> set[str]:
    kinds = {"validation"} if row.is_validation else set()
    if row.skipped:
        kinds.add("skipped")
    elif row.class_name is not None:
        kinds.add("labeled")
    return kinds


def disagrees(row: storage.LabeledItem) -> bool:
    return row.guess is not None and row.class_name is not None and row.guess != row.class_name


def filters(rows: list[storage.LabeledItem], classes: list[str], offset: int) -> dict:
    """The filter widgets, on two rows: what to show, class, batch and annotator (each wide enough for its
    choices: "Show" lists its three at once), then the two toggles. `offset`: labeling.batch_offset."""
    kinds, names, rounds, people = st.columns([4, 3, 2, 2], vertical_alignment="bottom")
    odd, doubt, _ = st.columns([3, 3, 5])
    annotators = sorted({r.annotator for r in rows if r.annotator})
    round_list = sorted({r.round_index for r in rows if r.round_index is not None})
    return {
        "kinds": kinds.pills("Show", KINDS, selection_mode="multi", default=list(KINDS), key="browse_kinds") or [],
        "classes": names.multiselect("Class", classes, key=CLASS_FILTER, placeholder="every class"),
        "rounds": rounds.multiselect(
            "Batch",
            round_list,
            key="browse_rounds",
            placeholder="every batch",
            format_func=lambda index: f"batch {index + offset}",
        ),
        "annotators": people.multiselect("Annotator", annotators, key="browse_people", placeholder="everyone"),
        "disagrees": odd.toggle(
            "Proxy disagrees",
            key="browse_disagrees",
            help="Labeled items whose class differs from the proxy's guess when it asked.",
        ),
        "suspects": doubt.toggle(
            "Possibly mislabeled",
            key=SUSPECT_FILTER,
            help="Labels the last curation (Curate page) flagged: never learned, or forgotten while the proxy "
            "disagreed. Relabel them, or press the key of the class they have to say the label is right; "
            "either way they leave this list.",
        ),
    }


def matches(row: storage.LabeledItem, chosen: dict, suspects: dict[int, storage.CoresetItem]) -> bool:
    return (
        bool(kind_of(row) & set(chosen["kinds"]))
        and (not chosen["classes"] or row.class_name in chosen["classes"])
        and (not chosen["rounds"] or row.round_index in chosen["rounds"])
        and (not chosen["annotators"] or row.annotator in chosen["annotators"])
        and (not chosen["disagrees"] or disagrees(row))
        and (not chosen["suspects"] or row.item_id in suspects)
    )


def caption(row: storage.LabeledItem, suspect: storage.CoresetItem | None = None, offset: int = 1) -> str:
    if suspect is not None:
        return suspect_caption(suspect)
    if row.is_validation:
        parts = ["validation"]
    else:
        parts = [f"batch {row.round_index + offset}" if row.round_index is not None else "imported"]
    if row.annotator:
        parts.append(f"by {row.annotator}")
    if disagrees(row):
        parts.append(f"proxy said {row.guess}")
    return " · ".join(parts)


@st.fragment
def browser(project_root: str) -> None:
    project = storage.open_project(project_root)
    rows = storage.labeled_items(project)
    classes = list(storage.load_settings(project).classes)
    offset = batch_offset(project)
    chosen = filters(rows, classes, offset)
    run = storage.latest_coreset_run(project) if chosen["suspects"] else None
    flagged = storage.suspects(project, run.id) if run is not None else []  # one read: the list and its counts
    suspects = {s.item_id: s for s in flagged if not s.reviewed}
    shown = [r for r in rows if matches(r, chosen, suspects)]
    if chosen["suspects"]:
        review_note(flagged, run is not None)
        order = {item_id: position for position, item_id in enumerate(suspects)}  # least likely label first
        shown.sort(key=lambda r: order[r.item_id])
    st.caption(
        f"{len(shown)} of {len(rows)} items match. Select tiles (click, shift-click, drag) and press a "
        "class key to relabel them; every change is kept in the item's history."
    )
    if not shown:
        return
    entries = [
        Entry(r.item_id, item_path(project_root, r.item_id), None, r.is_validation, r.class_name, r.skipped, r.guess)
        for r in shown
    ]
    captions = {r.item_id: caption(r, suspects.get(r.item_id), offset) for r in shown}
    # the suspects' reasons (the proxy's other class) are written on the tiles; the rest is shown on hover
    labeler.show(
        project, "Browser", entries, "", classes, captions=captions, mode="grid", captions_on_tiles=bool(suspects)
    )
    history(project, shown, offset)


def review_note(flagged: list[storage.CoresetItem], curated: bool) -> None:
    """How far the review of the last curation's suspects (`flagged`) has come, as the Curate page counts it."""
    if not curated:
        st.caption("No curation has run yet: the Curate page flags the labels to review.")
        return
    counts = storage.counted(flagged)
    st.caption(
        f"Possibly mislabeled, least likely label first: {counts.open} to review of the {counts.suspects} "
        f"labels the last curation flagged ({counts.reviewed} reviewed, {counts.changed} changed)."
    )


def history(project: storage.Project, shown: list[storage.LabeledItem], offset: int) -> None:
    """Every label an image was given, oldest first: who gave it, when, how, in which batch, and undos."""
    with st.expander("History of an image"):
        paths = {r.item_id: r.path for r in shown}
        item_id = st.selectbox(
            "Image",
            list(paths),
            index=None,
            format_func=paths.__getitem__,
            key="history_item",
            placeholder="choose or type a file name (of the images shown above)",
        )
        if item_id is None:
            return
        batches = {r.id: r.index + offset for r in storage.list_rounds(project)}
        events = storage.label_history(project, item_id)
        if not events:
            st.caption("No label given yet.")
            return
        st.dataframe(
            pd.DataFrame(
                {
                    "when (UTC)": [
                        datetime.fromtimestamp(e.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S") for e in events
                    ],
                    "what": [event_text(e) for e in events],
                    "annotator": [e.annotator for e in events],
                    "how": [e.source or "" for e in events],
                    "batch": [str(batches[e.round_id]) if e.round_id in batches else "" for e in events],
                }
            ),
            hide_index=True,
        )


def event_text(event: storage.LabelEvent) -> str:
    if event.kind == "skip":
        return "skipped"
    if event.kind == "clear":
        return "cleared"
    return event.class_name if event.class_name is not None else "a class since removed"


def main() -> None:
    project = project_forms.require_project("label", "labels")
    widgets.apply_style()
    st.title("Labels")
    browser(str(project.root))


if __name__ == "__main__":
    main()
