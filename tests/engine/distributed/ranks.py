"""Run a function in several processes joined by gloo, as torchrun would start them, and collect each rank's
return value. The function must be importable (a module-level function): each rank is a fresh process."""

from __future__ import annotations

import os
import pickle
import socket
import time
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    fn, size: int, folder: Path, *args, timeout_s: float = 120, env: dict | None = None, may_die: bool = False
) -> list:
    """fn(*args) in `size` processes (RANK 0..size-1 of one gloo group); their results in rank order.

    A rank that raises fails the call with its traceback; one that does not finish in timeout_s too. With
    `may_die`, a rank that exits without a result (killed) or hangs past timeout_s (then killed) gives None
    instead of failing the call."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    context = mp.get_context("spawn")
    procs = [
        context.Process(target=_rank, args=(rank, size, port, folder, fn, args, env or {}), daemon=True)
        for rank in range(size)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    alive = [i for i, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    errors = [(folder / f"rank{r}.error").read_text() for r in range(size) if (folder / f"rank{r}.error").exists()]
    if errors:
        raise AssertionError("a rank failed:\n" + "\n".join(errors))
    if alive and not may_die:
        raise AssertionError(f"ranks {alive} did not finish within {timeout_s} s")
    results = [folder / f"rank{r}.pkl" for r in range(size)]
    return [pickle.loads(path.read_bytes()) if path.exists() or not may_die else None for path in results]


def _rank(rank: int, size: int, port: int, folder: Path, fn, args, env: dict) -> None:
    import traceback

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size), "MASTER_ADDR": "127.0.0.1"})
    os.environ["MASTER_PORT"] = str(port)
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)
    from engine.distributed import world

    try:
        world.join()
        result = fn(*args)
        (folder / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    except BaseException:
        (folder / f"rank{rank}.error").write_text(f"rank {rank}:\n{traceback.format_exc()}")
    finally:
        world.leave()
