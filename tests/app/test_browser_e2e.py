"""End to end in headless Chromium: label the first batch with the keyboard, the real worker makes the next one."""
from __future__ import annotations

import re

import pytest

import storage
from tests.app.conftest import CLASSES, make_project, write_dataset
from tests.app.live_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]
NAME = ".st-key-focus-info strong"


def test_keyboard_labels_first_batch_and_next_batch_appears(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    truth = write_dataset(tmp_path / "images")
    project = make_project(tmp_path / "project", tmp_path / "images")
    first_batch = {storage.get_item(project, i).path: i
                   for i, _ in storage.round_items(project, storage.current_round(project).id)}
    pressed = {}
    with streamlit_server(project.root, tmp_path / "home", tmp_path / "server.log") as url, \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)     # generous: the 2 shared cores may be busy
        try:
            new_name = label_batch(page, url, first_batch, truth, pressed)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print((tmp_path / "server.log").read_text()[-3000:])
            print("labels:", storage.current_labels(project), "pressed:", pressed)
            raise
        finally:
            browser.close()
    assert new_name not in first_batch and re.fullmatch(r"img_\d+\.png", new_name)
    labels = storage.current_labels(project)
    assert {path: labels[item] for path, item in first_batch.items()} == pressed
    assert storage.current_round(project).index == 1


def label_batch(page, url, first_batch, truth, pressed) -> str:
    """Press each image's class key, wait for the next batch; return the first new image's name."""
    page.goto(url)
    page.wait_for_selector(NAME)
    page.wait_for_function("() => window.__proxyLabelerKeys === true")   # assets/keys.js installed
    for _ in range(len(first_batch)):
        name = page.inner_text(NAME)
        assert name in first_batch
        key = str(CLASSES.index(truth[name]) + 1)
        page.keyboard.press(key)
        pressed[name] = truth[name]
        # the next image replaces this one (after the last one: a validation image, while the round runs)
        page.wait_for_function("([sel, old]) => document.querySelector(sel)?.innerText !== old", arg=[NAME, name])
    # the worker trains the proxy and queues round 1; the page shows it without a reload
    page.wait_for_selector("text=/proxy \\d+% sure/", timeout=120_000)
    return page.inner_text(NAME)
