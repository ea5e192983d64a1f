"""Fixtures for the app tests: a tiny generated image project and AppTest on each page.

The worker process is never started from a test: `app.jobs.start_worker` is
replaced by a no-op, and tests run the real engine job synchronously with
`engine.worker.run_worker(project_dir, once=True)` between AppTest runs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import storage
from app import demo, jobs, state

torch.set_num_threads(1)

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
MAIN = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def write_dataset(folder: Path, per_class: int = 8, size: int = 12, seed: int = 0) -> dict[str, str]:
    """Noisy solid-colour PNGs named img_000.png... (the name hides the class); returns name -> class."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(per_class * len(CLASSES)):
        name = CLASSES[i % len(CLASSES)]
        pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-25, 26, (size, size, 3)), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
        (folder / f"img_{i:03d}.png").write_bytes(buffer.getvalue())
        truth[f"img_{i:03d}.png"] = name
    return truth


def tiny_settings(image_root: Path, **overrides) -> storage.Settings:
    values = dict(
        image_root=str(image_root),
        classes=CLASSES,
        budget=12,
        round_size=4,
        initial_size=4,
        validation_size=3,
        proxy="proxy_tiny",
        target="proxy_tiny",
        proxy_steps=30,
        target_steps=30,
        device="cpu",
        strategy="least_confidence",
    )
    values.update(overrides)
    return storage.Settings(**values)


def make_project(root: Path, image_root: Path, **overrides) -> storage.Project:
    """Created, ingested, with the random round 0 queued (what the app does on create)."""
    from engine.round import run_initial_round

    project = storage.create_project(root, tiny_settings(image_root, **overrides))
    storage.ingest(project)
    run_initial_round(project)
    return project


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "images"
    return folder, write_dataset(folder)


@pytest.fixture
def project(tmp_path: Path, dataset) -> storage.Project:
    return make_project(tmp_path / "project", dataset[0])


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker processes, no writes to the real home, no demo built in the repository."""
    monkeypatch.setattr(jobs, "start_worker", lambda project: None)
    monkeypatch.setenv(state.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.setenv(demo.ENV_DEMO_DIR, str(tmp_path / "demo_project"))
    monkeypatch.setenv(demo.ENV_DEMO_ASSETS, str(tmp_path / "no_demo_assets"))  # tests opt in to a demo
    monkeypatch.delenv(state.ENV_PROJECT, raising=False)
    monkeypatch.setenv(state.ENV_ROOTS, str(tmp_path))  # the test's folders are the allowed roots


@pytest.fixture
def open_app(project: storage.Project, monkeypatch: pytest.MonkeyPatch):
    """open_app(page) -> AppTest already run on that page of the tiny project."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))

    def opener(page: str = "app/page_label.py") -> AppTest:
        at = AppTest.from_file(MAIN, default_timeout=60).run()
        if page != "app/page_label.py":
            at.switch_page(page).run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return opener


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian chromium driven by Playwright, shared by the browser tests (skipped without either)."""
    from app.live_server import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
