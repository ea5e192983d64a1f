"""The labeling view in headless Chromium against `streamlit run server.py`: rapid keys with undo and
skip, a stale second tab, bulk grid labels, zoom, the annotator name, the next batch without a wait."""

from __future__ import annotations

import contextlib
import csv
import re
import time

import pytest

import storage
from app.live_server import CHROMIUM, streamlit_server
from tests.support import RGB, make_app_project, write_image_folder

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]
SHOWN = "img.pl-focus-img"  # Playwright's CSS selectors pierce the component's shadow root
VIEW = "document.querySelector('[data-testid=\"stBidiComponentIsolated\"]')?.shadowRoot"
# Logs, at every key press and before the view handles it, the item the view displayed.
PRESS_LOG = f"""window.__presses = [];
window.addEventListener("keydown", (e) => {{
  const img = {VIEW}?.querySelector("{SHOWN}");
  window.__presses.push([e.key, img ? Number(img.dataset.itemId) : null]);
}}, true);"""


@pytest.fixture(scope="module")
def big(tmp_path_factory, chromium):
    """A server on a project whose first batch has 70 images (automatic rounds off)."""
    tmp = tmp_path_factory.mktemp("big")
    truth = write_image_folder(tmp / "images", per_class=40, flat=True)
    project = make_app_project(tmp / "project", tmp / "images", budget=100, initial_size=70, auto_next_round=False)
    with streamlit_server(project.root, tmp / "home", tmp / "server.log") as url:
        yield project, url, truth, tmp


@contextlib.contextmanager
def opened(browser, url, tmp, name: str | None = "ana", ready: str = SHOWN):
    """A new tab (its own browser context: nothing remembered) on `url`, the Label page (the Labels page with
    `ready=".pl-tile"`), annotator typed in; a screenshot on failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.add_init_script(PRESS_LOG)
    try:
        page.goto(url)
        page.wait_for_selector(ready)
        if name:
            page.fill("input[aria-label='Annotator name']", name)
            page.keyboard.press("Enter")
        yield page
    except Exception:
        page.screenshot(path=str(tmp / "failure.png"))
        raise
    finally:
        context.close()


def shown(page) -> int:
    return int(page.get_attribute(SHOWN, "data-item-id"))


def wait_saved(page) -> None:
    page.wait_for_function(f"() => {VIEW}?.querySelector('.pl-sync')?.dataset.pending === '0'")


def label_rows(project) -> int:
    db = storage.connect(project)
    try:
        return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    finally:
        db.close()


def expected_states(presses, classes):
    """Replay the presses as a person means them: a digit labels and S skips the image on screen,
    U undoes this tab's latest action (restoring what that image was before)."""
    state, undo = {}, []
    for key, item in presses:
        if key.lower() == "u":
            item, before = undo.pop()
            state[item] = before
        else:
            undo.append((item, state.get(item)))
            state[item] = storage.SKIP if key == "s" else classes[int(key) - 1]
    return {item: value for item, value in state.items() if value is not None}


def test_fifty_rapid_presses_are_fifty_events_on_the_images_shown(chromium, big):
    project, url, _, tmp = big
    keys = list("1231s2u3121" * 5)[:50]
    before = label_rows(project)
    with opened(chromium, url, tmp) as page:
        for key in keys:
            page.keyboard.press(key)
            time.sleep(0.05)
        wait_saved(page)
        presses = page.evaluate("window.__presses")
    presses = [(key, item) for key, item in presses if key in keys]
    assert len(presses) == 50 and all(item is not None for _, item in presses)
    assert label_rows(project) - before == 50  # nothing dropped, nothing doubled
    want = expected_states(presses, RGB)
    got = {item: storage.current_label(project, item) for _, item in presses}
    assert {i: v for i, v in got.items() if v is not None} == want
    histories = {item: storage.label_history(project, item) for _, item in presses}
    assert {e.annotator for h in histories.values() for e in h} == {"ana"}
    assert {e.source for h in histories.values() for e in h if e.kind == "label"} == {"typed"}


