"""Project page: the open project, its settings and classes; open or create another project."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

import storage
from app import jobs, labeling, project_forms, state, widgets
from app.project_forms import parse_classes, settings_fields

# ---------------------------------------------------------------- settings


def settings_form(project: storage.Project) -> None:
    settings = storage.load_settings(project)
    with st.form("settings"):
        values = settings_fields(settings, "s-")
        submitted = st.form_submit_button("Save settings", type="primary")
    if submitted:
        from engine.backbone_files import BackboneError, check_backbone_users

        try:
            state.check_backbone(values["backbone"], project.root)
            check_backbone_users(values["backbone"], values["proxy"], values["target"])
            storage.save_settings(project, dataclasses.replace(settings, **values))
        except (storage.SettingsError, BackboneError) as exc:
            st.error(f"Not saved: {widgets.md(exc)}")
        else:
            changed = [
                f"{k}: {getattr(settings, k)!r} -> {v!r}" for k, v in values.items() if getattr(settings, k) != v
            ]
            state.audit_action("settings.save", str(project.root), "; ".join(changed) or "unchanged")
            st.success("Settings saved.")
            project_forms.start_representation(project)


# ---------------------------------------------------------------- classes


def key_legend(classes: list[str]) -> None:
    rows = [{"key": labeling.class_key(i) or "", "class": name} for i, name in enumerate(classes)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width=360)


GO_TO_LABELS = "go_to_labels"


def browse_class(name: str) -> None:
    """Open the Labels page filtered to one class (to relabel its images before removing it)."""
    from app.page_labels import CLASS_FILTER

    st.session_state[CLASS_FILTER] = [name]
    st.session_state[GO_TO_LABELS] = True  # switched in the script run the click starts, not in the callback


def class_editor(project: storage.Project) -> None:
    settings = storage.load_settings(project)
    st.caption(
        "One class per line. Edit a line to rename (labels keep their class), add lines to add "
        "classes, move lines to reorder: the first ten get the keys 1–9 and 0."
    )
    text_col, legend_col = st.columns([3, 2])
    with text_col, st.form("classes"):
        text = st.text_area("Classes", "\n".join(settings.classes), height=260)
        submitted = st.form_submit_button("Save classes", type="primary")
    if submitted:
        try:
            storage.save_settings(project, dataclasses.replace(settings, classes=parse_classes(text)))
        except storage.SettingsError as exc:
            text_col.error(f"Not saved: {widgets.md(exc)}")
            still_used = [name for name in settings.classes if f"class {name!r} still labels" in str(exc)]
            if still_used:
                text_col.button(
                    f"Show the images labeled {still_used[0]}",
                    key="show-class-images",
                    on_click=browse_class,
                    args=(still_used[0],),
                )
        else:
            state.audit_action("classes.save", str(project.root), f"{list(settings.classes)} -> {parse_classes(text)}")
            text_col.success("Classes saved.")
    with legend_col:
        key_legend(storage.class_names(project))


# ---------------------------------------------------------------- import labels


def import_section(project: storage.Project) -> None:
    """Labels the images already carry: Check shows what would be imported, Import imports it all or nothing."""
    st.caption(project_forms.LABELS_HELP)
    choice = st.selectbox("Labels from", project_forms.LABEL_SOURCES[1:], key="import-source")
    path = st.text_input(
        "Label file on the server (CSV or JSONL)",
        placeholder="/data/labels.csv",
        key="import-file",
        disabled=choice != project_forms.LABEL_FILE,
    )
    check, run = st.columns(2)
    dry_run = check.button("Check", key="import-check", help="Show what would be imported; nothing changes.")
    do_import = run.button("Import", key="import-run", type="primary")
    if not (dry_run or do_import):
        return
    try:
        source = project_forms.label_source(choice, path.strip(), project.root)
        plan = storage.import_labels(project, source, dry_run=dry_run)
    except storage.LabelImportError as exc:
        st.error("Nothing was imported: the source has problems (all of them below). Fix them and check again.")
        project_forms.show_import_report(exc.plan.report())
        return
    except storage.StorageError as exc:
        st.error(f"Nothing was imported: {widgets.md(exc)}")
        return
    if dry_run:
        st.info("The check passed: Import imports this.")
        project_forms.show_import_report(plan.report())
        return
    state.audit_action("labels.import", str(project.root), f"{len(plan.labels)} labels from {choice} {path.strip()}")
    st.success(f"Imported {len(plan.labels)} labels.")
    project_forms.show_import_report(plan.report())
    after_import(project)


def after_import(project: storage.Project) -> None:
    """What labels added outside the batch change: a project with no batch yet gets its first one (from a
    proxy trained on the labels when they cover two classes); a batch the labels completed starts the next
    round, as its last label would have."""
    if storage.current_round(project) is None:
        try:
            if not project_forms.first_batch_from_labels(project):
                st.info("The Label page makes the first batch (Scan the images and make the first batch).")
        except storage.StorageError as exc:
            st.warning(widgets.md(exc))
        return
    state = jobs.advance(project)
    if state.kind == "running":
        st.info("The batch is complete: the next one is being chosen from every label (Label page).")


# ---------------------------------------------------------------- overview and ingest


def overview(project: storage.Project) -> None:
    settings = storage.load_settings(project)
    folders = st.columns(2)
    with folders[0]:
        st.caption("Project folder")
        st.code(str(project.root), language=None, wrap_lines=True)
    with folders[1]:
        st.caption("Image folder")
        st.code(settings.image_root, language=None, wrap_lines=True)
    counts = storage.item_counts(project)
    cols = st.columns(3)
    cols[0].metric("Usable images", counts["ok"])
    cols[1].metric("Duplicates", counts["duplicate"], help="Same bytes as another image: stored once.")
    cols[2].metric("Rejected files", counts["rejected"], help="Never shown or trained on.")
    rejected_summary(project)
    representation(project)
    if st.button("Scan the image folder again", key="rescan", help="Adds images that appeared since the last scan."):
        project_forms.run_ingest(project)


def representation(project: storage.Project) -> None:
    """The backbone: none, a local file, or the ssl one with its job's progress and quality readout."""
    settings = storage.load_settings(project)
    st.subheader("Representation")
    if settings.backbone == "none":
        st.caption(
            "No backbone: the proxy learns from pixels. Set Backbone to ssl in the settings to learn a "
            "representation of your images first (nothing is downloaded)."
        )
        return
    if settings.backbone != "ssl":
        st.caption(f"Backbone: the local weights {settings.backbone}.")
        return
    ssl_status(project)


