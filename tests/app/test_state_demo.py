"""Which project opens: command line, last opened (server restart), or the demo; an unreadable one (as an
ordinary account); backbone files confined to the allowed roots; demo assets; safe text.

The image route is tested in test_images.py.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import storage
from app import demo, jobs, state, widgets
from tests.app.conftest import MAIN
from tests.support import as_nobody, nobody_dir, tiny_settings, write_image_folder

REPO = Path(MAIN).parent


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


PAGES_AS_NOBODY = """
import json, os, sys
from streamlit.testing.v1 import AppTest

found = {}
for page in ("app/page_label.py", "app/page_project.py"):
    at = AppTest.from_file(os.path.join(os.getcwd(), "streamlit_app.py"), default_timeout=60).run()
    if page != "app/page_label.py":
        at.switch_page(page).run()
    found[page] = {
        "exceptions": [e.message for e in at.exception],
        "errors": [e.value for e in at.error],
        "forms": sorted({b.proto.form_id for b in at.button if b.proto.form_id}),
    }
print(json.dumps(found))
"""


def test_an_unreadable_remembered_project_shows_why_and_the_forms_to_an_ordinary_account():
    """Root ignores permissions: the server runs here as uid 65534 without capabilities."""
    with nobody_dir() as base:
        write_image_folder(base / "images", classes=1, per_class=3, size=8, flat=True)
        project = storage.create_project(base / "project", tiny_settings(base / "images", budget=2, initial_size=1))
        home = base / "home"
        home.mkdir(mode=0o777)
        (home / state.LAST_PROJECT_FILE).write_text(str(project.root))
        project.root.chmod(0o000)
        env = {
            "HOME": str(home),
            state.ENV_HOME: str(home),
            state.ENV_ROOTS: str(base),
            demo.ENV_DEMO_DIR: str(base / "demo_project"),
            demo.ENV_DEMO_ASSETS: str(base / "no_demo_assets"),
        }
        found = as_nobody(PAGES_AS_NOBODY, env=env, timeout=300)
    for page, seen in found.items():
        assert seen["exceptions"] == [], page
        assert any("cannot be opened" in e and "permission denied" in e for e in seen["errors"]), page
        assert {"open", "create"} <= set(seen["forms"]), page


def test_backbone_files_outside_the_allowed_roots_are_refused_alike_whether_they_exist_or_not(tmp_path, monkeypatch):
    from engine.backbone_files import BackboneError

    inside, outside, own = tmp_path / "inside", tmp_path / "outside", tmp_path / "project"
    for folder in (inside, outside, own / "models"):
        folder.mkdir(parents=True)
    for path in (inside / "w.pth", outside / "w.pth", own / "models" / "w.pth"):
        path.write_bytes(b"weights")
    (inside / "link.pth").symlink_to(outside / "w.pth")  # a link inside that leads outside is outside
    monkeypatch.setenv(state.ENV_ROOTS, str(inside))

    def refusal(value: str) -> str:
        with pytest.raises(BackboneError) as caught:
            state.check_backbone(value, own)
        return str(caught.value).replace(value, "PATH")

    existing, missing = refusal(str(outside / "w.pth")), refusal(str(outside / "gone.pth"))
    assert "outside the folders this server may use" in existing
    assert existing == missing
    assert refusal("/etc/hostname") == refusal("/etc/no-such-file") == existing
    assert refusal(str(inside / "link.pth")) == existing
    # inside the roots or the project's own folder: a file is accepted, a missing one is "not found"
    assert state.check_backbone(str(inside / "w.pth"), own) == str(inside / "w.pth")
    assert state.check_backbone(str(own / "models" / "w.pth"), own) == str(own / "models" / "w.pth")
    with pytest.raises(BackboneError, match="not found"):
        state.check_backbone(str(inside / "gone.pth"), own)
    with pytest.raises(BackboneError, match="outside the folders"):
        state.check_backbone(str(own / "models" / "w.pth"))  # the project folder only counts for its project
    assert [state.check_backbone(v, own) for v in ("none", " ssl ")] == ["none", "ssl"]
