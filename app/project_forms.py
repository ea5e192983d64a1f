"""Opening and creating projects: the forms every page falls back to when no project can be opened.

Creating is one idempotent step (`create_project`): an empty folder is refused before anything is
written; a project folder that already holds a half-made project over the same images is resumed
(ingest continues where it stopped, then the first batch is made); settings the user left empty
are fitted to the images found.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import storage
from app import demo, state, widgets
from engine.backbone_files import BACKBONE_TARGET, FROZEN_PROXIES
from engine.names import AUTO, LABELING_STRATEGIES, MODEL_NAMES

PROJECTS_DIR = demo.REPO_ROOT / "projects"
FIT = "fit to the folder"  # placeholder of the settings left to `storage.fit_to_pool`
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
    "auto: with a backbone, linear (a head on its features); else proxy_tiny on a CPU, resnet20 on a GPU. "
    "linear and mlp need a backbone.",
    "target": "The larger model trained once on all labels at the end. backbone: the project's backbone (ssl or "
    "a weights file) fine-tuned with a new classifier. auto: backbone when there is one, else resnet20 "
    "on a CPU, resnet18 on a GPU.",
    "device": "auto uses a GPU when there is one, else the CPU.",
    "candidates": "Which unlabeled images a batch is chosen from. all: the whole pool. seals: only the nearest "
    "neighbours of the labeled images (SEALS), which makes selection on a pool of a million images faster; "
    "measured on CIFAR-10 it kept least confidence's accuracy and cost k-center 2-3 points (docs/seals.md).",
    "seals_k": "With seals: how many nearest neighbours of each labeled image are candidates.",
    "processes": "Processes that train and score on this machine: auto = one per GPU (1 on a CPU), or a number. "
    "Above one, each training and scoring runs as a torchrun job of that many processes; starting one costs "
    "seconds, so it pays on large label sets and pools (docs/scale.md).",
    "proxy_training": "How long the proxy trains each round. fast: at most ~10 s on a CPU; balanced: ~20 s; "
    "thorough: up to 90 s. Small label sets always get a few hundred steps.",
    "target_training": "How long the target trains. fast: at most ~1 minute on a CPU; balanced: ~5 minutes; "
    "thorough: up to 20 minutes. A GPU finishes the full plan much sooner.",
    "proxy_steps": "Expert: a fixed number of training steps per round instead of the level's plan (0 = by level).",
    "target_steps": "Expert: a fixed number of training steps for the target (0 = by level).",
    "auto_next_round": "Start the next round as soon as a batch is done; off: a button starts it.",
    "backbone": "What the models see images through. none: the proxy learns from pixels. ssl: first learn a "
    "representation of your own images, unlabeled, in the background (nothing is downloaded); "
    "then the proxy is a linear head on it and rounds take about a second. Or the path of a local "
    "torchvision ResNet weights file (resnet18/34/50), or just resnet18/resnet50 to use the one in "
    "your torch cache.",
    "initial_strategy": "How the first batch is picked. auto: typiclust (typical images of many clusters) when "
    "there is a backbone, else random. Used when the first batch is made.",
    "ssl_minutes": "How long the ssl representation learns (on this machine's GPU or CPU). More minutes, "
    "better features; the Project page shows how well it separates your labels.",
}
INITIAL_STRATEGIES = list(storage.INITIAL_STRATEGIES)
CANDIDATES = list(storage.project.CANDIDATES)
NO_LABELS, SUBFOLDERS, LABEL_FILE = "no", "class subfolders", "a CSV or JSONL file"
LABEL_SOURCES = [NO_LABELS, SUBFOLDERS, LABEL_FILE]
LABELS_HELP = (
    "Labels you already have become ordinary labels (source imported), shown on the Labels page and in "
    "exports; only the images without one are left to label. class subfolders: each image's first folder "
    "under the image folder is its class (cat/1.jpg), images directly in the image folder stay unlabeled. "
    "A CSV or JSONL file: a path and a class per image, as the Export page writes them. All or nothing: "
    "any problem and nothing is imported."
)


def engine_choices() -> tuple[list[str], list[str]]:
    """(strategy names, model names): from engine.names, which the server imports without torch."""
    return list(LABELING_STRATEGIES), [AUTO, *MODEL_NAMES]


def _index(options: list[str], value: str) -> int:
    return options.index(value) if value in options else 0


# ---------------------------------------------------------------- settings


def settings_fields(settings: storage.Settings, prefix: str, fit: bool = False) -> dict:
    """The settings widgets (inside a form); returns the values entered. fit: budget, round size, first
    batch and validation size start empty (None), to be fitted to the images found (`storage.fit_to_pool`)."""
    strategies, models = engine_choices()
    proxies, targets = models + list(FROZEN_PROXIES), [*models, BACKBONE_TARGET]
    a, b = st.columns(2)

    def fitted(name: str):
        return {"value": None, "placeholder": FIT} if fit else {"value": getattr(settings, name)}

    values = {
        "budget": a.number_input("Budget", **fitted("budget"), step=10, help=HELP["budget"], key=f"{prefix}budget"),
        "round_size": b.number_input(
            "Round size", **fitted("round_size"), step=5, help=HELP["round_size"], key=f"{prefix}round_size"
        ),
        "initial_size": a.number_input(
            "First random batch",
            **fitted("initial_size"),
            step=5,
            help=HELP["initial_size"],
            key=f"{prefix}initial_size",
        ),
        "validation_size": b.number_input(
            "Validation images",
            **fitted("validation_size"),
            step=10,
            help=HELP["validation_size"],
            key=f"{prefix}validation_size",
        ),
        "strategy": a.selectbox(
            "Strategy",
            strategies,
            _index(strategies, settings.strategy),
            help=HELP["strategy"],
            key=f"{prefix}strategy",
        ),
        "device": b.selectbox(
            "Device", DEVICES, _index(DEVICES, settings.device), help=HELP["device"], key=f"{prefix}device"
        ),
        "proxy": a.selectbox(
            "Proxy model", proxies, _index(proxies, settings.proxy), help=HELP["proxy"], key=f"{prefix}proxy"
        ),
        "target": b.selectbox(
            "Target model", targets, _index(targets, settings.target), help=HELP["target"], key=f"{prefix}target"
        ),
        "proxy_training": a.selectbox(
            "Proxy training",
            TRAINING_LEVELS,
            _index(TRAINING_LEVELS, settings.proxy_training),
            help=HELP["proxy_training"],
            key=f"{prefix}proxy_training",
        ),
        "target_training": b.selectbox(
            "Target training",
            TRAINING_LEVELS,
            _index(TRAINING_LEVELS, settings.target_training),
            help=HELP["target_training"],
            key=f"{prefix}target_training",
        ),
        "proxy_steps": a.number_input(
            "Proxy steps (0 = by level)",
            value=settings.proxy_steps,
            step=50,
            help=HELP["proxy_steps"],
            key=f"{prefix}proxy_steps",
        ),
        "target_steps": b.number_input(
            "Target steps (0 = by level)",
            value=settings.target_steps,
            step=100,
            help=HELP["target_steps"],
            key=f"{prefix}target_steps",
        ),
        "backbone": a.text_input("Backbone", settings.backbone, help=HELP["backbone"], key=f"{prefix}backbone"),
        "initial_strategy": b.selectbox(
            "First batch",
            INITIAL_STRATEGIES,
            _index(INITIAL_STRATEGIES, settings.initial_strategy),
            help=HELP["initial_strategy"],
            key=f"{prefix}initial_strategy",
        ),
        "ssl_minutes": a.number_input(
            "Representation minutes (ssl)",
            value=float(settings.ssl_minutes),
            min_value=0.1,
            step=5.0,
            help=HELP["ssl_minutes"],
            key=f"{prefix}ssl_minutes",
        ),
        "processes": b.text_input("Processes", settings.processes, help=HELP["processes"], key=f"{prefix}processes"),
        "candidates": a.selectbox(
            "Candidates",
            CANDIDATES,
            _index(CANDIDATES, settings.candidates),
            help=HELP["candidates"],
            key=f"{prefix}candidates",
        ),
        "seals_k": b.number_input(
            "Neighbours (seals)", value=settings.seals_k, step=10, help=HELP["seals_k"], key=f"{prefix}seals_k"
        ),
        "auto_next_round": st.checkbox(
            "Start the next round automatically",
            settings.auto_next_round,
            help=HELP["auto_next_round"],
            key=f"{prefix}auto_next_round",
        ),
    }
    return values


def parse_classes(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def require_project(capability: str, page: str) -> storage.Project:
    """This session's project, once the session may do `capability` (state.CAN) on `page`; when it
    cannot be opened, the reason and the forms, and the page stops."""
    state.require(capability, f"page {page}")
    project = state.active_project()
    if project is None:
        dead_end(state.project_error())
        st.stop()
    return project


def dead_end(message: str | None) -> None:
    """No project could be opened: say why, and offer the ways on (to admins: others ask one)."""
    if message:
        st.error(widgets.md(message))
    elif state.can("manage"):
        st.info("No project is open. Open or create one.")
    if not state.can("manage"):
        st.info("No project is open to you. An admin adds you to a project on the Users page.")
        return
    open_section()
    create_section()


# ---------------------------------------------------------------- open


def open_section() -> None:
    st.subheader("Open a project")
    with st.form("open"):
        path = st.text_input("Project folder on the server", placeholder="/path/to/project")
        submitted = st.form_submit_button("Open")
    if submitted:
        open_folder(path.strip())
    if st.button("Open the demo project", key="open-demo"):
        st.session_state["project_dir"] = None
        st.session_state.pop(state.ERROR, None)
        project = demo.open_demo_with_status()
        if project is not None:
            state.switch_project(project)
            st.rerun()


def open_folder(path: str) -> None:
    if not path:
        st.error("Type the folder of a project (it holds a project.db).")
        return
    try:
        project = state.open_allowed(path)
    except storage.StorageError as exc:
        st.error(f"Not opened: {widgets.md(exc)}")
        return
    state.switch_project(project)
    state.audit_action("project.open", str(project.root))
    st.rerun()


# ---------------------------------------------------------------- create


def create_section() -> None:
    st.subheader("Create a project")
    with st.form("create"):
        image_root = st.text_input(
            "Image folder on the server",
            placeholder="/data/my_images",
            help="Every image below it is a candidate (jpg, png, webp, bmp, gif, tiff).",
        )
        folder = st.text_input(
            "Project folder",
            placeholder=f"default: {PROJECTS_DIR}/<image folder name>",
            help="Where the project database, cache and models go; created if missing. "
            "Creating again into the same folder finishes a project whose creation "
            "was interrupted.",
        )
        classes = st.text_area(
            "Classes, one per line",
            placeholder="cat\ndog",
            height=140,
            help="With class subfolders, leave it empty to use the subfolder names.",
        )
        labels = st.selectbox("The images already carry labels", LABEL_SOURCES, key="c-labels", help=LABELS_HELP)
        label_file = st.text_input(
            "Label file on the server (with a CSV or JSONL file)",
            placeholder="/data/labels.csv",
            key="c-label-file",
            help="path and class columns (class may be called label); paths relative to the image folder.",
        )
        values = settings_fields(storage.Settings(image_root="", classes=()), "c-", fit=True)
        submitted = st.form_submit_button("Create the project and scan the images", type="primary")
    if submitted:
        create_project(
            image_root.strip(), folder.strip(), parse_classes(classes), values, labels=(labels, label_file.strip())
        )


LabelSource = storage.label_import.Source | None  # a source chosen for import_labels, or none


def label_source(choice: str, path: str, project_root: Path | None = None) -> LabelSource:
    """The source the user chose: None (no labels), storage.SUBFOLDERS, or the label file's bytes, read
    now (StorageError when it is outside the allowed roots, cannot be read, or is not a label file)."""
    if choice == SUBFOLDERS:
        return storage.SUBFOLDERS
    if choice != LABEL_FILE:
        return None
    if not path:
        raise storage.StorageError("type the path of the label file (CSV or JSONL), or choose no labels")
    file = storage.LabelFile.read(state.check_allowed(path, "label file", [project_root] if project_root else []))
    storage.label_import.read_label_file(file)  # a file that is not a label file is refused before anything
    return file


def create_project(
    image_root: str, folder: str, classes: tuple[str, ...], values: dict, labels: tuple[str, str] = (NO_LABELS, "")
) -> None:
    """Create (or finish creating) a project, scan its images, import the labels they carry (`labels`:
    a LABEL_SOURCES choice and the label file's path) and make the first batch."""
    typed = tuple(name for name in storage.FITTED if values.get(name) is not None)
    defaults = storage.Settings(image_root="", classes=())
    values = {name: (getattr(defaults, name) if value is None else value) for name, value in values.items()}
    from engine.backbone_files import BackboneError, check_backbone_users

    try:
        state.check_backbone(values.get("backbone", "none"))
        check_backbone_users(values.get("backbone", "none"), values.get("proxy", "auto"), values.get("target", "auto"))
        source = label_source(*labels)
        project, resumed = _create_or_resume(image_root, folder, classes, values, source)
    except (storage.StorageError, BackboneError) as exc:
        st.error(f"Not created: {widgets.md(exc)}")
        return
    if resumed:
        st.info(f"{widgets.md(project.root)} already held this project, half made: finishing it.")
    state.switch_project(project)
    state.audit_action("project.create", str(project.root), f"images {image_root}")
    finish_setup(project, None if resumed else typed, labels=source)


def _create_or_resume(
    image_root: str, folder: str, classes: tuple[str, ...], values: dict, labels: LabelSource = None
) -> tuple[storage.Project, bool]:
    if not image_root:
        raise storage.SettingsError("image folder is empty; type the folder that holds your images")
    images = state.check_allowed(image_root, "image folder")
    root = state.check_allowed(Path(folder) if folder else PROJECTS_DIR / (images.name or "project"), "project folder")
    if storage.project.probe(root / "project.db") is not None:
        project = storage.open_project(root)
        existing = storage.load_settings(project)
        if Path(existing.image_root) != images:
            raise storage.StorageError(
                f"{root} already holds a project over {existing.image_root}; open it, or choose another project folder"
            )
        if storage.current_round(project) is not None:
            raise storage.StorageError(f"{root} already holds this project; open it instead")
        return project, True
    found = None
    if labels is storage.SUBFOLDERS and not classes and images.is_dir():
        found = storage.find_images(images, exclude=root)
        classes = tuple(storage.subfolder_classes(found.paths))
        if len(classes) < storage.project.MIN_CLASSES:
            raise storage.SettingsError(
                f"the image folder has {len(classes)} subfolder(s) with images ({', '.join(classes) or 'none'}); "
                "class subfolders need one folder per class (cat/1.jpg, dog/2.jpg): arrange the images so, "
                "or type the classes"
            )
    settings = storage.Settings(image_root=str(images), classes=classes, **values)
    storage.validate_settings(settings)
    found = found or storage.find_images(images, exclude=root)
    if not found.paths:
        kinds = ", ".join(sorted(ext.lstrip(".") for ext in storage.IMAGE_EXTENSIONS))
        raise storage.StorageError(
            f"no images in {images} (looked for {kinds}, in every subfolder); choose the folder that holds your images"
        )
    return storage.create_project(root, settings), False


def finish_setup(project: storage.Project, typed: tuple[str, ...] | None = None, labels: LabelSource = None) -> bool:
    """Scan the image folder (only files not seen yet), fit the settings to the images found, import
    the labels the images carry (`labels`, all or nothing), and make the first batch: from a proxy
    trained on the labels when they cover two classes (`first_batch_from_labels`), else at random, or
    by the job that chooses it on the backbone's embeddings (the project's initial strategy). True when
    the project is ready to label or waits for a job.

    typed: the settings the user typed when creating (kept; the others are fitted). None (resuming,
    or a project opened half made): the settings are kept when they fit the images, else fitted.
    """
    from engine.initial import RoundError, initial_strategy, run_initial_round

    run_ingest(project)
    usable = storage.item_counts(project)["ok"]
    if usable == 0:
        st.error(
            "No usable image in the folder (every file was rejected or a duplicate): see the "
            "rejected files on the Project page, add images and scan again."
        )
        return False
    if not _fit_settings(project, usable, typed):
        return False
    if labels is not None and not _import_at_creation(project, labels):
        return False
    start_representation(project)
    if storage.current_round(project) is None:
        try:
            if first_batch_from_labels(project):
                return True
        except storage.StorageError as exc:
            st.warning(widgets.md(exc))
            return False
        strategy, why = initial_strategy(storage.load_settings(project), usable)
        if strategy != "random":
            _queue_first_round(project, strategy)
            return True
        try:
            run_initial_round(project, selector=why)
        except (RoundError, storage.StorageError) as exc:
            st.warning(widgets.md(exc))
            return False
    st.success("The first batch is ready.")
    st.page_link("app/page_label.py", label="Start labeling", icon=":material/label:")
    return True


def _import_at_creation(project: storage.Project, labels: storage.label_import.Source) -> bool:
    """Import the labels the images came with; False (the report shown) when the source has problems."""
    try:
        # the validation sample is drawn first, from every image: imported labels on it measure accuracy at once
        storage.reserve_validation(project)
        plan = storage.import_labels(project, labels)
    except storage.LabelImportError as exc:
        st.error(
            "The labels were not imported (nothing was): the project is created without them. Fix the "
            "source, then import it on the Project page (Import labels); the first batch is made then."
        )
        show_import_report(exc.plan.report())
        return False
    except storage.StorageError as exc:
        st.error(f"The labels were not imported: {widgets.md(exc)}")
        return False
    st.success(f"Imported {len(plan.labels)} labels.")
    show_import_report(plan.report())
    return True


def show_import_report(report: str) -> None:
    """An import's report, line by line as written (file and class names shown literally)."""
    st.code(report, language=None, wrap_lines=True)


def first_batch_from_labels(project: storage.Project) -> bool:
    """When the project has no round yet and its labels cover two classes (imported), or no image is left
    to label: record round 0 as those labels (engine.initial.start_from_labels) and queue the first batch
    from a proxy trained on them, or say that nothing is left to label. False when this is no such start;
    StorageError when the validation sample cannot be reserved."""
    from app import jobs
    from engine.initial import candidate_ids, start_from_labels

    made = start_from_labels(project)
    if made is None:
        return False
    if not candidate_ids(project):
        st.success(
            f"Every image is labeled ({made.n_labeled} training labels, the rest in the validation set): "
            "nothing is left to label. Train the target model next."
        )
        st.page_link("app/page_target.py", label="Go to the Target page", icon=":material/model_training:")
        return True
    jobs.advance(project, force=True)
    st.success(
        f"The first batch is being chosen by a proxy trained on the {made.n_labeled} labels the images came "
        "with: the Label page shows it when it is ready."
    )
    st.page_link("app/page_label.py", label="Go to the Label page", icon=":material/label:")
    return True


def _queue_first_round(project: storage.Project, strategy: str) -> None:
    """The first batch by typiclust / probcover needs the backbone's embeddings: the worker makes it."""
    from app import jobs

    storage.reserve_validation(project)  # so the validation images can be labeled while waiting
    jobs.start_first_round(project)
    waits = bool(storage.active_jobs(project, "backbone"))
    st.success(
        f"The first batch is being chosen by {strategy} on the representation of your images"
        + (" once it is learned" if waits else "")
        + ": the Label page shows it when it is ready"
        + (", or lets you label a random batch meanwhile." if waits else ".")
    )
    st.page_link("app/page_label.py", label="Go to the Label page", icon=":material/label:")


def start_representation(project: storage.Project) -> None:
    """With backbone `ssl`, start learning it in the background unless it is learned or on its way."""
    from engine.backbone_files import ssl_meta

    settings = storage.load_settings(project)
    if settings.backbone != "ssl" or ssl_meta(project.models_dir) is not None:
        return
    from app import jobs

    jobs.start_backbone(project)
    st.info(
        f"Learning a representation of your images in the background (about {settings.ssl_minutes:g} "
        "minutes): rounds use it once it is ready. The Project page shows its progress."
    )


def _fit_settings(project: storage.Project, usable: int, typed: tuple[str, ...] | None) -> bool:
    settings = storage.load_settings(project)
    if typed is None:
        try:
            storage.validate_settings(settings, pool_size=usable)
            return True
        except storage.SettingsError:
            typed = ()
    fitted = storage.fit_to_pool(settings, usable, keep=typed)
    try:
        if fitted != settings:
            storage.save_settings(project, fitted)
            st.caption(
                f"Settings fitted to the {usable} usable images: budget {fitted.budget}, first batch "
                f"{fitted.initial_size}, validation {fitted.validation_size}, round size {fitted.round_size}."
            )
        storage.validate_settings(fitted, pool_size=usable)
    except storage.SettingsError as exc:
        st.warning(f"Fix the settings before labeling (Project page, Settings): {widgets.md(exc)}")
        return False
    return True


def run_ingest(project: storage.Project) -> storage.IngestReport:
    """Ingest with a live progress bar (seconds for thousands of images, so it runs in the script)."""
    bar = st.progress(0.0, text="looking for images")

    def on_progress(done: int, total: int, path: str) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done} of {total}: {widgets.md(path)}")

    report = storage.ingest(project, on_progress=on_progress)
    bar.progress(1.0, text="done")
    reasons = ", ".join(f"{n} {widgets.md(r)}" for r, n in sorted(report.rejected_reasons.items()))
    st.success(
        f"Added {_count(report.added, 'image')}; {_count(report.duplicates, 'duplicate')}, "
        f"{report.rejected} rejected"
        f"{' (' + reasons + ')' if reasons else ''}; {report.already_known} already known."
    )
    return report


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
