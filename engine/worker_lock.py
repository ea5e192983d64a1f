"""The worker lock: an exclusive `flock` on PROJECT/worker.lock, standard library only.

It is the one sign that a project's worker is alive: the kernel releases it
when the process ends, however it ends, so it is never stale. The worker
command takes it before importing anything heavy, and writes its pid into
the file for whoever wants to name it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = "worker.lock"


class WorkerLock:
    """Exclusive, non-blocking `flock` on PROJECT/worker.lock; `acquire()` says whether we got it."""

    def __init__(self, project_dir: str | Path):
        self.path = Path(project_dir) / LOCK_FILE
        self.handle: IO[str] | None = None

    def acquire(self, *, sign: bool = True) -> bool:
        """True when this process now holds the lock, False when another one does. `sign`: write this
        process's pid into the file (a worker does; a mere probe leaves the last worker's pid)."""
        handle = open(self.path, "a+")  # noqa: SIM115  (held open: the flock lives as long as the handle)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        if sign:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
        self.handle = handle
        return True

    def release(self) -> None:
        """Give the lock back (closing the file releases the flock)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def worker_alive(project_dir: str | Path) -> bool:
    """True when some process holds the project's worker lock."""
    lock = WorkerLock(project_dir)
    if lock.acquire(sign=False):
        lock.release()
        return False
    return True


def lock_holder(project_dir: str | Path) -> int | None:
    """The pid the lock's holder wrote, or None (no holder yet, or an unreadable file)."""
    try:
        return int((Path(project_dir) / LOCK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
