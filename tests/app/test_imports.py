"""The Streamlit server never imports torch or FAISS, neither at the top level nor when a page draws:
every page rerun, every label acknowledgement would pay for it (docs/benchmarks.md, UI). Training runs
in the worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import storage
from app import jobs
from engine.worker import run_worker
from storage import accounts
from tests.app.conftest import MAIN

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "faiss")


def test_every_app_module_imports_without_torch_or_faiss():
    probe = (
        "import importlib, pkgutil, sys, app\n"
        "for module in pkgutil.iter_modules(app.__path__):\n"
        "    importlib.import_module('app.' + module.name)\n"
        "import engine.worker\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# Renders each page given on the command line in one AppTest session (one server process), then reports
# what drew and which heavy modules the process holds. The worker is never started (as in conftest).
# With accounts (PROXY_LABELER_HOME holds an admin), signed in as that admin: every page, Users too.
RENDER_PAGES = f"""
import json, sys
from streamlit.testing.v1 import AppTest
from app import auth, jobs, state
from storage import accounts
jobs.start_worker = lambda project: None
state.current_session = lambda: auth.Session(accounts.get_user("admin"))
main, pages = sys.argv[1], sys.argv[2:]
at = AppTest.from_file(main, default_timeout=60).run()
drawn = {{}}
for page in pages:
    at.switch_page(page).run()
    assert not at.exception, (page, [e.message for e in at.exception])
    drawn[page] = {{
        "title": [t.value for t in at.title],
        "selectboxes": [s.key for s in at.selectbox],
        "markdown": [m.value for m in at.markdown],
        "metrics": [m.label for m in at.metric],
    }}
print(json.dumps({{"drawn": drawn, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def test_drawing_every_page_of_a_trained_project_imports_neither_torch_nor_faiss(project, dataset):
    """Every page, with real content: a labeled round 0, a trained round 1, a trained target, the
    Project page's settings and create forms, the Users page. A call-time import (a form's model names read from
    engine.models, the target's model name from engine.config) fails this as a top-level one would."""
    truth = dataset[1]
    batch = [item_id for item_id, _ in storage.round_items(project, storage.current_round(project).id)]
    for item_id in batch + storage.validation_ids(project):  # round 0 and the validation set, labeled
        storage.set_label(project, item_id, truth[storage.get_item(project, item_id).path])
    jobs.advance(project)  # queues round 1, as the last label's callback does
    jobs.start_target(project)
    run_worker(project.root, once=True)  # runs both, here (the test process may import torch)
    assert storage.current_round(project).index == 1
    assert jobs.last_target_result(project)
    jobs.start_coreset(project, "forgetting", 1.0, True, "proxy")  # the Curate page shows a run
    run_worker(project.root, once=True)
    assert storage.latest_coreset_run(project) is not None

    pages = sorted(str(p.relative_to(REPO)) for p in (REPO / "app").glob("page_*.py"))
    home = project.root.parent / "home"
    accounts.add_user("admin", "admin", "a long enough password", actor="test", home=home)
    env = {**os.environ, "PROXY_LABELER_PROJECT": str(project.root), "PROXY_LABELER_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", RENDER_PAGES, MAIN, *pages],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    drawn = report["drawn"]
    assert sorted(drawn) == pages and len(pages) == 8
    assert all(page["title"] for page in drawn.values())
    project_page = drawn["app/page_project.py"]["selectboxes"]
    assert {"s-strategy", "s-proxy", "s-target", "c-strategy", "c-proxy", "c-target"} <= set(project_page)
    target_page = drawn["app/page_target.py"]
    assert any(text.startswith("Target model **") for text in target_page["markdown"])
    assert "Validation accuracy" in target_page["metrics"]
    assert "Kept" in drawn["app/page_curate.py"]["metrics"]
    assert report["heavy"] == []
