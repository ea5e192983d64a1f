"""Which project opens: command line, last opened (server restart), or the demo; demo assets; safe text.

The image route is tested in test_images.py.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from streamlit.testing.v1 import AppTest

import storage
from app import demo, jobs, state, widgets
from tests.app.conftest import MAIN
from tests.support import write_image_folder


def test_project_from_command_line_or_environment(monkeypatch):
    assert state.requested_project(["--project", "/x/y"]) == Path("/x/y")
    assert state.requested_project(["--project=/x/z"]) == Path("/x/z")
    monkeypatch.setenv(state.ENV_PROJECT, "/from/env")
    assert state.requested_project([]) == Path("/from/env")


def test_server_restart_reopens_the_last_project(open_app, project, monkeypatch):
    open_app()  # opened through PROXY_LABELER_PROJECT
    monkeypatch.delenv(state.ENV_PROJECT)
    at = AppTest.from_file(MAIN, default_timeout=60).run()  # a new session, as after a restart
    assert at.session_state["project_dir"] == str(project.root)
    assert not at.exception


def make_demo_assets(folder: Path) -> dict[str, str]:
    truth = write_image_folder(folder / "images", per_class=6, flat=True)
    with open(folder / demo.GROUND_TRUTH, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class"])
        writer.writerows(sorted(truth.items()))
    return truth


def test_first_start_opens_the_demo_with_a_batch_and_the_oracle(tmp_path, monkeypatch):
    truth = make_demo_assets(tmp_path / "assets")
    monkeypatch.setenv(demo.ENV_DEMO_ASSETS, str(tmp_path / "assets"))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    project = storage.open_project(tmp_path / "demo_project")
    assert storage.class_names(project) == ["blue", "green", "red"]  # fixed, sorted order
    batch = [i for i, _ in storage.round_items(project, storage.current_round(project).id)]
    assert len(batch) == storage.load_settings(project).initial_size == 17  # shrunk to fit 18 images
    [view] = at.get("bidi_component")
    assert json.loads(view.proto.json)["classes"] == ["blue", "green", "red"]  # keys 1, 2, 3

    at.button(key="oracle").click().run()
    labels = storage.current_labels(project)
    assert all(labels[i] == truth[storage.get_item(project, i).path] for i in batch)
    assert {storage.label_history(project, i)[-1].source for i in batch} == {"oracle"}
    assert jobs.round_state(project).kind in ("running", "spent")  # the batch is done: nothing left waiting


def test_bundled_demo_assets_are_complete_and_hide_the_class():
    truth = demo.ground_truth(demo.DEMO_ASSETS)
    assert Counter(truth.values()) == {name: 200 for name in demo.demo_classes(demo.DEMO_ASSETS)}
    images = sorted(p.name for p in (demo.DEMO_ASSETS / "images").iterdir())
    assert images == sorted(truth)
    assert not any(name in path for path in truth for name in set(truth.values()))
    size = sum(p.stat().st_size for p in demo.DEMO_ASSETS.rglob("*") if p.is_file())
    assert size < 10 * 2**20


def test_markdown_escape_shows_user_text_literally():
    assert widgets.md("<b>x</b>") == r"\<b\>x\</b\>"
    assert widgets.md("[a](http://e)") == r"\[a\]\(http\:\/\/e\)".replace(r"\/", "/")
    assert widgets.md("**bold** $x$") == r"\*\*bold\*\* \$x\$"
