"""The whole app in headless Chromium, as `.streamlit/config.toml` configures it: no request leaves the
machine on any page, and a broken project ends in a readable error with the Open/Create forms."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from app.live_server import CHROMIUM, streamlit_server
from tests.support import make_app_project, write_image_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]
PAGES = ["", "labels", "project", "progress", "curate", "target", "export"]
LOCAL = {"127.0.0.1", "localhost"}


def visit(browser, url: str, requests: list[str], screenshot: str | None = None) -> str:
    """Open `url`, wait until the app has drawn, return the page text; every request URL is appended."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(url)
        page.wait_for_selector("h1, h3")
        page.wait_for_load_state("networkidle")
        if screenshot:
            page.screenshot(path=screenshot, full_page=False)
        return page.inner_text("body")
    finally:
        context.close()


def test_no_page_makes_a_request_to_another_host(chromium, tmp_path):
    browser = chromium
    write_image_folder(tmp_path / "images", per_class=4, flat=True)
    project = make_app_project(tmp_path / "project", tmp_path / "images")
    requests: list[str] = []
    with streamlit_server(project.root, tmp_path / "home", tmp_path / "server.log") as url:
        for path in PAGES:
            text = visit(browser, f"{url}/{path}", requests)
            assert "Traceback" not in text
            assert "Deploy" not in text
    outside = sorted(
        {urlparse(r).hostname for r in requests if urlparse(r).scheme in ("http", "https", "ws", "wss")} - LOCAL
    )
    assert len(requests) > 50 and outside == [], outside
    log = (tmp_path / "server.log").read_text()
    assert "127.0.0.1" in log or "localhost" in log  # .streamlit/config.toml: localhost only
    assert "Network URL" not in log and "External URL" not in log


def test_a_broken_project_shows_why_and_the_forms_in_the_browser(chromium, tmp_path):
    browser = chromium
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "project.db").write_bytes(b"")
    requests: list[str] = []
    with streamlit_server(broken, tmp_path / "home", tmp_path / "server.log") as url:
        for path in PAGES:
            shot = str(tmp_path / "dead_end.png") if path == "" else None  # docs/screenshots/dead_end.png
            text = visit(browser, f"{url}/{path}", requests, screenshot=shot)
            assert "is empty (0 bytes), not a project database" in text
            assert "Open a project" in text and "Create a project" in text
            assert "Traceback" not in text
    assert (broken / "project.db").read_bytes() == b""
