"""One way to run a function over many files in worker processes: ingest and the pool cache decode with it."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

POOL_THRESHOLD = 64  # fewer files than this: in this process (starting workers costs more)


def default_workers() -> int:
    """Worker processes when the caller does not say: two, or one on a one-core machine."""
    return min(2, os.cpu_count() or 1)


def process_map(
    function: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    *,
    files: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    chunksize: int = 1,
) -> Iterator[Any]:
    """`function(task)` for each task, in order: in `workers` processes, or in this process when
    `workers` <= 1, there is one task, or the tasks hold fewer than POOL_THRESHOLD `files` (default:
    one per task).

    Workers fork only from a single-threaded caller (forking a threaded process such as a Streamlit
    server can deadlock the child); otherwise they spawn, which re-imports `__main__`.
    """
    files = len(tasks) if files is None else files
    if workers <= 1 or len(tasks) <= 1 or files < POOL_THRESHOLD:
        yield from map(function, tasks)  # `initializer` sets up worker processes only
        return
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap(function, tasks, chunksize=chunksize)
