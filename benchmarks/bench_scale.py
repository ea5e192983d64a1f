"""A million images on one machine, stage by stage: `python -m benchmarks.bench_scale --images N --out FILE.json`.

Generates N small JPEGs of mixed sizes (24-64 px a side, about one in seven
grayscale, four classes of simple generated patterns with random colours and
noise) in a work folder, then runs every stage of the product on them, each in
a process of its own so that its peak RSS (`ru_maxrss`: resident pages, the
memory-mapped pool files included) is the stage's alone:

- `ingest`: `storage.ingest`, what `proxy-labeler` and the Project page run;
- `pool_cache`: `engine.round.load_project_pool`, the pool cache build (decode
  every image once, engine.pool_cache);
- `embed`: the pool's embeddings with an SSL-shaped backbone (the `ssl`
  backbone's architecture with random weights; `engine.representation.
  project_embeddings` -> `engine.embeddings.pool_embeddings`);
- `round`: a linear-proxy round as the worker runs it (`engine.round.run_round`:
  the snapshot, the pool, the cached embeddings, a linear head on the labels of
  round 0 and the validation set, the pool's scores, the batch written), in a
  fresh process (the first round a worker makes), then a second one in the same
  process (`warm_seconds`);
- `snapshot`: the storage read of a round, `storage.read_round_inputs`;
- `kcenter` (b = 1,000) and `kcenter_10000`: `engine.selection.kcenter.
  k_center_greedy` on the pool's embeddings, the labeled, validation and queued
  items as centers;
- `keypress`: what one key press commits, `storage.set_labels` of one item (the
  call `app.labeling` makes), the median of many, in seconds.

The JSON: `{"images": N, "machine": ..., "stages": {name: {"seconds", "peak_rss_mb", ...}}}`
(`workers_peak_rss_mb`: the largest decoding worker, for the stages that start
them). `--pin CORE` runs everything on one core (the decoding workers
included), `--threads` sets torch's threads. The work folder (default: a new
one under the system's temporary folder) is removed at the end unless `--keep`;
images already generated there for the same N are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("stripes", "bars", "disc", "checks")
STAGES = (
    "generate",
    "ingest",
    "pool_cache",
    "embed",
    "label",
    "round",
    "snapshot",
    "kcenter",
    "kcenter_10000",
    "keypress",
)
GOALS = ("ingest", "pool_cache", "embed", "round", "kcenter", "keypress")  # the stage names the JSON must hold
KCENTER_BUDGETS = {"kcenter": 1_000, "kcenter_10000": 10_000}
PER_FOLDER = 1_000  # images per sub-folder
GRAY_SHARE = 1 / 7
KEYPRESSES = 200
MB = 1024.0  # ru_maxrss is in KiB on Linux


# ---------------------------------------------------------------- the images


def _pattern(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [h, w] in 0..1: the class's shape, at a random scale and phase."""
    y, x = np.ogrid[:h, :w]
    period = rng.uniform(4.0, 12.0)
    phase = rng.uniform(0.0, 2 * np.pi)
    if kind == 0:  # horizontal stripes
        return (0.5 + 0.5 * np.sin(2 * np.pi * y / period + phase)) * np.ones((1, w), np.float32)
    if kind == 1:  # vertical bars
        return (0.5 + 0.5 * np.sin(2 * np.pi * x / period + phase)) * np.ones((h, 1), np.float32)
    if kind == 2:  # a disc
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = rng.uniform(0.2, 0.4) * min(h, w)
        return (((y - cy) ** 2 + (x - cx) ** 2) < r * r).astype(np.float32)
    cell = int(period)  # a checkerboard
    return (((y // cell) + (x // cell)) % 2).astype(np.float32)


def generate(images: Path, n: int, seed: int = 0) -> int:
    """Write n JPEGs under images/<class>/<folder>/; returns how many (the count of a folder already complete)."""
    from PIL import Image

    marker = images / ".generated"
    if marker.is_file() and marker.read_text().strip() == str(n):
        return n
    if images.exists():
        shutil.rmtree(images)
    rng = np.random.default_rng(seed)
    noise = rng.integers(-12, 13, (512, 512, 3)).astype(np.float32)
    kinds = rng.integers(0, len(CLASSES), n)
    sides = rng.integers(24, 65, (n, 2))
    gray = rng.random(n) < GRAY_SHARE
    made: set[Path] = set()
    for k in range(n):
        h, w = int(sides[k, 0]), int(sides[k, 1])
        kind = int(kinds[k])
        fg, bg = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
        oy, ox = rng.integers(0, 512 - 64, 2)
        mask = _pattern(kind, h, w, rng)[:, :, None]
        pixels = bg + mask * (fg - bg) + noise[oy : oy + h, ox : ox + w]
        array = np.clip(pixels, 0, 255).astype(np.uint8)
        folder = images / CLASSES[kind] / f"{k // PER_FOLDER:04d}"
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        image = Image.fromarray(array.mean(axis=2).astype(np.uint8), "L") if gray[k] else Image.fromarray(array)
        image.save(folder / f"{k:07d}.jpg", "JPEG", quality=90)
    marker.write_text(str(n))
    return n


# ---------------------------------------------------------------- the project


def plan(n: int) -> dict[str, int]:
    """Labels and batch sizes for a pool of n: 1,000 labels in round 0 and batches of 1,000 at a million."""
    labels = min(1_000, max(10, n // 20))
    return {
        "initial_size": labels,
        "round_size": labels,
        "validation_size": min(500, max(4, n // 50)),
        "budget": 10 * labels,
    }


def project_dir(workdir: Path) -> Path:
    return workdir / "project"


def _project(workdir: Path):
    import storage

    return storage.open_project(project_dir(workdir))


def _truth(project) -> dict[int, str]:
    """item id -> class name, from the class folder each image was generated in."""
    import storage

    return {item.id: item.path.split("/", 1)[0] for item in storage.usable_items(project)}


def _label(project, item_ids, truth: dict[int, str]) -> None:
    import storage

    by_class: dict[str, list[int]] = {}
    for item_id in item_ids:
        by_class.setdefault(truth[item_id], []).append(int(item_id))
    for name, ids in by_class.items():
        storage.set_labels(project, ids, name, annotator="bench", source="typed")


# ---------------------------------------------------------------- the stages (each runs in its own process)


def stage_generate(args) -> dict:
    started = time.perf_counter()
    generate(args.workdir / "images", args.images, args.seed)
    return {"seconds": time.perf_counter() - started}


def stage_ingest(args) -> dict:
    import storage

    if project_dir(args.workdir).exists():
        shutil.rmtree(project_dir(args.workdir))
    settings = storage.Settings(
        image_root=str(args.workdir / "images"),
        classes=CLASSES,
        proxy="linear",
        backbone="ssl",
        initial_strategy="random",
        strategy="least_confidence",
        device="cpu",
        **plan(args.images),
    )
    project = storage.create_project(project_dir(args.workdir), settings)
    started = time.perf_counter()
    report = storage.ingest(project)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "added": report.added,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "files_per_s": (report.added + report.duplicates + report.rejected) / seconds,
    }


def stage_pool_cache(args) -> dict:
    from engine.round import load_project_pool

    project = _project(args.workdir)
    started = time.perf_counter()
    pool = load_project_pool(project)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pool": len(pool), "image_size": pool.image_size, "images_per_s": len(pool) / seconds}


def _ssl_shaped_backbone(project, image_size: int):
    """The `ssl` backbone's architecture with random weights, saved as the project's backbone."""
    import dataclasses

    from engine.embeddings import load_ssl_backbone, save_ssl_backbone
    from engine.models import model_from_config
    from engine.pool_cache import load_pool_cache
    from engine.ssl import SSLConfig, backbone_config, ssl_input_size

    backbone = load_ssl_backbone(project.models_dir)
    if backbone is not None:
        return backbone
    pool = load_pool_cache(project.cache_dir, image_size)
    config = backbone_config(SSLConfig(), ssl_input_size(image_size))
    model = model_from_config(config, seed=0).eval()
    meta = {
        "model_config": dataclasses.asdict(config),
        "normalization": [list(pool.mean), list(pool.std)] if pool else [[0.5] * 3, [0.25] * 3],
        "steps": 0,
        "seconds": 0.0,
        "final_loss": None,
        "pool_size": len(pool) if pool else 0,
        "finished_at": time.time(),
        "note": "random weights (bench_scale)",
    }
    save_ssl_backbone(project.models_dir, model, meta)
    return load_ssl_backbone(project.models_dir)


def stage_embed(args) -> dict:
    from engine.representation import project_embeddings
    from engine.round import load_project_pool

    project = _project(args.workdir)
    started = time.perf_counter()
    pool = load_project_pool(project)
    load_s = time.perf_counter() - started
    backbone = _ssl_shaped_backbone(project, pool.image_size)
    started = time.perf_counter()
    rows = project_embeddings(project, backbone, pool, "cpu")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "pool_load_s": load_s,
        "dim": int(rows.shape[1]),
        "backbone_input": backbone.input_size,
        "images_per_s": len(rows) / seconds,
    }


def stage_label(args) -> dict:
    """Round 0 at random, every image of it and of the validation set labeled (set-up, not a goal)."""
    import storage
    from engine.initial import run_initial_round

    project = _project(args.workdir)
    started = time.perf_counter()
    made = run_initial_round(project)
    truth = _truth(project)
    queued = [item_id for item_id, _ in storage.round_items(project, made.id)]
    _label(project, queued + storage.validation_ids(project), truth)
    return {"seconds": time.perf_counter() - started, "labeled": len(storage.current_labels(project))}


def stage_round(args) -> dict:
    import storage
    from engine.round import run_round

    project = _project(args.workdir)
    started = time.perf_counter()
    made = run_round(project)
    seconds = time.perf_counter() - started
    batch = [item_id for item_id, _ in storage.round_items(project, made.id)]
    first = {"train_s": made.train_s, "score_s": made.score_s, "select_s": made.select_s, "size": len(batch)}
    _label(project, batch, _truth(project))
    started = time.perf_counter()
    again = run_round(project)
    return {
        "seconds": seconds,
        **first,
        "n_labeled": made.n_labeled,
        "warm_seconds": time.perf_counter() - started,
        "warm_n_labeled": again.n_labeled,
    }


def stage_snapshot(args) -> dict:
    import storage

    project = _project(args.workdir)
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        inputs = storage.read_round_inputs(project)
        times.append(time.perf_counter() - started)
    return {"seconds": statistics.median(times), "runs": times, "items": len(inputs.items), "taken": len(inputs.taken)}


def _kcenter(args, budget: int) -> dict:
    import storage
    from engine.embeddings import embedding_paths, load_ssl_backbone
    from engine.selection.kcenter import k_center_greedy

    project = _project(args.workdir)
    backbone = load_ssl_backbone(project.models_dir)
    rows_path, ids_path = embedding_paths(project.cache_dir, backbone)
    ids = np.load(ids_path)
    X = np.asarray(np.load(rows_path, mmap_mode="r"), dtype=np.float32)
    centers = (
        set(storage.labeled_ids(project)) | set(storage.validation_ids(project)) | set(storage.queued_ids(project))
    )
    labeled = np.searchsorted(ids, np.array(sorted(centers), dtype=np.int64))
    budget = min(budget, len(X) - len(labeled))
    started = time.perf_counter()
    picks = k_center_greedy(X, labeled, budget)
    return {
        "seconds": time.perf_counter() - started,
        "budget": budget,
        "centers": len(labeled),
        "dim": X.shape[1],
        "picked": len(picks),
    }


def stage_kcenter(args) -> dict:
    return _kcenter(args, KCENTER_BUDGETS["kcenter"])


def stage_kcenter_10000(args) -> dict:
    return _kcenter(args, KCENTER_BUDGETS["kcenter_10000"])


def stage_keypress(args) -> dict:
    """Labels saved one key press at a time; beside each, a 4 kB write and fsync in the same folder: the
    disk's own floor (a label is committed with synchronous = FULL: one fsync of the WAL)."""
    import storage

    project = _project(args.workdir)
    latest = storage.current_round(project)
    open_items = [item_id for item_id, _ in storage.round_queue(project, latest.id)][: args.keypresses]
    truth = _truth(project)
    times, syncs = [], []
    probe = project.root / "fsync_probe"
    os.sync()  # the earlier stages' writes go to disk first: else a label's fsync waits for them (20 ms, not 2)
    for item_id in open_items:
        started = time.perf_counter()
        storage.set_labels(project, [item_id], truth[item_id], annotator="bench", source="typed")
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        syncs.append(time.perf_counter() - started)
    probe.unlink(missing_ok=True)
    return {
        "seconds": statistics.median(times),
        "p90_s": float(np.percentile(times, 90)),
        "max_s": max(times),
        "presses": len(times),
        "fsync_s": statistics.median(syncs),
    }


RUNNERS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "generate": stage_generate,
    "ingest": stage_ingest,
    "pool_cache": stage_pool_cache,
    "embed": stage_embed,
    "label": stage_label,
    "round": stage_round,
    "snapshot": stage_snapshot,
    "kcenter": stage_kcenter,
    "kcenter_10000": stage_kcenter_10000,
    "keypress": stage_keypress,
}


def run_stage(args: argparse.Namespace) -> int:
    """In the stage's own process: run it, add its peak RSS, write stage_<name>.json in the work folder."""
    load = os.getloadavg()[0]
    result = RUNNERS[args.stage](args)
    result["load_1min"] = round(load, 2)  # at the start: the machine is shared
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / MB
    result["peak_rss_mb"] = round(own, 1)
    if workers:
        result["workers_peak_rss_mb"] = round(workers, 1)
    (args.workdir / f"stage_{args.stage}.json").write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------- the driver


def measure(args: argparse.Namespace, progress: Callable[[str], None] = print) -> dict:
    from engine.machine import machine_info

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's threads in the stages that import it
    stages: dict[str, dict] = {}
    for name in args.stages:
        command = [sys.executable, "-m", "benchmarks.bench_scale", "--stage", name, "--images", str(args.images)]
        command += ["--workdir", str(args.workdir), "--seed", str(args.seed), "--repeats", str(args.repeats)]
        command += ["--keypresses", str(args.keypresses)]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, env=env)
        result = json.loads((args.workdir / f"stage_{name}.json").read_text())
        result["process_s"] = round(time.perf_counter() - started, 2)
        stages[name] = result
        progress(f"{name:14s} {result['seconds']:9.3f} s  peak RSS {result['peak_rss_mb']:8.1f} MB")
    info = machine_info()
    info["pinned_cores"] = sorted(os.sched_getaffinity(0))
    info["torch_threads"] = args.threads or None
    return {
        "images": args.images,
        "machine": info,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": plan(args.images),
        "stages": stages,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, required=True, help="pool size N")
    parser.add_argument("--out", type=Path, help="the JSON (required unless --stage)")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--pin", type=int, help="run on this CPU core only (like taskset -c)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="snapshot reads (median)")
    parser.add_argument("--keypresses", type=int, default=KEYPRESSES, help="labels saved (median)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # run one stage (in a child process)
    args = parser.parse_args(argv)
    if args.stage is None and args.out is None:
        parser.error("--out is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage is not None:
        return run_stage(args)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})  # the stages' processes and their workers inherit it
    temporary = args.workdir is None
    args.workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))).resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        from engine.machine import machine_description

        print(machine_description(), flush=True)
        result = measure(args, lambda line: print(line, flush=True))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir if temporary else project_dir(args.workdir), ignore_errors=True)
            if not temporary:
                shutil.rmtree(args.workdir / "images", ignore_errors=True)
                for path in args.workdir.glob("stage_*.json"):
                    path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
