"""Durability and concurrency across real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import storage

WORKER = Path(__file__).with_name("label_worker.py")


def _start(project, annotator, class_name, ids, repeat, go_file=None) -> subprocess.Popen:
    args = [sys.executable, str(WORKER), str(project.root), annotator, class_name, ",".join(map(str, ids)), str(repeat)]
    if go_file is not None:
        args.append(str(go_file))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_every_acknowledged_label_survives_sigkill(project):
    worker = _start(project, "killed", "dog", range(1, 21), repeat=1000)
    acked = []
    for line in worker.stdout:
        acked.append(int(line.split()[1]))
        if len(acked) == 25:
            break
    worker.send_signal(signal.SIGKILL)
    rest, _ = worker.communicate(timeout=30)
    acked += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack ")]
    assert worker.returncode == -signal.SIGKILL
    reopened = storage.open_project(project.root)
    labels = storage.current_labels(reopened)
    assert set(acked) <= set(labels)
    for item_id in set(acked):
        assert sum(e.annotator == "killed" for e in storage.label_history(reopened, item_id)) >= acked.count(item_id)


def test_two_processes_labeling_at_once_lose_nothing(project, tmp_path):
    go = tmp_path / "go"
    repeat = 3
    a_ids, b_ids = list(range(1, 13)), list(range(7, 19))  # 7..12 overlap
    workers = [_start(project, "ana", "cat", a_ids, repeat, go), _start(project, "bob", "dog", b_ids, repeat, go)]
    go.touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "locked" not in err
        assert len(out.splitlines()) == repeat * 12
    for item_id in range(1, 19):
        history = storage.label_history(project, item_id)
        by = {name: sum(e.annotator == name for e in history) for name in ("ana", "bob")}
        assert by == {"ana": repeat * (item_id in a_ids), "bob": repeat * (item_id in b_ids)}
        assert storage.current_label(project, item_id) == history[-1].class_name
    assert sum(storage.label_counts(project).values()) == 18
    assert storage.current_labels(project)[1] == "cat" and storage.current_labels(project)[18] == "dog"
    assert storage.unlabeled_ids(project) == [19, 20]
