"""Benchmark storage.ingest on the 20,000-image CIFAR-10 JPEG subset.

Unzips the subset into a temporary folder, ingests it into a temporary
project (first run: every file decoded, hashed and inserted) and ingests
again (re-run: nothing new), then prints files/s and seconds. The baseline,
measured in the same run because the machine is shared and noisy, is the
same ingest with one in-process decoder (workers=1).

    .venv/bin/python benchmarks/bench_ingest.py [--zip PATH] [--workers N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import storage
from engine.machine import machine_description

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10" / "train.zip"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="ImageFolder zip of JPEGs")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: min(2, CPUs))")
    return parser.parse_args()


def _ingest_timed(project: storage.Project, workers: int | None) -> tuple[storage.IngestReport, float]:
    start = time.perf_counter()
    report = storage.ingest(project, workers=workers)
    return report, time.perf_counter() - start


def main() -> None:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as temp:
        images = Path(temp) / "images"
        start = time.perf_counter()
        with zipfile.ZipFile(args.zip) as archive:
            archive.extractall(images)
        unzip_s = time.perf_counter() - start
        settings = storage.Settings(image_root=str(images), classes=("a", "b"), budget=1, initial_size=1)
        project = storage.create_project(Path(temp) / "project", settings)
        report, first_s = _ingest_timed(project, args.workers)
        again, second_s = _ingest_timed(project, args.workers)
        baseline = storage.create_project(Path(temp) / "baseline", settings)
        _, baseline_s = _ingest_timed(baseline, 1)
    files = report.added + report.duplicates + report.rejected
    print(machine_description())
    print(f"unzip: {unzip_s:.1f} s")
    print(
        f"ingest: {files} files in {first_s:.1f} s = {files / first_s:.0f} files/s "
        f"(added {report.added}, duplicates {report.duplicates}, rejected {report.rejected})"
    )
    print(
        f"baseline (workers=1): {baseline_s:.1f} s = {files / baseline_s:.0f} files/s; "
        f"speed-up {baseline_s / first_s:.2f}x"
    )
    print(f"re-run: {again.already_known} known files in {second_s:.2f} s, added {again.added}")


if __name__ == "__main__":
    main()
