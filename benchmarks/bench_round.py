"""Round benchmark: one active-learning round's turnaround on the CIFAR-10 subset.

Unzips `../shared/datasets/cifar10/train.zip` (20,000 32x32 JPEGs) into a
temporary folder (or takes `--data`), ingests it into a fresh project,
times building the pool cache, lets an oracle label a random `--labeled`
batch, then times one round with the project's default proxy, split into
train, score and select, and tests the proxy it trained on the CIFAR test
subset (or `--data`'s sibling `test/` folder), so the timing comes with the
accuracy it bought. `python -m engine bench` runs it after the k-center
benchmark of `benchmarks.bench_select`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

import storage
from engine.machine import machine_description
from engine.round import load_project_pool, run_initial_round, select_next_batch
from engine.simulate import load_test_set
from engine.train import best_device, evaluate

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR_ZIP = REPO_ROOT.parent / "shared" / "datasets" / "cifar10" / "train.zip"
CIFAR_TEST_ZIP = CIFAR_ZIP.with_name("test.zip")


def main_all(args: argparse.Namespace) -> int:
    """`python -m engine bench`: the k-center benchmark, then the round benchmark (or `--only` one)."""
    print(machine_description(), flush=True)
    if args.only in (None, "kcenter"):
        from benchmarks import bench_select

        bench_select.run_kcenter_bench(args)
    if args.only in (None, "round"):
        run_round_bench(args)
    return 0


def run_round_bench(args: argparse.Namespace) -> dict:
    """Time the pool cache and one round; print the figures and return them (seconds)."""
    with tempfile.TemporaryDirectory(prefix="engine-bench-round-") as tmp:
        data = args.data or unzip(CIFAR_ZIP, Path(tmp) / "data")
        test = test_folder(data, Path(tmp) / "test")
        project = make_project(Path(tmp) / "project", data, args)
        figures = time_round(project, args.labeled, test)
    print_figures(figures)
    return figures


def unzip(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest`; return the folder of class subfolders inside it."""
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} not found; pass --data with an image folder of class subfolders")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(dest)
    inner = dest / "train"
    return inner if inner.is_dir() else dest


def test_folder(data: Path, dest: Path) -> Path | None:
    """The `test/` folder beside `data`, else the CIFAR test subset unzipped into `dest`, else None."""
    beside = Path(data).parent / "test"
    if beside.is_dir() and beside != Path(data):
        return beside
    if Path(data).name == "train" and CIFAR_TEST_ZIP.is_file():
        with zipfile.ZipFile(CIFAR_TEST_ZIP) as zipped:
            zipped.extractall(dest)
        return dest / "test"
    return None


def make_project(root: Path, data: Path, args: argparse.Namespace) -> storage.Project:
    """A project over `data` (class = first folder of each path), ingested, settings from the flags."""
    classes = tuple(sorted(p.name for p in Path(data).iterdir() if p.is_dir() and not p.name.startswith(".")))
    settings = storage.Settings(
        image_root=str(data),
        classes=classes,
        budget=args.labeled + args.round_size,
        round_size=args.round_size,
        initial_size=args.labeled,
        strategy=args.strategy,
        device=args.device,
        seed=0,
        auto_next_round=False,
    )
    defaults = storage.Settings(image_root=str(data), classes=classes)
    settings = dataclasses.replace(
        settings, proxy=args.proxy or defaults.proxy, proxy_training=args.proxy_training or defaults.proxy_training
    )
    project = storage.create_project(root, settings)
    started = time.perf_counter()
    report = storage.ingest(project)
    print(f"ingest: {report.added} images in {time.perf_counter() - started:.1f} s", flush=True)
    return project


def time_round(project: storage.Project, labeled: int, test: Path | None = None) -> dict:
    """Build the pool cache, oracle-label a random initial batch of `labeled`, time one round,
    and test its proxy on the images of `test/<class>/` (if given)."""
    started = time.perf_counter()
    pool = load_project_pool(project)
    cache_s = time.perf_counter() - started
    print(f"pool cache: {len(pool.item_ids)} images at {pool.image_size} px in {cache_s:.1f} s", flush=True)

    first = run_initial_round(project)
    paths = {item.id: item.path for item in storage.usable_items(project)}
    for item_id, _ in storage.round_queue(project, first.id):
        storage.set_label(project, item_id, paths[item_id].split("/")[0], annotator="oracle")

    settings = storage.load_settings(project)
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = select_next_batch(project)
    made = outcome.round
    total_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    test_acc = None
    if test is not None:
        images, labels = load_test_set(test, list(settings.classes), pool.image_size)
        test_acc = evaluate(outcome.model, images, labels, pool.normalization)
    started = time.perf_counter()
    reread = load_project_pool(project)
    np.asarray(reread.images).sum()  # touch every byte, as training and scoring do
    reload_s = time.perf_counter() - started
    return {
        "pool_size": len(pool.item_ids),
        "cache_reload_s": reload_s,
        "image_size": pool.image_size,
        "cache_s": cache_s,
        "labeled": made.n_labeled,
        "selected": len(storage.round_items(project, made.id)),
        "proxy": outcome.model.config.name,  # type: ignore[union-attr]  # a pixel proxy, built by engine.models
        "proxy_training": settings.proxy_training,
        "proxy_steps": outcome.train_steps,
        "proxy_test_acc": test_acc,
        "strategy": settings.strategy,
        "device": str(best_device(settings.device)),
        "train_s": made.train_s,
        "score_s": made.score_s,
        "select_s": made.select_s,
        "round_s": total_s,
        "round_cpu_s": cpu_s,
        "load_avg_1min": max(load_before, os.getloadavg()[0]),
        "train_steps_per_s": outcome.train_steps / made.train_s if made.train_s else None,
    }


def print_figures(f: dict) -> None:
    """The round figures as a small table, with each stage's share of the round."""
    print(
        f"\nround on {f['pool_size']} images at {f['image_size']} px, {f['labeled']} labeled, "
        f"{f['selected']} selected ({f['strategy']}); proxy {f['proxy']} ({f['proxy_training']}: "
        f"{f['proxy_steps']} steps), device {f['device']}"
    )
    if f["proxy_test_acc"] is not None:
        print(f"  proxy test accuracy: {f['proxy_test_acc']:.3f}")
    other = f["round_s"] - f["train_s"] - f["score_s"] - f["select_s"]
    for name, seconds in (
        ("train", f["train_s"]),
        ("score", f["score_s"]),
        ("select", f["select_s"]),
        ("other (reads, writes)", other),
        ("round, in all", f["round_s"]),
    ):
        print(f"  {name:<22} {seconds:7.2f} s  {100 * seconds / f['round_s']:5.1f} %")
    print(
        f"  proxy training: {f['train_steps_per_s']:.1f} steps/s; scoring: {f['pool_size'] / f['score_s']:.0f} images/s"
    )
    print(
        f"  CPU time of the round: {f['round_cpu_s']:.1f} s over {torch.get_num_threads()} threads; "
        f"1-min load average up to {f['load_avg_1min']:.1f} (the machine is shared)"
    )
    print(
        f"  pool cache: built (decoding every JPEG) in {f['cache_s']:.1f} s; a round's read of it "
        f"{f['cache_reload_s']:.2f} s ({f['cache_s'] / f['cache_reload_s']:.0f}x less)",
        flush=True,
    )
