"""Worker memory and lifetime: what a worker holds while it waits, and how soon it follows the app out.

A stand-in for the Streamlit server (a child process of this script) builds nothing itself: it starts
the project's worker exactly as the app does (`engine.worker.ensure_worker`, `--parent-pid`), stays
alive while the worker runs one selection round on the demo project (2,000 CIFAR-10 images, the
demo settings), and then exits. Reported: the worker's resident memory (VmRSS, and its peak VmHWM)
idle after the round, and the seconds from the stand-in's exit to the worker's.

Usage: .venv/bin/python benchmarks/bench_worker.py [--hold 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import storage
from app import demo
from engine.machine import machine_description

REPO = Path(__file__).resolve().parents[1]

STAND_IN = """
import sys, time
from engine.worker import ensure_worker
print(ensure_worker(sys.argv[1], idle_exit_s=600), flush=True)
sys.stdin.readline()          # stay up until told to go
"""


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def prepared_project(folder: Path) -> storage.Project:
    """The demo project after round 0, its first batch and validation set labeled with the ground truth."""
    project = demo.ensure_demo(folder / "demo_project")
    batch = [item_id for item_id, _ in storage.round_queue(project, storage.current_round(project).id)]
    demo.oracle_label(project, batch + storage.validation_ids(project))
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the worker idles before the app goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = prepared_project(Path(tmp))
        job = storage.enqueue_job(project, "round")
        stand_in = subprocess.Popen(
            [sys.executable, "-c", STAND_IN, str(project.root)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        pid = int(stand_in.stdout.readline())
        started = time.monotonic()
        while storage.get_job(project, job.id).state in ("queued", "running"):
            time.sleep(0.2)
        done = storage.get_job(project, job.id)
        round_s = time.monotonic() - started
        time.sleep(args.hold)
        idle = memory_kib(pid)
        stand_in.stdin.close()
        stand_in.wait()
        gone_at = time.monotonic()
        while alive(pid):
            time.sleep(0.05)
        followed_s = time.monotonic() - gone_at
    acc = (done.result or {}).get("proxy_val_acc")
    print(machine_description())
    print(
        f"round job: {done.state} in {round_s:.1f} s (worker start included), proxy validation accuracy "
        f"{acc if acc is None else f'{acc:.1%}'}"
    )
    print(
        f"worker idle {args.hold:.0f} s after the round: VmRSS {idle['VmRSS'] / 1024:.0f} MiB, "
        f"peak VmHWM {idle['VmHWM'] / 1024:.0f} MiB"
    )
    print(f"worker exit after the app process exited: {followed_s:.2f} s")


if __name__ == "__main__":
    main()
