"""Fixtures for the app tests: a tiny generated image project and AppTest on each page
(helpers: tests/support.py).

The worker process is never started from a test: `app.jobs.start_worker` is
replaced by a no-op, and tests run the real engine job synchronously with
`engine.worker.run_worker(project_dir, once=True)` between AppTest runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import storage
from app import demo, jobs, state
from tests.support import make_app_project, write_image_folder

torch.set_num_threads(1)

MAIN = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "images"
    return folder, write_image_folder(folder, per_class=8, flat=True)


@pytest.fixture
def project(tmp_path: Path, dataset) -> storage.Project:
    return make_app_project(tmp_path / "project", dataset[0])


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
