"""UI latency of the labeling view in headless Chromium against `streamlit run server.py`.

Timings are taken inside the page, on the browser's clock, from the key's
`keydown` event (so Playwright's own round trip is not counted):

- rapid keys: N presses `--gap-ms` apart (digits, S, U mixed) -> label rows
  written and whether each landed on the item displayed at its press;
- key press -> next image visible: the focus `<img>` shows the next item,
  decoded, at the next animation frame; baseline: an arrow key;
- key press -> label acknowledged: the view's pending count back to 0 (the
  event committed in SQLite and the acknowledgement rendered);
- 64-tile grid: Focus -> Grid until all 64 tiles are decoded (cold, warm);
  20 tiles selected, one key -> acknowledged;
- labels per minute of a scripted annotator who waits for each image and
  either types the class (ground truth) or accepts the proxy's guess (Enter);
- last label of a batch -> next batch visible, over `--batches` demo batches
  labeled in the browser by an annotator who takes `--pace` seconds per image
  (the next round starts early, while the batch is finished);
- first start: server start with no project -> first demo image shown.

Usage: .venv/bin/python benchmarks/bench_ui.py [--presses 40] [--batches 3] [--no-demo]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import storage
from app import demo
from app.live_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from engine.machine import machine_description

REPO = Path(__file__).resolve().parents[1]

SHOWN = "img.pl-focus-img"
VIEW = "document.querySelector('[data-testid=\"stBidiComponentIsolated\"]')?.shadowRoot"
# In-page probes: the item shown at each keydown, and the time until the next image is visible
# and until every pending event is acknowledged.
PROBE = f"""window.__presses = [];
window.__shownAt = () => {{ const img = {VIEW}?.querySelector("{SHOWN}");
  return img ? Number(img.dataset.itemId) : null; }};
