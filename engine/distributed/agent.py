"""`proxy-labeler stage-agent`: a machine that lends its processes to another machine's jobs.

With several machines (`--nnodes`), the machine whose worker runs the job announces each heavy stage in
the shared stage folder (`launch.ANNOUNCE`: the stage's folder and rendezvous id); every other machine
runs this agent, which starts its own torchrun for each stage announced, with the same rendezvous, so the
stage's ranks span all the machines. The stage folders must be on a file system every machine sees at the
same path (NFS, a cluster file system).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from engine.distributed.launch import ANNOUNCE, Launch, torchrun_argv

POLL_S = 0.5


def run_agent(launch: Launch, *, once: bool = False, poll_s: float = POLL_S, idle_exit_s: float | None = None) -> int:
    """Join every stage announced in `launch.stage_dir` until stopped; return the stages joined.

    once: return after the first stage. idle_exit_s: return after that long without a new stage."""
    if not launch.stage_dir:
        raise ValueError("the agent needs --stage-dir, the folder the job's machine announces its stages in")
    announced = Path(launch.stage_dir) / ANNOUNCE
    seen: str | None = None  # a stage whose folder is gone is over: only live ones are joined
    joined, idle_since = 0, time.monotonic()
    while True:
        stage = _read(announced)
        if stage.get("rdzv_id") not in (None, seen) and Path(stage["folder"]).is_dir():
            seen = stage["rdzv_id"]
            folder = Path(stage["folder"])
            with open(folder / f"agent-{time.time_ns()}.log", "wb") as log:
                env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if launch.cpu else {})}
                subprocess.run(
                    torchrun_argv(launch, folder, seen), stdout=log, stderr=subprocess.STDOUT, env=env, check=False
                )
            joined += 1
            idle_since = time.monotonic()
            if once:
                return joined
        elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
            return joined
        time.sleep(poll_s)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def main(args) -> int:
    """Entry point of `proxy-labeler stage-agent`."""
    from engine.distributed.launch import launch_from_args

    joined = run_agent(launch_from_args(args), once=args.once, idle_exit_s=args.idle_exit)
    print(f"joined {joined} stage(s)")
    return 0
