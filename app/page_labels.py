"""Labels page: every labeled, skipped and validation item, filtered, and relabeled in place.

The same browser view as the Label page (app/labeler.py), in grid mode:
select tiles and press a class key; each change appends to the item's
history, which storage keeps.
"""

from __future__ import annotations

import streamlit as st

import storage
from app import labeler, project_forms, widgets
from app.labeling import Entry, item_path, suspect_caption

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


def filters(rows: list[storage.LabeledItem], classes: list[str]) -> dict:
    kinds, names, rounds, people, odd, doubt = st.columns([2, 3, 2, 2, 2, 2], vertical_alignment="bottom")
    annotators = sorted({r.annotator for r in rows if r.annotator})
    round_list = sorted({r.round_index for r in rows if r.round_index is not None})
    return {
        "kinds": kinds.multiselect("Show", KINDS, default=list(KINDS), key="browse_kinds"),
        "classes": names.multiselect("Class", classes, key=CLASS_FILTER, placeholder="every class"),
        "rounds": rounds.multiselect("Round", round_list, key="browse_rounds", placeholder="every round"),
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


def caption(row: storage.LabeledItem, suspect: storage.CoresetItem | None = None) -> str:
    if suspect is not None:
        return suspect_caption(suspect)
    parts = ["validation" if row.is_validation else f"round {row.round_index}"]
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
    chosen = filters(rows, classes)
    suspects = {s.item_id: s for s in storage.open_suspects(project)} if chosen["suspects"] else {}
    shown = [r for r in rows if matches(r, chosen, suspects)]
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
    captions = {r.item_id: caption(r, suspects.get(r.item_id)) for r in shown}
    labeler.show(project, "Browser", entries, "", classes, captions=captions, mode="grid")


def main() -> None:
    project = project_forms.require_project()
    widgets.apply_style()
    st.title("Labels")
    browser(str(project.root))


if __name__ == "__main__":
    main()
