"""UI latency in headless Chromium against a running `streamlit run` server.

Figures (medians and p90 over repeated presses; machines are shared and noisy,
so each figure comes with a baseline measured in the same run):

- key press -> label committed: the label row's commit time (SQLite) minus
  the moment the key was sent;
- key press -> next image shown: until the focused file name in the DOM
  changes; baseline: an arrow key (moves the cursor, commits nothing);
- server script time of one label (AppTest, no browser): the fragment rerun;
- 32-image grid: switching Focus -> Grid until all 32 thumbnails are decoded
  by the browser, cold (thumbnails not yet cached) and warm; baseline: Grid -> Focus;
- first start: server start with no project -> first demo image shown
  (ingest of the 2,000 demo images + the random round 0), unless --no-demo.

Usage: .venv/bin/python benchmarks/bench_ui.py [--presses 40] [--no-demo]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import storage  # noqa: E402
from tests.app.live_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402

NAME = ".st-key-focus-info strong"
GRID_IMAGES = ".st-key-grid img"
DEMO_IMAGES = REPO / "assets" / "demo" / "images"


def summary(values_s: list[float]) -> str:
    ms = sorted(v * 1000 for v in values_s)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"median {statistics.median(ms):6.0f} ms   p90 {p90:6.0f} ms   max {ms[-1]:6.0f} ms   (n={len(ms)})"


def bench_project(root: Path, batch: int) -> storage.Project:
    """A project over the 2,000 demo images whose first batch has `batch` images; no automatic rounds."""
    from engine.round import run_initial_round

    settings = storage.Settings(image_root=str(DEMO_IMAGES), classes=tuple(f"class {i}" for i in range(10)),
                                budget=400, initial_size=batch, round_size=32, validation_size=0,
                                proxy_steps=30, auto_next_round=False, device="cpu")
    project = storage.create_project(root, settings)
    storage.ingest(project)
    run_initial_round(project)
    return project


def wait_name_change(page, old: str) -> None:
    page.wait_for_function("([sel, old]) => { const e = document.querySelector(sel); "
                           "return e && e.innerText !== old; }", arg=[NAME, old], polling="raf")


def key_presses(page, project: storage.Project, presses: int) -> dict[str, list[float]]:
    commit, shown, arrow = [], [], []
    for i in range(presses):
        name = page.inner_text(NAME)
        sent = time.time()
        page.keyboard.press("ArrowRight")
        wait_name_change(page, name)
        arrow.append(time.time() - sent)
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("([sel, want]) => document.querySelector(sel)?.innerText === want",
                               arg=[NAME, name], polling="raf")
        item = next(it.id for it in storage.usable_items(project) if it.path == name)
        sent = time.time()
        page.keyboard.press(str((i % 9) + 1))
        wait_name_change(page, name)
        shown.append(time.time() - sent)
        commit.append(storage.label_history(project, item)[-1].created_at - sent)
    return {"commit": commit, "shown": shown, "arrow": arrow}


def grid_switch(page, to: str) -> float:
    sent = time.time()
    page.locator(".st-key-view").get_by_text(to, exact=True).click()
    if to == "Grid":
        page.wait_for_function(f"""() => {{ const imgs = [...document.querySelectorAll('{GRID_IMAGES}')];
            return imgs.length === 32 && imgs.every(i => i.complete && i.naturalWidth > 0); }}""", polling="raf")
    else:
        page.wait_for_selector(NAME)
    return time.time() - sent


def grid_figures(page, repeats: int) -> dict[str, list[float]]:
    cold = [grid_switch(page, "Grid")]
    warm, focus = [], []
    for _ in range(repeats):
        focus.append(grid_switch(page, "Focus"))
        warm.append(grid_switch(page, "Grid"))
    grid_switch(page, "Focus")
    return {"cold": cold, "warm": warm, "focus": focus}


def server_script_time(project: storage.Project, presses: int) -> list[float]:
    """One label as the server runs it (fragment rerun incl. the commit), without a browser."""
    from streamlit.testing.v1 import AppTest

    os.environ["PROXY_LABELER_PROJECT"] = str(project.root)
    try:
        at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60).run()
        times = []
        for i in range(presses):
            started = time.perf_counter()
            at.button(key=f"class-{i % 9}").click().run()
            times.append(time.perf_counter() - started)
    finally:
        os.environ.pop("PROXY_LABELER_PROJECT")
    return times


def first_start(sync_api, work: Path) -> float:
    """Server start with no project and no demo built yet -> first demo image on screen."""
    started = time.time()
    with streamlit_server(None, work / "home_demo", work / "server_demo.log", demo_dir=work / "demo") as url, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector(NAME, timeout=120_000)
        elapsed = time.time() - started
        browser.close()
    return elapsed


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--grid-repeats", type=int, default=5)
    parser.add_argument("--no-demo", action="store_true", help="skip the first-start figure")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit("needs /usr/bin/chromium (apt-get install chromium)")
    from playwright import sync_api

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project = bench_project(work / "project", batch=max(args.presses + 1, 33))
        with streamlit_server(project.root, work / "home", work / "server.log") as url, \
                sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector(NAME)
            page.wait_for_function("() => window.__proxyLabelerKeys === true")
            grid = grid_figures(page, args.grid_repeats)
            keys = key_presses(page, project, args.presses)
            browser.close()
        print(f"key press -> label committed (SQLite):    {summary(keys['commit'])}")
        print(f"key press -> next image shown (DOM):      {summary(keys['shown'])}")
        print(f"baseline: arrow key -> next image shown:  {summary(keys['arrow'])}")
        print(f"ratio label / arrow (median):             "
              f"{statistics.median(keys['shown']) / statistics.median(keys['arrow']):.2f}")
        other = bench_project(work / "project2", batch=args.presses + 1)
        print(f"server script time of one label (AppTest): {summary(server_script_time(other, args.presses))}")
        print(f"32-image grid shown, cold thumbnails:     {summary(grid['cold'])}")
        print(f"32-image grid shown, warm:                {summary(grid['warm'])}")
        print(f"baseline: grid -> focus view:             {summary(grid['focus'])}")
        if not args.no_demo:
            print(f"first start -> first demo image shown:    {first_start(sync_api, work):.1f} s")


if __name__ == "__main__":
    main()