@st.fragment(run_every=2.0)
def ssl_status(project: storage.Project) -> None:
    from engine.backbone_files import ssl_meta

    job = jobs.latest_backbone(project)
    meta = ssl_meta(project.models_dir)
    if job is not None and job.state in ("queued", "running"):
        st.progress(min(1.0, job.progress), text=job.message or "waiting for the worker")
        st.button(
            "Stop (it resumes where it stopped)", key="cancel-backbone", on_click=jobs.cancel, args=(project, job.id)
        )
        return
    if meta is not None:
        knn = meta.get("knn_accuracy")
        cols = st.columns(3)
        cols[0].metric(
            "k-NN accuracy on your labels",
            "label more" if knn is None else f"{knn:.0%}",
            help="Each labeled image classified by its 20 nearest labeled neighbours in the "
            "representation (leave-one-out), when it finished learning.",
        )
        cols[1].metric("Steps", meta.get("steps"))
        cols[2].metric("Minutes", f"{meta.get('seconds', 0) / 60:.1f}")
        st.button(
            "Learn it again",
            key="start-backbone",
            on_click=jobs.start_backbone,
            args=(project,),
            help="From scratch, for the Representation minutes in the settings; rounds use the current "
            "one until the new one is ready.",
        )
        return
    if job is not None and job.state == "failed":
        st.error(f"Learning the representation failed: {widgets.md(job.error)}")
    elif job is not None and job.state == "cancelled":
        st.info("Learning the representation was stopped; it resumes where it stopped.")
    st.button(
        "Learn the representation", key="start-backbone", on_click=jobs.start_backbone, args=(project,), type="primary"
    )


def rejected_summary(project: storage.Project) -> None:
    rejected = storage.rejected_files(project)
    if not rejected:
        return
    reasons = pd.Series([reason for _, reason in rejected]).value_counts()
    with st.expander(f"{len(rejected)} rejected files and why"):
        st.dataframe(reasons.rename_axis("reason").reset_index(name="files"), hide_index=True)
        st.dataframe(pd.DataFrame(rejected, columns=["file", "reason"]), hide_index=True)


def main() -> None:
    state.require("manage", "page project")
    if st.session_state.pop(GO_TO_LABELS, False):
        st.switch_page("app/page_labels.py")
    project = state.active_project()
    st.title("Project")
    if project is None:
        project_forms.dead_end(state.project_error())
        return
    tabs = st.tabs(["Overview", "Settings", "Classes", "Import labels", "Open or create"])
    with tabs[0]:
        overview(project)
    with tabs[1]:
        settings_form(project)
    with tabs[2]:
        class_editor(project)
    with tabs[3]:
        import_section(project)
    with tabs[4]:
        project_forms.open_section()
        project_forms.create_section()


if __name__ == "__main__":
    main()