def go_to(page, item: int) -> None:
    """Move the focus view to `item` with the arrow keys, as a person would."""
    for _ in range(100):
        if shown(page) == item:
            return
        page.keyboard.press("ArrowRight")
    raise AssertionError(f"item {item} is not in the view")


def test_a_stale_tab_labels_the_image_it_shows(chromium, big):
    project, url, _, tmp = big
    with opened(chromium, url, tmp) as first, opened(chromium, url, tmp, name="bob") as second:
        item = shown(first)
        assert shown(second) != item  # bob starts elsewhere (app/claims.py) ...
        go_to(second, item)  # ... and goes to ana's image
        first.keyboard.press("1")
        wait_saved(first)
        assert shown(first) != item
        second.keyboard.press("3")  # the stale tab still shows `item`
        wait_saved(second)
    history = storage.label_history(project, item)
    assert [(e.class_name, e.annotator) for e in history] == [("red", "ana"), ("blue", "bob")]


def test_two_annotators_at_once_label_different_images_and_see_what_the_other_holds(chromium, tmp_path):
    """A server of its own: the other tests' tabs hold images of `big` for two minutes after they close."""
    write_image_folder(tmp_path / "images", per_class=20, flat=True)
    project = make_app_project(tmp_path / "project", tmp_path / "images", budget=50, initial_size=50)
    with (
        streamlit_server(project.root, tmp_path / "home", tmp_path / "server.log") as url,
        opened(chromium, url, tmp_path, name="dora") as dora,
        opened(chromium, url, tmp_path, name="eve") as eve,
    ):
        two_annotators(project, dora, eve, tmp_path)


def two_annotators(project, dora, eve, tmp) -> None:
    """Six labels each, alternating: no image labeled by both; then eve sees which images dora holds."""
    assert shown(dora) != shown(eve)  # opened at once: neither has labeled, each holds its own images
    seen: dict[str, list[int]] = {"dora": [], "eve": []}
    for _ in range(6):
        for name, page, key in (("dora", dora, "1"), ("eve", eve, "2")):
            seen[name].append(shown(page))
            page.keyboard.press(key)
            time.sleep(0.15)
    wait_saved(dora)
    wait_saved(eve)
    assert not set(seen["dora"]) & set(seen["eve"])
    assert len(set(seen["dora"])) == len(set(seen["eve"])) == 6
    for name, items in seen.items():
        assert {storage.label_history(project, i)[-1].annotator for i in items} == {name}
    eve.keyboard.press("g")
    eve.wait_for_selector(".pl-tile")
    eve.wait_for_selector(".pl-tile.pl-held")  # dora's next images, tagged with her name
    tags = eve.evaluate(f"() => [...{VIEW}.querySelectorAll('.pl-held .pl-heldtag')].map((t) => t.textContent)")
    assert "dora" in tags and "eve" not in tags
    eve.wait_for_function(f"() => [...{VIEW}.querySelectorAll('.pl-tile img')].slice(0, 24).every((i) => i.complete)")
    eve.screenshot(path=str(tmp / "held.png"))  # looked at: docs/screenshots/label_held.png
    held = int(eve.locator(".pl-tile.pl-held").first.get_attribute("data-item-id"))
    eve.locator(".pl-tile.pl-held").first.dblclick()  # eve may still open it: she is told who is on it
    eve.wait_for_selector(SHOWN)
    assert shown(eve) == held
    assert eve.inner_text(".pl-heldmark") == "dora is labeling this image"


