"""Start `streamlit run server.py` (the app and its image route) on a free localhost port, for browser
tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url}")


@contextlib.contextmanager
def streamlit_server(
    project_dir: Path | None, home: Path, log_path: Path, demo_dir: Path | None = None
) -> Iterator[str]:
    """Yield the URL of a Streamlit server on `project_dir` (None: the demo, built in `demo_dir`);
    stop it and the project's worker afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_LABELER_")}
    env.update(PROXY_LABELER_HOME=str(home), PROXY_LABELER_ROOTS=os.pathsep.join([tempfile.gettempdir(), str(home)]))
    if project_dir is not None:
        env.update(PROXY_LABELER_PROJECT=str(project_dir), PROXY_LABELER_DEMO_ASSETS=str(home / "no_demo"))
    if demo_dir is not None:
        env["PROXY_LABELER_DEMO_DIR"] = str(demo_dir)
    # address, headless, telemetry and error details come from .streamlit/config.toml (cwd=REPO), as for users
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "server.py"), "--server.port", str(port)]
    with open(log_path, "ab") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
        for folder in (project_dir, demo_dir):
            if folder is not None:
                stop_worker(folder)


def stop_worker(project_dir: Path) -> None:
    """End the worker process the app started for this project (it would idle-exit later anyway)."""
    from engine.worker_lock import lock_holder, worker_alive

    pid = lock_holder(project_dir)
    if pid is not None and worker_alive(project_dir):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
