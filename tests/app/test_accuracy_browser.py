"""The Progress and Target pages in headless Chromium on a small project whose validation set was labeled
while rounds trained (issue 25): the curve's points carry their n and say they were measured on fewer images,
and the target is compared with the last proxy only on the same images (docs/screenshots/progress.png and
target.png are copies of this test's screenshots)."""

from __future__ import annotations

import pytest

import storage
from app import jobs
from app.live_server import CHROMIUM, streamlit_server
from engine.worker import run_worker
from tests.support import label_by_folder, label_queue, make_app_project, write_image_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]
SCREENSHOTS = ("progress.png", "target.png")  # under the test's tmp_path


def test_accuracies_carry_their_n_and_the_target_is_compared_on_the_same_images(chromium, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "start_worker", lambda project: None)  # the rounds run here, one at a time
    write_image_folder(tmp_path / "images", classes=6, per_class=10)
    project = make_app_project(
        tmp_path / "project",
        tmp_path / "images",
        classes=6,
        budget=30,
        initial_size=6,
        round_size=6,
        validation_size=24,
        proxy_steps=3,
        target_steps=60,
    )
    validation = storage.validation_ids(project)
    for labeled in (3, 5, 12):  # the validation set labeled while the rounds train
        label_queue(project)
        label_by_folder(project, validation[:labeled])
        jobs.advance(project)
        assert run_worker(project.root, once=True) == 1
    label_by_folder(project, validation)
    jobs.start_target(project)
    assert run_worker(project.root, once=True) == 1
    rounds = storage.list_rounds(project)
    assert [r.proxy_val_n for r in rounds] == [None, 3, 5, 12]
    proxy = jobs.last_target_result(project)["proxy"]
    assert (proxy["round"], proxy["n_validation"]) == (3, 24)

    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    with streamlit_server(project.root, tmp_path / "home", tmp_path / "server.log") as url:
        try:
            page.goto(url + "/progress")
            page.wait_for_selector("text=/Each point/")
            page.wait_for_selector("canvas, svg.marks")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1000)  # the charts' first paint
            page.screenshot(path=str(tmp_path / SCREENSHOTS[0]), full_page=True)
            text = page.inner_text("body")
            assert "Today 24 validation images are labeled" in text
            assert "Hollow points (the proxies that chose batches 2, 3 and 4)" in text  # batch 1: random
            assert "The black diamond is the proxy that chose batch 4, measured again when the target trained: " in text
            assert "of 24 validation images" in text

            page.goto(url + "/target")
            page.wait_for_selector("text=/measured again on the same 24 images/")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / SCREENSHOTS[1]), full_page=True)
            text = page.inner_text("body")
            assert "Proxy, same images" in text and "pts vs proxy" in text
            assert "The proxy that chose batch 4" in text
            assert "of 24 validation images; 95% interval" in text
        finally:
            context.close()