def test_grid_bulk_labels_a_dragged_and_shift_clicked_selection(chromium, big):
    project, url, _, tmp = big
    with opened(chromium, url, tmp) as page:
        page.click("button[data-mode='grid']")
        page.wait_for_selector(".pl-tile")
        page.wait_for_function(f"() => {VIEW}.querySelectorAll('.pl-tile img').length === 64")
        tiles = page.locator(".pl-tile")
        ids = [int(tiles.nth(i).get_attribute("data-item-id")) for i in range(12)]
        tiles.nth(0).click()
        tiles.nth(11).click(modifiers=["Shift"])  # a range: tiles 0..11
        assert page.inner_text(".pl-selcount") == "12 selected"
        page.keyboard.press("3")
        wait_saved(page)
        assert all(storage.current_label(project, i) == "blue" for i in ids)
        assert {storage.label_history(project, i)[-1].source for i in ids} == {"bulk"}
        assert page.locator(".pl-tile.pl-labeled").count() >= 12  # labeled tiles are marked

        box0, box3 = tiles.nth(12).bounding_box(), tiles.nth(15).bounding_box()
        page.mouse.move(box0["x"] + 5, box0["y"] + 5)
        page.mouse.down()
        page.mouse.move(box3["x"] + 5, box3["y"] + 5, steps=5)  # drag across four tiles
        page.mouse.up()
        dragged = [int(tiles.nth(i).get_attribute("data-item-id")) for i in range(12, 16)]
        assert page.inner_text(".pl-selcount") == "4 selected"
        was = {i: storage.current_label(project, i) for i in dragged}
        page.keyboard.press("s")
        wait_saved(page)
        assert all(storage.current_label(project, i) is storage.SKIP for i in dragged)
        page.keyboard.press("u")  # undo the whole bulk skip
        wait_saved(page)
        assert {i: storage.current_label(project, i) for i in dragged} == was


def test_zoom_shows_the_original_file(chromium, big):
    _, url, _, tmp = big
    with opened(chromium, url, tmp) as page:
        assert page.get_attribute(SHOWN, "src").endswith("/focus")
        page.keyboard.press("z")
        page.wait_for_function(f"() => {VIEW}.querySelector('{SHOWN}').src.endsWith('/full')")
        page.wait_for_function(f"() => {VIEW}.querySelector('{SHOWN}').naturalWidth === 12")
        page.click(SHOWN)  # a click zooms back out
        assert page.get_attribute(SHOWN, "src").endswith("/focus")


def test_no_label_without_an_annotator_name_and_the_name_reaches_the_csv(chromium, big):
    project, url, _, tmp = big
    before = label_rows(project)
    with opened(chromium, url, tmp, name=None) as page:
        item = shown(page)
        page.keyboard.press("2")
        page.wait_for_selector("text=Type your name first")
        assert label_rows(project) == before and shown(page) == item
        page.fill("input[aria-label='Annotator name']", "carol")
        page.keyboard.press("Enter")
        page.keyboard.press("2")
        wait_saved(page)
    assert storage.label_history(project, item)[-1].annotator == "carol"
    rows = list(csv.DictReader(storage.export_labels_csv(project, tmp / "labels.csv").open()))
    assert any(row["annotator"] == "carol" and row["class"] == "green" and row["source"] == "typed" for row in rows)


@pytest.mark.slow
def test_the_next_batch_arrives_without_a_reload_and_enter_accepts_the_guess(tmp_path, chromium):
    truth = write_image_folder(tmp_path / "images", per_class=8, flat=True)
    project = make_app_project(tmp_path / "project", tmp_path / "images")
    first = {i for i, _ in storage.round_items(project, storage.current_round(project).id)}
    with (
        streamlit_server(project.root, tmp_path / "home", tmp_path / "server.log") as url,
        opened(chromium, url, tmp_path) as page,
    ):
        validation = set(storage.validation_ids(project))  # mixed into the batch (validation as you go)
        round0 = storage.current_round(project).id
        while storage.round_queue(project, round0):
            item = shown(page)
            assert item in first | validation
            page.keyboard.press(str(RGB.index(truth[storage.get_item(project, item).path]) + 1))
            page.wait_for_function(f"() => {VIEW}?.querySelector('{SHOWN}')?.dataset.itemId !== '{item}'")
        # the worker trains the proxy and queues round 1; the view shows it, with guesses, without a reload
        page.wait_for_selector("text=/proxy \\d+% sure/", timeout=120_000)
        page.wait_for_selector(".pl-guess")
        item = shown(page)
        guess = page.inner_text(".pl-guess strong")
        page.keyboard.press("Enter")
        wait_saved(page)
    assert item not in first and storage.current_round(project).index == 1
    assert re.fullmatch(r"img_\d+\.png", storage.get_item(project, item).path)
    last = storage.label_history(project, item)[-1]
    assert (last.class_name, last.source, last.annotator) == (guess, "accepted", "ana")
    assert {i: storage.current_label(project, i) for i in first} == {
        i: truth[storage.get_item(project, i).path] for i in first
    }