window.addEventListener("keydown", (e) => {{ window.__presses.push([e.key, window.__shownAt(), e.timeStamp]); }}, true);
window.__measure = (before) => new Promise((resolve) => {{
  const t0 = window.__presses[window.__presses.length - 1][2];
  let visible = null;
  const tick = () => {{
    const view = {VIEW};
    const img = view?.querySelector("{SHOWN}");
    if (visible === null && img && Number(img.dataset.itemId) !== before && img.complete && img.naturalWidth > 0)
      visible = performance.now() - t0;
    const pending = view?.querySelector(".pl-sync")?.dataset.pending;
    if (visible !== null && pending === "0") resolve([visible, performance.now() - t0]);
    else requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
}});
window.__acked = () => new Promise((resolve) => {{
  const t0 = window.__presses[window.__presses.length - 1][2];
  const tick = () => ({VIEW}?.querySelector(".pl-sync")?.dataset.pending === "0")
    ? resolve(performance.now() - t0) : requestAnimationFrame(tick);
  requestAnimationFrame(tick);
}});
window.__nextBatch = (ids) => new Promise((resolve) => {{
  const t0 = window.__presses[window.__presses.length - 1][2];
  const tick = () => {{
    const img = {VIEW}?.querySelector("{SHOWN}");
    (img && !ids.includes(Number(img.dataset.itemId)) && img.complete && img.naturalWidth > 0)
      ? resolve(performance.now() - t0) : requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
}});
window.__gridReady = (n) => new Promise((resolve) => {{
  const t0 = performance.now();
  const tick = () => {{
    const imgs = [...({VIEW}?.querySelectorAll(".pl-tile img") || [])];
    (imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0))
      ? resolve(performance.now() - t0) : requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
}});"""


def summary(values_ms: list[float]) -> str:
    ms = sorted(values_ms)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"median {statistics.median(ms):6.0f} ms   p90 {p90:6.0f} ms   max {ms[-1]:6.0f} ms   (n={len(ms)})"


def make_project(root: Path, **overrides) -> storage.Project:
    """A project over a copy of the bundled demo images (beside `root`: the server only opens image folders
    under its allowed roots) with the demo's settings, no validation set, on the CPU."""
    from engine.initial import run_initial_round

    images = root.parent / "demo_images"
    if not images.exists():
        shutil.copytree(demo.demo_settings().image_root, images)
    settings = dataclasses.replace(
        demo.demo_settings(), image_root=str(images), validation_size=0, device="cpu", **overrides
    )
    project = storage.create_project(root, settings)
    storage.ingest(project)
    run_initial_round(project)
    return project


def truth_of(project: storage.Project) -> dict[int, str]:
    by_path = demo.ground_truth()
    return {item.id: by_path[item.path] for item in storage.usable_items(project)}


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.add_init_script(PROBE)
    page.goto(url)
    page.wait_for_selector(SHOWN)
    page.fill("input[aria-label='Annotator name']", "bench")
    page.keyboard.press("Enter")
    page.mouse.click(5, 500)
    return page


def label_rows(project: storage.Project) -> int:
    db = storage.connect(project)
    try:
        return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    finally:
        db.close()


def rapid_keys(page, project: storage.Project, presses: int, gap_ms: int) -> dict:
    keys = list("1231s2u3121")
    keys = [keys[i % len(keys)] for i in range(presses)]
    before = label_rows(project)
    start = len(page.evaluate("window.__presses"))
    for key in keys:
        page.keyboard.press(key)
        time.sleep(gap_ms / 1000)
    page.evaluate("window.__acked()")
    logged = page.evaluate("window.__presses")[start:]
    rows = label_rows(project) - before
    classes = storage.load_settings(project).classes
    on_shown = sum(
        1
        for key, item, _ in logged
        if key in "123s"
        and item is not None
        and any(
            (e.skipped if key == "s" else e.class_name == classes[int(key) - 1]) and e.annotator == "bench"
            for e in storage.label_history(project, item)
        )
    )
    return {"presses": len(logged), "rows": rows, "on_shown": on_shown, "labels": sum(k in "123s" for k in keys)}


def press_latencies(page, presses: int) -> dict[str, list[float]]:
    visible, acked, arrow = [], [], []
    for i in range(presses):
        before = page.evaluate("window.__shownAt()")
        page.keyboard.press("ArrowRight")
        arrow.append(page.evaluate("(b) => window.__measure(b)", before)[0])
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"() => window.__shownAt() === {before}", polling="raf")
        page.keyboard.press(str(i % 9 + 1))
        shown_ms, ack_ms = page.evaluate("(b) => window.__measure(b)", before)
        visible.append(shown_ms)
        acked.append(ack_ms)
        time.sleep(0.2)
    return {"visible": visible, "acked": acked, "arrow": arrow}


def grid_figures(page, repeats: int) -> dict[str, list[float]]:
    out = {"cold": [], "warm": [], "bulk": []}
    for i in range(repeats + 1):
        page.keyboard.press("g")
        out["cold" if i == 0 else "warm"].append(page.evaluate("window.__gridReady(64)"))
        page.keyboard.press("f")
        page.wait_for_selector(SHOWN)
    page.keyboard.press("g")
    page.evaluate("window.__gridReady(64)")
    tiles = page.locator(".pl-tile")
    for start in range(0, min(repeats, 3) * 20, 20):
        tiles.nth(start).click()
        tiles.nth(start + 19).click(modifiers=["Shift"])
        page.keyboard.press("4")
        out["bulk"].append(page.evaluate("window.__acked()"))
    page.keyboard.press("f")
    return out


def annotator_speed(page, project: storage.Project, n: int, accept: bool) -> tuple[float, int, int]:
    """Labels per minute when each image is labeled as soon as it is visible; (rate, done, guess right)."""
    truth = truth_of(project)
    right = 0
    started = time.perf_counter()
    for _ in range(n):
        item = page.evaluate("window.__shownAt()")
        guess = page.inner_text(".pl-guess strong") if page.locator(".pl-guess").count() else None
        right += guess == truth[item]
        page.keyboard.press("Enter" if accept and guess else key_for(project, item, truth))
        page.evaluate("(b) => window.__measure(b)", item)
    return n / (time.perf_counter() - started) * 60, n, right


def key_for(project: storage.Project, item_id: int, truth: dict[int, str]) -> str:
    position = list(storage.load_settings(project).classes).index(truth[item_id])
    return "1234567890"[position]


def batch_turnaround(page, project: storage.Project, batches: int, pace_s: float) -> list[float]:
    """An annotator labels each image `pace_s` after it appears; from the keydown of a batch's last
    label to the first image of the next batch visible (the early round was made meanwhile, or not)."""
    truth = truth_of(project)
    waits = []
    for _ in range(batches):
        batch = [i for i, _ in storage.round_items(project, storage.open_rounds(project)[0].id)]
        timed = False
        while True:
            item = page.evaluate("window.__shownAt()")
            open_items = [i for i in batch if storage.current_label(project, i) is None]
            if not open_items:  # its last label went in while the view raced ahead: nothing to time
                print("  the batch was finished without a timed last label", flush=True)
                break
            if item not in batch:  # the view moved past an open item of this batch: say so
                print(f"  shown item {item} is not in the batch; {len(open_items)} of it open", flush=True)
            last = open_items == [item]
            time.sleep(pace_s)
            page.keyboard.press(key_for(project, item, truth))
            if last:
                timed = True
                break
            page.evaluate("(b) => window.__measure(b)", item)  # shown and committed: storage is current
        if timed:
            waits.append(page.evaluate("(ids) => window.__nextBatch(ids)", batch))
    return waits


def first_start(sync_api, work: Path) -> float:
    """Server start with no project and no demo built yet -> first demo image on screen."""
    started = time.time()
    with (
        streamlit_server(None, work / "home_demo", work / "server_demo.log", demo_dir=work / "demo") as url,
        sync_api.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector(SHOWN, timeout=120_000)
        elapsed = time.time() - started
        browser.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--rapid", type=int, default=50)
    parser.add_argument("--gap-ms", type=int, default=50)
    parser.add_argument("--grid-repeats", type=int, default=5)
    parser.add_argument("--speed", type=int, default=30, help="images per annotator-speed run")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--pace", type=float, default=2.0, help="seconds the scripted annotator looks at an image")
    parser.add_argument("--no-demo", action="store_true", help="skip the first-start figure")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit("needs /usr/bin/chromium (apt-get install chromium)")
    from playwright import sync_api

    print(f"{machine_description()}  load: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keys_project = make_project(
            work / "keys", initial_size=max(args.rapid + args.presses + 70, 130), auto_next_round=False
        )
        with (
            streamlit_server(keys_project.root, work / "home", work / "server.log") as url,
            sync_api.sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = open_page(browser, url)
            grid = grid_figures(page, args.grid_repeats)
            rapid = rapid_keys(page, keys_project, args.rapid, args.gap_ms)
            keys = press_latencies(page, args.presses)
            browser.close()
        print(
            f"rapid keys: {rapid['presses']} presses {args.gap_ms} ms apart -> {rapid['rows']} label rows "
            f"({rapid['labels']} labels/skips, the rest undos); every label on the item shown: "
            f"{rapid['on_shown'] == rapid['labels']}"
        )
        print(f"key press -> next image visible:           {summary(keys['visible'])}")
        print(f"baseline: arrow key -> next image visible:  {summary(keys['arrow'])}")
        print(f"key press -> label acknowledged:            {summary(keys['acked'])}")
        print(f"64-tile grid visible, first time:           {summary(grid['cold'])}")
        print(f"64-tile grid visible, images cached:        {summary(grid['warm'])}")
        print(f"20 tiles selected, one key -> acknowledged: {summary(grid['bulk'])}")

        rounds_project = make_project(work / "rounds", budget=20 * (args.batches + 4))
        with (
            streamlit_server(rounds_project.root, work / "home2", work / "server2.log") as url,
            sync_api.sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = open_page(browser, url)
            waits = batch_turnaround(page, rounds_project, args.batches, args.pace)
            typed = annotator_speed(page, rounds_project, min(args.speed, 10), accept=False)
            accepted = annotator_speed(page, rounds_project, min(args.speed, 9), accept=True)
            browser.close()
        print(f"last label of a batch -> next batch visible ({args.pace:.1f} s per image): {summary(waits)}")
        print(f"scripted annotator, typing:    {typed[0]:5.0f} labels/min ({typed[1]} images)")
        print(
            f"scripted annotator, accepting: {accepted[0]:5.0f} labels/min ({accepted[1]} images; "
            f"the guess was right for {accepted[2]} of them, {typed[2]} of {typed[1]} in the typed run)"
        )
        if not args.no_demo:
            print(f"first start -> first demo image shown:    {first_start(sync_api, work):.1f} s")


if __name__ == "__main__":
    main()
