"""Project page: the open project, its settings and classes; open or create another project."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import streamlit as st

import storage
from app import demo, labeling, state, widgets

PROJECTS_DIR = demo.REPO_ROOT / "projects"
DEVICES = ["auto", "cpu", "cuda"]
TRAINING_LEVELS = list(storage.TRAINING_LEVELS)
HELP = {
    "budget": "How many images you will label through selection, the first random batch included "
              "(validation images are extra).",
    "round_size": "Images per batch after the first. Smaller batches mean more, shorter rounds.",
    "initial_size": "Size of the first batch, drawn at random (there is no model yet).",
    "validation_size": "Images drawn at random and kept apart to measure accuracy. You label them too; "
                       "they are never used for training. Can grow later, not shrink.",
    "strategy": "How the proxy picks the next batch: least_confidence, margin and entropy ask about images "
                "it is unsure of; kcenter covers the pool in feature space; random is the baseline.",
    "proxy": "The small, fast model retrained every round to choose the next batch. "
             "auto: proxy_tiny on a CPU, resnet20 on a GPU.",
    "target": "The larger model trained once on all labels at the end. auto: resnet20 on a CPU, resnet18 on a GPU.",
    "device": "auto uses a GPU when there is one, else the CPU.",
    "proxy_training": "How long the proxy trains each round. fast: at most ~10 s on a CPU; balanced: ~20 s; "
                      "thorough: up to 90 s. Small label sets always get a few hundred steps.",
    "target_training": "How long the target trains. fast: at most ~1 minute on a CPU; balanced: ~5 minutes; "
                       "thorough: up to 20 minutes. A GPU finishes the full plan much sooner.",
    "proxy_steps": "Expert: a fixed number of training steps per round instead of the level's plan (0 = by level).",
    "target_steps": "Expert: a fixed number of training steps for the target (0 = by level).",
    "auto_next_round": "Start the next round as soon as a batch is done; off: a button starts it.",
}


def engine_choices() -> tuple[list[str], list[str]]:
    from engine.models import MODELS
    from engine.select import STRATEGIES

    return list(STRATEGIES), ["auto", *MODELS]


def _index(options: list[str], value: str) -> int:
    return options.index(value) if value in options else 0


# ---------------------------------------------------------------- settings

def settings_fields(settings: storage.Settings, prefix: str) -> dict:
    """The settings widgets (inside a form); returns the values entered."""
    strategies, models = engine_choices()
    a, b = st.columns(2)
    values = {
        "budget": a.number_input("Budget", value=settings.budget, step=10, help=HELP["budget"], key=f"{prefix}budget"),
        "round_size": b.number_input("Round size", value=settings.round_size, step=5, help=HELP["round_size"],
                                     key=f"{prefix}round_size"),
        "initial_size": a.number_input("First random batch", value=settings.initial_size, step=5,
                                       help=HELP["initial_size"], key=f"{prefix}initial_size"),
        "validation_size": b.number_input("Validation images", value=settings.validation_size, step=10,
                                          help=HELP["validation_size"], key=f"{prefix}validation_size"),
        "strategy": a.selectbox("Strategy", strategies, _index(strategies, settings.strategy),
                                help=HELP["strategy"], key=f"{prefix}strategy"),
        "device": b.selectbox("Device", DEVICES, _index(DEVICES, settings.device), help=HELP["device"],
                              key=f"{prefix}device"),
        "proxy": a.selectbox("Proxy model", models, _index(models, settings.proxy), help=HELP["proxy"],
                             key=f"{prefix}proxy"),
        "target": b.selectbox("Target model", models, _index(models, settings.target), help=HELP["target"],
                              key=f"{prefix}target"),
        "proxy_training": a.selectbox("Proxy training", TRAINING_LEVELS,
                                      _index(TRAINING_LEVELS, settings.proxy_training),
                                      help=HELP["proxy_training"], key=f"{prefix}proxy_training"),
        "target_training": b.selectbox("Target training", TRAINING_LEVELS,
                                       _index(TRAINING_LEVELS, settings.target_training),
                                       help=HELP["target_training"], key=f"{prefix}target_training"),
        "proxy_steps": a.number_input("Proxy steps (0 = by level)", value=settings.proxy_steps, step=50,
                                      help=HELP["proxy_steps"], key=f"{prefix}proxy_steps"),
        "target_steps": b.number_input("Target steps (0 = by level)", value=settings.target_steps, step=100,
                                       help=HELP["target_steps"], key=f"{prefix}target_steps"),
        "auto_next_round": st.checkbox("Start the next round automatically", settings.auto_next_round,
                                       help=HELP["auto_next_round"], key=f"{prefix}auto_next_round"),
    }
    return values


def settings_form(project: storage.Project) -> None:
    settings = storage.load_settings(project)
    with st.form("settings"):
        values = settings_fields(settings, "s-")
        submitted = st.form_submit_button("Save settings", type="primary")
    if submitted:
        try:
            storage.save_settings(project, dataclasses.replace(settings, **values))
        except storage.SettingsError as exc:
            st.error(f"Not saved: {widgets.md(exc)}")
        else:
            st.success("Settings saved.")


# ---------------------------------------------------------------- classes

def parse_classes(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def key_legend(classes: list[str]) -> None:
    rows = [{"key": labeling.class_key(i) or "", "class": name} for i, name in enumerate(classes)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width=360)


GO_TO_LABELS = "go_to_labels"


def browse_class(name: str) -> None:
    """Open the Labels page filtered to one class (to relabel its images before removing it)."""
    from app.page_labels import CLASS_FILTER

    st.session_state[CLASS_FILTER] = [name]
    st.session_state[GO_TO_LABELS] = True      # switched in the script run the click starts, not in the callback


def class_editor(project: storage.Project) -> None:
    settings = storage.load_settings(project)
    st.caption("One class per line. Edit a line to rename (labels keep their class), add lines to add "
               "classes, move lines to reorder: the first ten get the keys 1–9 and 0.")
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
                text_col.button(f"Show the images labeled {still_used[0]}", key="show-class-images",
                                on_click=browse_class, args=(still_used[0],))
        else:
            text_col.success("Classes saved.")
    with legend_col:
        key_legend(storage.class_names(project))


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
    if st.button("Scan the image folder again", key="rescan", help="Adds images that appeared since the last scan."):
        run_ingest(project)


def rejected_summary(project: storage.Project) -> None:
    rejected = storage.rejected_files(project)
    if not rejected:
        return
    reasons = pd.Series([reason for _, reason in rejected]).value_counts()
    with st.expander(f"{len(rejected)} rejected files and why"):
        st.dataframe(reasons.rename_axis("reason").reset_index(name="files"), hide_index=True)
        st.dataframe(pd.DataFrame(rejected, columns=["file", "reason"]), hide_index=True)


def run_ingest(project: storage.Project) -> storage.IngestReport:
    """Ingest with a live progress bar (seconds for thousands of images, so it runs in the script)."""
    bar = st.progress(0.0, text="looking for images")

    def on_progress(done: int, total: int, path: str) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done} of {total}: {widgets.md(path)}")

    report = storage.ingest(project, on_progress=on_progress)
    bar.progress(1.0, text="done")
    reasons = ", ".join(f"{n} {widgets.md(r)}" for r, n in sorted(report.rejected_reasons.items()))
    st.success(f"Added {_count(report.added, 'image')}; {_count(report.duplicates, 'duplicate')}, "
               f"{report.rejected} rejected"
               f"{' (' + reasons + ')' if reasons else ''}; {report.already_known} already known.")
    return report


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------- open / create

def open_section() -> None:
    st.subheader("Open a project")
    with st.form("open"):
        path = st.text_input("Project folder on the server", placeholder="/path/to/project")
        submitted = st.form_submit_button("Open")
    if submitted:
        project = state.try_open(Path(path).expanduser()) if path.strip() else None
        if project is None:
            st.error(f"No project at {widgets.md(path or '(empty)')}: the folder needs a project.db.")
        else:
            state.switch_project(project)
            st.rerun()
    if st.button("Open the demo project", key="open-demo"):
        st.session_state["project_dir"] = None
        project = demo.open_demo_with_status()
        if project is not None:
            state.switch_project(project)
            st.rerun()


def create_section() -> None:
    st.subheader("Create a project")
    with st.form("create"):
        image_root = st.text_input("Image folder on the server", placeholder="/data/my_images",
                                   help="Every image below it is a candidate (jpg, png, webp, bmp, gif, tiff).")
        folder = st.text_input("Project folder", placeholder=f"default: {PROJECTS_DIR}/<image folder name>",
                               help="Where the project database, cache and models go; created if missing.")
        classes = st.text_area("Classes, one per line", placeholder="cat\ndog", height=140)
        values = settings_fields(storage.Settings(image_root="", classes=()), "c-")
        submitted = st.form_submit_button("Create the project and scan the images", type="primary")
    if submitted:
        create_project(image_root.strip(), folder.strip(), parse_classes(classes), values)


def create_project(image_root: str, folder: str, classes: tuple[str, ...], values: dict) -> None:
    settings = storage.Settings(image_root=image_root, classes=classes, **values)
    root = Path(folder).expanduser() if folder else PROJECTS_DIR / (Path(image_root).name or "project")
    try:
        storage.validate_settings(settings)
        project = storage.create_project(root, settings)
    except storage.StorageError as exc:
        st.error(f"Not created: {widgets.md(exc)}")
        return
    run_ingest(project)
    state.switch_project(project)
    try:
        storage.validate_settings(storage.load_settings(project), pool_size=storage.item_counts(project)["ok"])
    except storage.SettingsError as exc:
        st.warning(f"Fix the settings before labeling: {widgets.md(exc)}")
        return
    from engine.initial import RoundError, run_initial_round

    try:
        run_initial_round(project)
    except RoundError as exc:
        st.warning(widgets.md(exc))
        return
    st.success("The first batch is ready.")
    st.page_link("app/page_label.py", label="Start labeling", icon=":material/label:")


def main() -> None:
    if st.session_state.pop(GO_TO_LABELS, False):
        st.switch_page("app/page_labels.py")
    project = state.active_project()
    st.title("Project")
    tabs = st.tabs(["Overview", "Settings", "Classes", "Open or create"])
    if project is not None:
        with tabs[0]:
            overview(project)
        with tabs[1]:
            settings_form(project)
        with tabs[2]:
            class_editor(project)
    with tabs[3]:
        open_section()
        create_section()


if __name__ == "__main__":
    main()