def test_the_label_browser_relabels_in_place(chromium, big):
    project, url, _, tmp = big
    open_items = [i for i, _ in storage.round_queue(project, storage.current_round(project).id)]
    storage.set_label(project, open_items[-1], "red", annotator="ana")
    with opened(chromium, url + "/labels", tmp, name="dan", ready=".pl-tile") as page:
        tile = page.locator(".pl-tile.pl-labeled").first
        item = int(tile.get_attribute("data-item-id"))
        old = storage.current_label(project, item)
        new = next(name for name in RGB if name != old)
        tile.click()
        page.keyboard.press(str(RGB.index(new) + 1))
        wait_saved(page)
        page.wait_for_function(
            f"() => {VIEW}.querySelector('.pl-tile[data-item-id=\"{item}\"] .pl-badge')?.textContent === '{new}'"
        )
    history = storage.label_history(project, item)
    assert (history[-2].class_name, history[-1].class_name, history[-1].annotator) == (old, new, "dan")


def test_a_click_on_a_tile_takes_the_keyboard_from_a_filter(chromium, big):
    """Issue 25: after a filter was used, its text box kept the keyboard; a tile clicked then a class key did
    nothing. The click now gives the view the keys."""
    project, url, _, tmp = big
    open_items = [i for i, _ in storage.round_queue(project, storage.current_round(project).id)]
    storage.set_label(project, open_items[-2], "green", annotator="ana")
    with opened(chromium, url + "/labels", tmp, name="eve", ready=".pl-tile") as page:
        page.locator("[data-testid='stMultiSelect'] input").nth(0).click()  # the class filter takes the keyboard
        page.keyboard.press("Escape")
        assert page.evaluate("document.activeElement.tagName") == "INPUT"
        tile = page.locator(f".pl-tile[data-item-id='{open_items[-2]}']")
        tile.click()
        page.keyboard.press(str(RGB.index("blue") + 1))
        wait_saved(page)
        page.wait_for_function(
            f"() => {VIEW}.querySelector('.pl-tile[data-item-id=\"{open_items[-2]}\"] .pl-badge')?.textContent "
            "=== 'blue'"
        )
    assert storage.current_label(project, open_items[-2]) == "blue"


def test_a_double_click_on_a_tile_opens_it_in_the_focus_view(chromium, big):
    _, url, _, tmp = big
    with opened(chromium, url, tmp) as page:
        page.click("button[data-mode='grid']")
        page.wait_for_selector(".pl-tile")
        tile = page.locator(".pl-tile").nth(5)
        item = int(tile.get_attribute("data-item-id"))
        tile.dblclick()
        page.wait_for_selector(SHOWN)
        assert shown(page) == item


def open_tiles(page) -> list[int]:
    """Ids of the grid page's tiles, None for the labeled or skipped ones and those another annotator holds
    (app/claims.py: the other tests' tabs hold images for two minutes after they close)."""
    return page.evaluate(
        f"() => [...{VIEW}.querySelectorAll('.pl-tile')].map((t) => ['pl-labeled', 'pl-skipped', 'pl-held']"
        ".some((c) => t.classList.contains(c)) ? null : Number(t.dataset.itemId))"
    )


def test_f_from_the_grid_shows_the_next_open_image(chromium, big):
    """Issue 25: after labeling a selection in the grid, F showed the last tile (already labeled)."""
    project, url, _, tmp = big
    with opened(chromium, url, tmp) as page:
        page.click("button[data-mode='grid']")
        page.wait_for_selector(".pl-tile")
        tiles = open_tiles(page)
        start = next(i for i in range(len(tiles) - 3) if all(tiles[i : i + 4]))  # four open tiles in a row
        page.locator(".pl-tile").nth(start).click()
        page.locator(".pl-tile").nth(start + 2).click(modifiers=["Shift"])
        page.keyboard.press("2")
        wait_saved(page)
        assert all(storage.current_label(project, i) == "green" for i in tiles[start : start + 3])
        page.keyboard.press("f")
        page.wait_for_selector(SHOWN)
        assert shown(page) == tiles[start + 3]
        page.click("button[data-mode='grid']")
        page.locator(".pl-tile").nth(start + 1).click()  # a labeled tile, then the Focus button
        page.click("button[data-mode='focus']")
        assert shown(page) == tiles[start + 3]


