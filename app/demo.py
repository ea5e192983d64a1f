"""The bundled demo: 2,000 CIFAR-10 images in assets/demo, opened on first start.

The demo project lives in `.demo_project/` at the repository root (or
PROXY_LABELER_DEMO_DIR). `ground_truth.csv` is read only by the optional
oracle helper, which labels a batch the way a perfect annotator would.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable
from pathlib import Path

import streamlit as st

import storage

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ASSETS = REPO_ROOT / "assets" / "demo"
GROUND_TRUTH = "ground_truth.csv"
ENV_DEMO_DIR = "PROXY_LABELER_DEMO_DIR"
ENV_DEMO_ASSETS = "PROXY_LABELER_DEMO_ASSETS"
ORACLE = "oracle"

# Small rounds keep each proxy round to seconds on a 2-core CPU.
DEMO_SETTINGS = dict(
    budget=400,
    round_size=20,
    initial_size=20,
    validation_size=100,
    strategy="least_confidence",
    proxy="auto",
    target="auto",
    proxy_training="balanced",
    target_training="balanced",
    device="auto",
)

_build_lock = threading.Lock()  # two first sessions must not both create the demo


def demo_dir() -> Path:
    return Path(os.environ.get(ENV_DEMO_DIR) or REPO_ROOT / ".demo_project")


def demo_assets() -> Path:
    return Path(os.environ.get(ENV_DEMO_ASSETS) or DEMO_ASSETS)


def ground_truth(assets: Path = DEMO_ASSETS) -> dict[str, str]:
    """Relative image path -> class name, from the demo's ground-truth CSV."""
    with open(assets / GROUND_TRUTH, newline="") as handle:
        return {row["path"]: row["class"] for row in csv.DictReader(handle)}


def demo_classes(assets: Path = DEMO_ASSETS) -> tuple[str, ...]:
    """The class list in a fixed (sorted) order, so keyboard keys never move."""
    return tuple(sorted(set(ground_truth(assets).values())))


def demo_settings(assets: Path = DEMO_ASSETS) -> storage.Settings:
    """DEMO_SETTINGS, shrunk to fit when the demo folder holds fewer images than the bundled 2,000."""
    n = len(ground_truth(assets))
    values = dict(DEMO_SETTINGS)
    values["validation_size"] = min(values["validation_size"], n // 10)
    values["budget"] = min(values["budget"], n - values["validation_size"])
    values["initial_size"] = min(values["initial_size"], values["budget"])
    return storage.Settings(image_root=str(assets / "images"), classes=demo_classes(assets), **values)


def ensure_demo(
    root: Path, assets: Path = DEMO_ASSETS, on_progress: Callable[[float, str], None] | None = None
) -> storage.Project:
    """Create (or finish creating) the demo project at `root`: ingest, then the random round 0.

    Idempotent: a crash half-way is finished on the next call, since ingest
    adds only files it has not seen and round 0 is made only once.
    """
    from engine.initial import run_initial_round

    report = on_progress or (lambda fraction, message: None)
    with _build_lock:
        if (root / "project.db").is_file():
            project = storage.open_project(root)
        else:
            project = storage.create_project(root, demo_settings(assets))
        if storage.current_round(project) is None:
            report(0.0, "reading the demo images")
            storage.ingest(
                project,
                on_progress=lambda done, total, _path: report(
                    0.9 * done / max(total, 1), f"checked {done} of {total} images"
                ),
            )
            report(0.95, "choosing the first random batch")
            run_initial_round(project)
        report(1.0, "ready")
        return project


def open_demo_with_status() -> storage.Project | None:
    """Open the demo project, building it with a visible progress bar the first time."""
    root, assets = demo_dir(), demo_assets()
    if not (assets / GROUND_TRUTH).is_file():
        st.info(
            "No project is open and the demo images (assets/demo) are missing. "
            "Create or open a project on the Project page."
        )
        return None
    if (root / "project.db").is_file() and _has_round(root):
        return storage.open_project(root)
    with st.status("Preparing the demo project (first start only)...", expanded=True) as status:
        bar = st.progress(0.0)
        project = ensure_demo(root, assets, on_progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
        status.update(label="Demo project ready", state="complete", expanded=False)
    return project


def _has_round(root: Path) -> bool:
    try:
        return storage.current_round(storage.open_project(root)) is not None
    except storage.StorageError:
        return False


def is_demo(project: storage.Project, assets: Path | None = None) -> bool:
    """True when the project labels the bundled demo images (so the oracle may answer)."""
    assets = assets or demo_assets()
    settings = storage.load_settings(project)
    return Path(settings.image_root).resolve() == (assets / "images").resolve()


def oracle_label(project: storage.Project, item_ids: list[int], assets: Path | None = None) -> int:
    """Label `item_ids` with their ground-truth classes (annotator 'oracle'); return how many."""
    truth = ground_truth(assets or demo_assets())
    classes = set(storage.class_names(project))
    done = 0
    for item_id in item_ids:
        name = truth.get(storage.get_item(project, item_id).path)
        if name in classes:
            storage.set_label(project, item_id, name, annotator=ORACLE, source="oracle")
            done += 1
    return done
