"""Files written whole or not at all: the one way the project writes a file that something else reads."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest` to write; on a clean exit it is flushed to disk and moved
    onto `dest` in one step, so a reader sees the old file or the new one, never half of it.

    On an error the temporary file is removed and `dest` is untouched. The
    temporary name keeps `dest`'s suffix (np.save and torch.save add or
    check it), starts with a dot, and is unique per process and thread.

        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(data))
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.{threading.get_ident()}.tmp{dest.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