STAGE = f"{VIEW}.querySelector('.pl-stage')"


def zoomed(page) -> dict:
    page.wait_for_function(
        f"() => {VIEW}.querySelector('{SHOWN}')?.src.endsWith('/full') && {VIEW}.querySelector('{SHOWN}').style.width"
    )
    return page.evaluate(
        f"() => {{ const s = {STAGE}; return {{left: s.scrollLeft, top: s.scrollTop, "
        "maxLeft: s.scrollWidth - s.clientWidth, maxTop: s.scrollHeight - s.clientHeight}; }"
    )


def test_zoom_opens_on_the_centre_or_on_the_point_clicked(chromium, big):
    """Issue 25: zoom opened at the top-left corner, so the subject could be out of view."""
    _, url, _, tmp = big
    with opened(chromium, url, tmp) as page:
        page.keyboard.press("z")
        at = zoomed(page)
        assert at["maxLeft"] > 100 and at["maxTop"] > 100  # a 12 px image magnified past the stage
        assert abs(at["left"] - at["maxLeft"] / 2) <= 2 and abs(at["top"] - at["maxTop"] / 2) <= 2
        page.keyboard.press("z")  # back to fit
        page.wait_for_function(f"() => {VIEW}.querySelector('{SHOWN}').src.endsWith('/focus')")
        box = page.locator(SHOWN).bounding_box()
        side = min(box["width"], box["height"])  # a square picture, letterboxed in the stage
        x = box["x"] + (box["width"] - side) / 2 + 0.7 * side
        y = box["y"] + (box["height"] - side) / 2 + 0.3 * side
        page.mouse.click(x, y)
        at = zoomed(page)
        width = at["maxLeft"] + page.evaluate(f"() => {STAGE}.clientWidth")
        height = at["maxTop"] + page.evaluate(f"() => {STAGE}.clientHeight")
        centre_x = at["left"] + (width - at["maxLeft"]) / 2
        centre_y = at["top"] + (height - at["maxTop"]) / 2
        assert abs(centre_x / width - 0.7) < 0.02 and abs(centre_y / height - 0.3) < 0.02


def test_the_show_filter_shows_its_three_choices(chromium, big):
    """Issue 25: the Labels page's "Show" filter was too narrow for its three choices."""
    _, url, _, tmp = big
    with opened(chromium, url + "/labels", tmp, name=None, ready=".pl-tile") as page:
        for kind in ("labeled", "skipped", "validation"):
            choice = page.get_by_text(kind, exact=True).first
            assert choice.is_visible()
            whole = choice.evaluate(
                "(e) => { const r = e.getBoundingClientRect(); let p = e.parentElement; "
                "while (p && getComputedStyle(p).overflow === 'visible') p = p.parentElement; "
                "const c = p ? p.getBoundingClientRect() : r; "
                "return e.scrollWidth <= e.clientWidth + 1 && r.left >= c.left - 1 && r.right <= c.right + 1; }"
            )
            assert whole, f"{kind} is cut off"


def test_a_digit_without_a_class_says_so(chromium, big):
    project, url, _, tmp = big
    before = label_rows(project)
    with opened(chromium, url, tmp) as page:
        page.keyboard.press("7")
        page.wait_for_selector("text=/No class on key 7: keys 1–3 label the 3 classes/")
        page.click("button[data-mode='grid']")
        page.wait_for_selector(".pl-tile")
        page.locator(".pl-tile").nth(2).click()
        page.keyboard.press("9")
        page.wait_for_selector("text=/No class on key 9/")
    assert label_rows(project) == before
