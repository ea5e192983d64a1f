"""The Curate page in headless Chromium against `streamlit run server.py`: a curation run by the worker the
app starts, the kept and dropped grids, and a possibly mislabeled image relabeled with one key."""

from __future__ import annotations

import pytest

import storage
from app.live_server import CHROMIUM, streamlit_server
from tests.support import RGB, make_app_project, write_image_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]
VIEW = "document.querySelectorAll('[data-testid=\"stBidiComponentIsolated\"]')"
SCREENSHOTS = ("curate_run.png", "curate_reviewed.png")  # under the test's tmp_path; docs/screenshots/ copies


def test_curate_in_the_browser_and_relabel_a_suspect(chromium, tmp_path):
    truth = write_image_folder(tmp_path / "images", per_class=20, flat=True)
    project = make_app_project(tmp_path / "project", tmp_path / "images", proxy_steps=60, auto_next_round=False)
    wrong = []
    for item in storage.usable_items(project):
        name = truth[item.path]
        if not item.is_validation and len(wrong) < 2:
            name = RGB[(RGB.index(name) + 1) % 3]
            wrong.append(item.id)
        storage.set_label(project, item.id, name, annotator="ana")
    context = chromium.new_context(viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(180_000)
    with streamlit_server(project.root, tmp_path / "home", tmp_path / "server.log") as url:
        try:
            page.goto(url + "/curate")
            page.get_by_role("button", name="Curate the labeled set").click()
            # the worker ran the job, with the defaults (docs/coreset.md)
            page.wait_for_selector("text=/Run 1: kcenter, keeping 70%/")
            page.wait_for_selector(".pl-tile")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(tmp_path / SCREENSHOTS[0]), full_page=True)
            run = storage.latest_coreset_run(project)
            assert run.n_labeled == 57 and run.n_kept == 40  # 60 images, 3 for validation
            flagged = {s.item_id for s in storage.suspects(project, run.id)}
            assert set(wrong) <= flagged, flagged
            text = page.inner_text("body")
            assert f"{run.n_kept} of {run.n_labeled}" in text and "Possibly mislabeled" in text
            views = page.locator("[data-testid='stBidiComponentIsolated']")
            captions = views.first.locator(".pl-why").all_inner_texts()  # written on the kept grid's tiles
            assert captions[0].startswith("kept #1") and "from kept" in captions[0], captions
            suspects = views.nth(views.count() - 1)  # the last view on the page lists the suspects
            tile = suspects.locator(f".pl-tile[data-item-id='{wrong[0]}']")
            suspects.locator("input[aria-label='Annotator name']").fill("dan")
            suspects.locator("input[aria-label='Annotator name']").press("Enter")
            before = _label_rows(project)
            tile.click()
            right = truth[storage.get_item(project, wrong[0]).path]
            page.keyboard.press(str(RGB.index(right) + 1))
            for _ in range(100):
                if storage.current_label(project, wrong[0]) == right:
                    break
                page.wait_for_timeout(100)
            assert storage.current_label(project, wrong[0]) == right
            assert storage.label_history(project, wrong[0])[-1].annotator == "dan"
            page.wait_for_timeout(500)
            assert _label_rows(project) == before + 1  # the key went to the view clicked in, and only there
            page.reload()
            page.wait_for_selector("text=/1 changed/")
            page.get_by_text("Possibly mislabeled", exact=True).scroll_into_view_if_needed()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(tmp_path / SCREENSHOTS[1]))
            counts = storage.review_counts(project, run.id)
            assert (counts.reviewed, counts.changed) == (1, 1)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            context.close()


def _label_rows(project) -> int:
    db = storage.connect(project)
    try:
        return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    finally:
        db.close()
