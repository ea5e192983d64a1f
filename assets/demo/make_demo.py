"""Rebuild the demo sample: 200 images per class from the CIFAR-10 train subset, kept as the original JPEGs.

File names are shuffled numbers so they do not reveal the class; the class of
each file is only in ground_truth.csv (read by evaluation and the oracle helper).
Usage: python assets/demo/make_demo.py ../shared/datasets/cifar10/train.zip
"""
from __future__ import annotations

import csv
import random
import sys
import zipfile
from pathlib import Path

PER_CLASS = 200
SEED = 0
HERE = Path(__file__).resolve().parent


def sample(names: list[str]) -> list[tuple[str, str]]:
    """(zip member, class) pairs: PER_CLASS per class, shuffled with a fixed seed."""
    by_class: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[2].lower().endswith(".jpg"):
            by_class.setdefault(parts[1], []).append(name)
    rng = random.Random(SEED)
    chosen = [(m, c) for c in sorted(by_class) for m in rng.sample(sorted(by_class[c]), PER_CLASS)]
    rng.shuffle(chosen)
    return chosen


def main(zip_path: str) -> None:
    images = HERE / "images"
    images.mkdir(exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        chosen = sample(archive.namelist())
        rows = []
        for number, (member, label) in enumerate(chosen):
            relative = f"{number:04d}.jpg"
            (images / relative).write_bytes(archive.read(member))
            rows.append((relative, label))
    with open(HERE / "ground_truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class"])
        writer.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1])
