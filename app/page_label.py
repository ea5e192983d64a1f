"""Label page: the current batch (or the validation set) in the browser labeling view (app/labeler.py)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import storage
from app import demo, jobs, labeler, labeling, project_forms, state, widgets
from app.labeling import Entry
from engine.initial import IMPORTED, RoundError, initial_strategy

# ---------------------------------------------------------------- round panel


def round_panel(project: storage.Project, rs: jobs.RoundState) -> None:
    """What happens between batches: live job progress, a failure with Retry, or a start button."""
    if rs.kind == "none":
        st.info(
            "No batch yet: scan the image folder (only new files are read) and make the first batch: at "
            "random (no training needed), or, when the images came with labels in two classes or more, chosen "
            "by a proxy trained on them. A project whose creation was interrupted is finished here."
        )
        if not state.can("manage"):
            st.caption("The first batch is made by an admin; it shows here once it is ready.")
        elif st.button("Scan the images and make the first batch", type="primary", key="finish-setup"):
            state.require("manage", "finish setup")
            project_forms.finish_setup(project)
    elif rs.kind == "first":
        first_batch_panel(project, rs.job)
    elif rs.kind == "failed" and rs.round is None:
        widgets.job_failed(rs.job, "Retry the first batch", lambda: jobs.advance(project, force=True))
        random_instead_button(project, "the first batch's job failed")
    elif rs.kind == "running" and rs.job.state == "queued" and (learning := storage.active_jobs(project, "backbone")):
        done, which = batch_done(project, rs)
        st.info(
            f"{done} The {which} batch is chosen once the representation of your images is learned (progress "
            "below); this continues if you refresh or close the tab."
        )
        widgets.live_job(str(project.root), learning[0].id)
    elif rs.kind == "running":
        done, which = batch_done(project, rs)
        training = "training on them" if which == "first" else "retraining"
        st.info(
            f"{done} The proxy is {training} and choosing the {which} batch; this continues if you refresh or "
            "close the tab."
        )
        widgets.live_job(str(project.root), rs.job.id)
    elif rs.kind == "failed":
        widgets.job_failed(rs.job, "Retry the round", lambda: jobs.advance(project, force=True))
    elif rs.kind == "waiting":
        auto = storage.load_settings(project).auto_next_round
        off = "" if auto else " Automatic rounds are off in the settings."
        st.info(f"{batch_done(project, rs)[0]}{off}")
        st.button("Start the next round", type="primary", on_click=lambda: jobs.advance(project, force=True))
    elif rs.kind == "spent":
        st.success("The labeling budget is spent. Train the target model next.")
        st.page_link("app/page_target.py", label="Go to the Target page", icon=":material/model_training:")
    elif rs.kind == "exhausted":
        st.success(
            "Every usable image is labeled, skipped, queued or in the validation set: there is nothing "
            "left to choose from. Train the target model next, or add images to the folder and scan "
            "it again on the Project page."
        )
        st.page_link("app/page_target.py", label="Go to the Target page", icon=":material/model_training:")


def batch_number(project: storage.Project, rs: jobs.RoundState) -> int | None:
    """The batch just done as people count it (from 1; labeling.batch_offset), or None when the round is the
    imported labels, which are no batch."""
    if rs.round is not None and rs.round.strategy == IMPORTED:
        return None
    return (rs.round.index if rs.round else 0) + labeling.batch_offset(project)


def batch_done(project: storage.Project, rs: jobs.RoundState) -> tuple[str, str]:
    """What was just finished, as a sentence, and which batch comes next ("next", or "first" after the
    imported labels): never a batch 0."""
    number = batch_number(project, rs)
    if number is None:
        return "The imported labels are in.", "first"
    return f"Batch {number} is done.", "next"


def first_batch_panel(project: storage.Project, job: storage.Job) -> None:
    """The first batch is chosen on the backbone's embeddings by the worker, behind the backbone job
    when the representation is still being learned; a random batch now is always one click away."""
    settings = storage.load_settings(project)
    strategy, _ = initial_strategy(settings, storage.item_counts(project)["ok"])
    learning = storage.active_jobs(project, "backbone")
    if learning:
        st.info(
            f"The first batch will be chosen by {strategy} on the representation of your "
            f"images, which is still being learned (about {settings.ssl_minutes:g} minutes; progress on the "
            "Project page). This continues if you refresh or close the tab."
        )
        widgets.live_job(str(project.root), learning[0].id)
    else:
        st.info(
            f"Choosing the first batch by {strategy} on the representation of your images; this continues "
            "if you refresh or close the tab."
        )
        widgets.live_job(str(project.root), job.id)
    random_instead_button(project, "chosen by the user before the representation was ready")


def random_instead_button(project: storage.Project, why: str) -> None:
    if st.button(
        "Label a random first batch instead",
        key="random-first",
        help="A seeded random batch now; the representation keeps learning and later rounds use it.",
    ):
        try:
            jobs.random_first_round(project, why)
        except (RoundError, storage.StorageError) as exc:
            st.warning(widgets.md(exc))
        st.rerun()


# ---------------------------------------------------------------- worklists


def choose_source(project: storage.Project, rs: jobs.RoundState) -> tuple[str, list[Entry]]:
    """The worklist shown: the batch, or the validation set (chosen, or while the batch is done)."""
    has_validation = storage.load_settings(project).validation_size > 0
    if has_validation:
        st.segmented_control("Label", ["Batch", "Validation"], key="source", label_visibility="collapsed")
    source = st.session_state.get("source") or "Batch"
    if rs.kind == "labeling":
        batch = labeling.mixed_batch_entries(project)
    else:
        batch = labeling.batch_entries(project, rs.round.id) if rs.round else []
    if source == "Batch" and has_validation and rs.kind != "labeling":
        validation = labeling.validation_entries(project)
        if any(not e.done for e in validation):
            st.caption("Meanwhile: validation images, labeled the same way.")
            return "Validation", validation
    if source == "Validation" and has_validation:
        return "Validation", labeling.validation_entries(project)
    return "Batch", batch


# ---------------------------------------------------------------- page


@st.fragment
def labeling_area(project_root: str, round_kind: str) -> None:
    """Reruns alone on each label event (fast); reruns the page when the batch becomes complete."""
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
    budget_bar(project, settings)
    if rs.kind == "labeling" and rs.job is not None:
        st.caption("The next batch is being chosen from the labels so far; it joins this list when ready.")
    oracle_button(project, entries)
    title = batch_title(project, entries) if source == "Batch" else None
    if source == "Batch" and any(e.is_validation for e in entries):
        st.caption(validation_pace_caption(settings))
    labeler.show(project, source, entries, strategy, list(settings.classes), title=title)


def batch_title(project: storage.Project, entries: list[Entry]) -> str:
    """ "This batch" (and the next, with a round made early), with how many validation images are mixed in."""
    title = "This batch and the next" if len(storage.open_rounds(project)) > 1 else "This batch"
    mixed = sum(e.is_validation for e in entries)
    return f"{title} (with {mixed} validation image{'s' if mixed != 1 else ''})" if mixed else title


def validation_pace_caption(settings: storage.Settings) -> str:
    per = settings.budget / max(1, settings.validation_size)
    rate = f"about one per {per:.1f} batch images" if per >= 1 else f"about {1 / per:.1f} per batch image"
    return (
        f"Validation images are mixed in, {rate} ({settings.validation_size} over "
        f"the budget of {settings.budget}), so the validation set is labeled by the last batch: they are marked "
        "validation, show no guess and are never trained on."
    )


def budget_bar(project: storage.Project, settings: storage.Settings) -> None:
    labeled = len(storage.training_labels(project))
    used = settings.budget - storage.budget_left(project)
    st.progress(
        min(1.0, labeled / settings.budget),
        text=f"Budget: {labeled} labeled of {settings.budget} ({used} queued so far)",
    )


def oracle_button(project: storage.Project, entries: list[Entry]) -> None:
    """Demo only: let the ground truth answer, to fast-forward through rounds."""
    open_ids = [e.item_id for e in entries if not e.done]
    if open_ids and demo.is_demo(project):
        st.button(
            f"Demo: let the oracle label the {len(open_ids)} open images",
            key="oracle",
            help="Labels from assets/demo/ground_truth.csv, saved with annotator 'oracle'.",
            on_click=oracle_then_advance,
            args=(project, open_ids),
        )


def oracle_then_advance(project: storage.Project, item_ids: list[int]) -> None:
    demo.oracle_label(project, item_ids)
    jobs.advance(project)


def main() -> None:
    project = project_forms.require_project("label", "label")
    widgets.apply_style()
    st.title("Label")
    error = st.session_state.pop("round_error", None)
    if error:
        st.error(widgets.md(error))
    rs = jobs.round_state(project)
    if rs.kind in ("labeling", "running", "first"):
        # Warm while the user labels, so the round the batch's last label queues does not wait for
        # torch to import; a worker that died is restarted and its job claimed again when stale.
        jobs.start_worker(project)
    round_panel(project, rs)
    labeling_area(str(project.root), rs.kind)


if __name__ == "__main__":
    main()
