"""Subprocess used by the durability and concurrency tests.

    python tests/storage/label_worker.py PROJECT ANNOTATOR CLASS IDS REPEAT [GO_FILE]

Labels each id in IDS (comma-separated) with CLASS, REPEAT times over, and
prints "ack <item id> <pass>" after each set_label has returned. With
GO_FILE it waits for that file to exist first, so two workers start together.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import storage


def main(argv: list[str]) -> None:
    root, annotator, class_name, ids, repeat = argv[:5]
    if len(argv) > 5:
        while not Path(argv[5]).exists():
            time.sleep(0.005)
    project = storage.open_project(root)
    for turn in range(int(repeat)):
        for item_id in (int(i) for i in ids.split(",")):
            storage.set_label(project, item_id, class_name, annotator=annotator)
            print(f"ack {item_id} {turn}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
