"""Label page: the current batch as a grid or one image at a time from the keyboard."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

import storage
from app import demo, jobs, labeling, state, thumbs, widgets
from app.labeling import Entry

GRID_COLUMNS = 4
GRID_PAGE = 32


# ---------------------------------------------------------------- round panel

def round_panel(project: storage.Project, rs: jobs.RoundState) -> None:
    """What happens between batches: live job progress, a failure with Retry, or a start button."""
    if rs.kind == "none":
        st.info("No batch yet: make the first, random batch (no training needed).")
        st.button("Make the first batch", type="primary", on_click=_initial_round, args=(str(project.root),))
    elif rs.kind == "running":
        st.info(f"Batch {rs.round.index} is done. The proxy is retraining and choosing the next batch; "
                "this continues if you refresh or close the tab.")
        widgets.live_job(str(project.root), rs.job.id)
    elif rs.kind == "failed":
        widgets.job_failed(rs.job, "Retry the round", lambda: jobs.advance(project, force=True))
    elif rs.kind == "waiting":
        st.info(f"Batch {rs.round.index} is done. Automatic rounds are off in the settings.")
        st.button("Start the next round", type="primary", on_click=lambda: jobs.advance(project, force=True))
    elif rs.kind == "spent":
        st.success("The labeling budget is spent. Train the target model next.")
        st.page_link("app/page_target.py", label="Go to the Target page", icon=":material/model_training:")


def _initial_round(project_root: str) -> None:
    from engine.round import RoundError, run_initial_round

    try:
        run_initial_round(storage.open_project(project_root))
    except RoundError as exc:
        st.session_state["round_error"] = str(exc)


# ---------------------------------------------------------------- worklists

def choose_source(project: storage.Project, rs: jobs.RoundState) -> tuple[str, list[Entry]]:
    """The worklist shown: the batch, or the validation set (chosen, or while the batch is done)."""
    has_validation = storage.load_settings(project).validation_size > 0
    if has_validation:
        st.segmented_control("Label", ["Batch", "Validation"], key="source", label_visibility="collapsed")
    source = st.session_state.get("source") or "Batch"
    batch = labeling.batch_entries(project, rs.round.id) if rs.round else []
    if source == "Batch" and has_validation and rs.kind != "labeling":
        validation = labeling.validation_entries(project)
        if any(not e.done for e in validation):
            st.caption("Meanwhile: validation images, labeled the same way.")
            return "Validation", validation
    if source == "Validation" and has_validation:
        return "Validation", labeling.validation_entries(project)
    return "Batch", batch


def area_header(project: storage.Project, source: str, entries: list[Entry]) -> None:
    done = sum(e.done for e in entries)
    widgets.progress_bars(project, done, len(entries), "This batch" if source == "Batch" else "Validation set")
    saved = st.session_state.get("last_saved")
    if saved:
        st.caption(widgets.md(saved))


# ---------------------------------------------------------------- focus mode

def status_line(entry: Entry) -> str:
    tag = " · :blue-badge[validation]" if entry.is_validation else ""
    if entry.label is not None:
        return f":green[✓ saved as **{widgets.md(entry.label)}**]{tag}"
    if entry.skipped:
        return f":orange[skipped]{tag}"
    return f"not labeled yet{tag}"


def focus_view(project: storage.Project, source: str, entries: list[Entry], strategy: str, classes: list[str]) -> None:
    index = labeling.focused(entries, project, source)
    entry = entries[index]
    root = str(project.root)
    labeling.keep_cursor(project, source, entry.item_id)   # the keys act on what is shown
    picture, controls = st.columns([1, 2], gap="medium")
    picture.image(thumbs.thumbnail(root, entry.item_id, thumbs.FOCUS_PX))
    with controls:
        why = "" if entry.is_validation else f" · {labeling.why_chosen(strategy, entry.score)}"
        with st.container(key="focus-info"):
            st.markdown(f"**{widgets.md(entry.path)}** · image {index + 1} of {len(entries)}{why}")
            st.markdown(status_line(entry))
        class_buttons(root, source, entry, classes)
        action_buttons(root, source)


def class_buttons(root: str, source: str, entry: Entry, classes: list[str]) -> None:
    per_row = 4
    for start in range(0, len(classes), per_row):
        cols = st.columns(per_row)
        for offset, name in enumerate(classes[start:start + per_row]):
            position = start + offset
            key = labeling.class_key(position)
            cols[offset].button(
                f"{widgets.md(name)} `{key}`" if key else widgets.md(name), key=f"class-{position}",
                type="primary" if entry.label == name else "secondary", width="stretch",
                on_click=labeling.give, args=(root, source, name),
            )


def action_buttons(root: str, source: str) -> None:
    prev, skip, undo, nxt = st.columns(4)
    prev.button("Previous `←`", key="prev", width="stretch", on_click=labeling.move, args=(root, source, -1))
    skip.button("Skip `S`", key="skip", width="stretch", on_click=labeling.give, args=(root, source, storage.SKIP))
    undo.button("Undo `U`", key="undo", width="stretch", on_click=labeling.undo, args=(root, source),
                help="U or Backspace")
    nxt.button("Next `→`", key="next", width="stretch", on_click=labeling.move, args=(root, source, 1))


# ---------------------------------------------------------------- grid mode

def grid_view(project: storage.Project, entries: list[Entry], strategy: str, classes: list[str]) -> None:
    pages = max(1, -(-len(entries) // GRID_PAGE))
    page = 0
    if pages > 1:
        first_open = next((i for i, e in enumerate(entries) if not e.done), 0)
        page = st.number_input("Page", 1, pages, first_open // GRID_PAGE + 1, key="grid-page") - 1
    shown = entries[page * GRID_PAGE:(page + 1) * GRID_PAGE]
    with st.container(key="grid"):
        for start in range(0, len(shown), GRID_COLUMNS):
            cols = st.columns(GRID_COLUMNS, gap="small")
            for col, entry in zip(cols, shown[start:start + GRID_COLUMNS]):
                with col:
                    tile(project, entry, strategy, classes)


def tile(project: storage.Project, entry: Entry, strategy: str, classes: list[str]) -> None:
    root = str(project.root)
    st.image(thumbs.thumbnail(root, entry.item_id, thumbs.GRID_PX))
    why = "validation" if entry.is_validation else labeling.why_chosen(strategy, entry.score)
    st.caption(f"{widgets.md(entry.path)} · {why}  \n{status_line(entry)}")
    current = -1 if entry.skipped else (classes.index(entry.label) if entry.label in classes else None)
    key = f"tile-{entry.item_id}-{current}"
    st.pills(
        "Class", list(range(len(classes))) + [-1], default=current, key=key, label_visibility="collapsed", wrap=True,
        format_func=lambda i: "skip" if i < 0 else _pill_label(i, classes[i]),
        on_change=labeling.choose_in_grid, args=(root, entry.item_id, key, classes),
    )


def _pill_label(position: int, name: str) -> str:
    key = labeling.class_key(position)
    return f"{key} {widgets.md(name)}" if key else widgets.md(name)


# ---------------------------------------------------------------- page

@st.fragment
def labeling_area(project_root: str, round_kind: str) -> None:
    """Reruns alone on each label (fast); reruns the page when the batch becomes complete."""
    project = storage.Project(Path(project_root))
    rs = jobs.round_state(project)
    if round_kind == "labeling" and rs.kind != "labeling":
        st.rerun(scope="app")
    source, entries = choose_source(project, rs)
    if not entries:
        st.caption("Nothing to label here.")
        return
    settings = storage.load_settings(project)
    strategy = rs.round.strategy if rs.round else settings.strategy
    area_header(project, source, entries)
    oracle_button(project, entries)
    st.segmented_control("View", ["Focus", "Grid"], key="view", label_visibility="collapsed")
    if st.session_state.get("view") == "Grid":
        grid_view(project, entries, strategy, list(settings.classes))
    else:
        widgets.keyboard_script()
        focus_view(project, source, entries, strategy, list(settings.classes))
        st.caption(keyboard_help(len(settings.classes)))


def keyboard_help(n_classes: int) -> str:
    last = labeling.class_key(min(n_classes, 10) - 1)
    return (f"Keys: 1–{last} label · S skip · U or Backspace undo · ← → move. "
            "Each label is saved the moment you give it.")


def oracle_button(project: storage.Project, entries: list[Entry]) -> None:
    """Demo only: let the ground truth answer, to fast-forward through rounds."""
    open_ids = [e.item_id for e in entries if not e.done]
    if open_ids and demo.is_demo(project):
        st.button(f"Demo: let the oracle label the {len(open_ids)} open images", key="oracle",
                  help="Labels from assets/demo/ground_truth.csv, saved with annotator 'oracle'.",
                  on_click=demo.oracle_label, args=(project, open_ids))


def main() -> None:
    project = state.active_project()
    if project is None:
        st.stop()
    widgets.apply_style()
    st.title("Label")
    error = st.session_state.pop("round_error", None)
    if error:
        st.error(widgets.md(error))
    rs = jobs.advance(project)
    round_panel(project, rs)
    labeling_area(str(project.root), rs.kind)


if __name__ == "__main__":
    main()
