"""What a round and a label cost in SQLite on a large project: `python -m benchmarks.bench_storage`.

Builds a project of N items (rows only, no image files: these queries never
open one), with a validation set, rounds of queued items and a label or a
skip on most queued items, then times, median of `--repeats`:

- `read_round_inputs`: everything a round reads, one read transaction;
- the same reads one function (and one connection) at a time, as rounds made
  them before the snapshot (the baseline);
- the label path: `set_label` then `current_label` (what a key press commits
  and the page reads back);
- the Labels page's `labeled_items` and the open queue of the newest round.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import storage
from engine.machine import machine_description
from storage.project import writing


def build(root: Path, n: int, rounds: int, per_round: int) -> storage.Project:
    images = root / "images"
    images.mkdir(parents=True)
    settings = storage.Settings(
        image_root=str(images),
        classes=tuple(f"class_{c}" for c in range(10)),
        budget=rounds * per_round,
        round_size=per_round,
        initial_size=per_round,
        validation_size=min(1_000, n // 10),
    )
    project = storage.create_project(root / "project", settings)
    now = time.time()
    with writing(project) as db:
        db.conn.executemany(
            "INSERT INTO items (id, path, sha256, width, height, mode, status, added_at) "
            "VALUES (?, ?, ?, 32, 32, 'RGB', 'ok', ?)",
            [(i, f"img_{i:07d}.png", f"{i:064x}", now) for i in range(1, n + 1)],
        )
    validation = set(storage.reserve_validation(project))
    rng = random.Random(0)
    free = [i for i in range(1, n + 1) if i not in validation]
    rng.shuffle(free)
    for r in range(rounds):
        batch = free[r * per_round : (r + 1) * per_round]
        made = storage.create_round(
            project, strategy="random", selector="bench", item_ids=batch, scores=[0.0] * len(batch), n_labeled=0
        )
        done = batch if r < rounds - 1 else batch[: per_round // 2]  # the newest round is half labeled
        with writing(project) as db:
            db.conn.executemany(
                "INSERT INTO labels (item_id, class_id, kind, annotator, created_at, round_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (i, None, "skip", "bench", now, made.id)
                    if k % 20 == 0
                    else (i, 1 + k % 10, "label", "bench", now, made.id)
                    for k, i in enumerate(done)
                ],
            )
    return project


def reads_one_by_one(project: storage.Project) -> None:
    """The reads a round made before `read_round_inputs`, each on its own connection."""
    storage.load_settings(project)
    latest = storage.current_round(project)
    storage.budget_left(project)
    storage.round_queue(project, latest.id)
    storage.training_labels(project)
    storage.validation_labels(project)
    storage.usable_items(project)
    taken = (
        set(storage.labeled_ids(project))
        | set(storage.validation_ids(project))
        | set(storage.skipped_ids(project))
        | set(storage.queued_ids(project))
    )
    assert taken


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        project = build(Path(tmp), args.items, args.rounds, args.per_round)
        print(f"{machine_description()}")
        built_s = time.perf_counter() - started
        print(f"built {args.items:,} items, {args.rounds} rounds of {args.per_round} in {built_s:.1f} s")
        latest = storage.current_round(project)
        open_item = storage.round_queue(project, latest.id)[0][0]
        figures = {}
        if hasattr(storage, "read_round_inputs"):
            inputs = storage.read_round_inputs(project)
            print(f"inputs: {len(inputs.training):,} training labels, {len(inputs.taken):,} taken")
            figures["read_round_inputs (one transaction)"] = median_ms(
                lambda: storage.read_round_inputs(project), args.repeats
            )
        figures["the same reads one by one (baseline)"] = median_ms(lambda: reads_one_by_one(project), args.repeats)
        names = [f"class_{c}" for c in range(10)]
        counter = iter(range(10**9))
        figures["set_label + current_label"] = median_ms(
            lambda: (
                storage.set_label(project, open_item, names[next(counter) % 10]),
                storage.current_label(project, open_item),
            ),
            args.repeats,
        )
        figures["labeled_items (Labels page)"] = median_ms(lambda: storage.labeled_items(project), args.repeats)
        figures["round_queue of the newest round"] = median_ms(
            lambda: storage.round_queue(project, latest.id), args.repeats
        )
        for name, ms in figures.items():
            print(f"{name:45s} {ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
