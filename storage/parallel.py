"""One way to run a function over many files in worker processes: ingest and the pool cache decode with it."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import types
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
    server can deadlock the child); otherwise they spawn, with `__main__` hidden when it is a script
    (`_no_main_script`).
    """
    files = len(tasks) if files is None else files
    if workers <= 1 or len(tasks) <= 1 or files < POOL_THRESHOLD:
        yield from map(function, tasks)  # `initializer` sets up worker processes only
        return
    method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
    context = multiprocessing.get_context(method)
    with _no_main_script() if method == "spawn" else contextlib.nullcontext():
        pool = context.Pool(workers, initializer=initializer, initargs=initargs)  # the workers start here
    with pool:
        yield from pool.imap(function, tasks, chunksize=chunksize)


_main_lock = threading.Lock()


@contextlib.contextmanager
def _no_main_script() -> Iterator[None]:
    """A spawned worker runs the parent's `__main__` file again (as `__mp_main__`) when it is a script. In the
    Streamlit server that is the page being drawn: every ingest worker ran the app bare (the "missing
    ScriptRunContext" lines in the server log, issue 25). The functions given to `process_map` live in
    importable modules, so the workers need no `__main__`: a bare one stands in while they start."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None):
        yield  # no main, or a module run with -m: spawn imports it by name, under its __name__ guard
        return
    with _main_lock:
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main
