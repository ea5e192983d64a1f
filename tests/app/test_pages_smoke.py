"""Every page draws without error on a fresh project, and the overview lists rejected files with reasons."""

from __future__ import annotations

import pytest

import storage
from tests.support import make_app_project, write_image_folder

PAGES = [
    "app/page_label.py",
    "app/page_project.py",
    "app/page_progress.py",
    "app/page_curate.py",
    "app/page_target.py",
    "app/page_export.py",
]


@pytest.mark.parametrize("page", PAGES)
def test_page_draws_on_a_fresh_project(open_app, page):
    at = open_app(page)
    assert not at.exception
    assert at.title[0].value == page.split("_")[-1].removesuffix(".py").capitalize()


def test_overview_lists_rejected_files_and_reasons(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import state
    from tests.app.conftest import MAIN

    images = tmp_path / "images"
    write_image_folder(images, per_class=8, flat=True)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (images / "<i>x.png").write_bytes(b"")
    project = make_app_project(tmp_path / "project", images)
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page("app/page_project.py").run()
    assert at.metric[2].value == "2"
    files = at.dataframe[1].value
    assert sorted(files["file"]) == ["<i>x.png", "broken.jpg"]  # shown as text in a table
    assert set(files["reason"]) == {reason for _, reason in storage.rejected_files(project)}
