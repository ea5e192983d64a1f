"""A prepared GPU check: `python -m benchmarks.gpu_check [--dry-run] [--doc PATH] [--json PATH]`.

`make gpu-check` runs it on a machine with a CUDA GPU: in at most 8 minutes it
measures, each figure beside the accuracy it bought, its sample size and a
baseline measured in the same run where one makes sense,

- `proxy`: the proxy trained with the recipe we ship (`engine.train.train`,
  the proxy's `engine.config.stage_config` at the balanced level, its time
  cap included) on the GPU, in training images/s, with its test accuracy;
  baseline: the CPU's own recipe on the same labels and test images;
- `score`: `engine.score.score_pool` of that proxy over a pool, images/s
  (with the GPU's flip test-time augmentation); baseline: the same model and
  the same work on the CPU;
- `kcenter`: `engine.selection.kcenter.k_center_greedy` (device cuda) at
  1,000,000 x 512 with b = 10,000; baseline: the CPU lazy path (FAISS) against
  the GPU on a smaller pool, with a check that both pick the same points;
- `target`: the target's recipe (the target's `stage_config`, trained as
  `engine.target` trains it, through `engine.distributed.launch.train_model`)
  at 5,000 and 50,000 labels, seconds and images/s, test accuracy;
- `ddp`: `train_model` under `launching(Launch(processes=N))` across the N
  GPUs against one process, or 'one GPU: DDP not measured';
- `gpu_tests`: `pytest -m gpu`, its counts.

It writes the doc (default docs/gpu.md) and the JSON (default docs/gpu.json)
after every stage, so a run cut short still leaves what it measured. Each
stage has a time cap inside a budget for the whole check (`--budget-s`); a
stage that would not fit is skipped and says so. Data: the CIFAR-10 JPEG
subset (train.zip, test.zip: `--data DIR`, else `shared/datasets/cifar10` in
the repository, else `../shared/datasets/cifar10` beside it) unzipped into a
temporary folder, or, when they are not there, generated images (the doc says
which). Nothing is downloaded.

`--dry-run` runs every stage at tiny sizes on the CPU in seconds (the CPU
stands in for the GPU, gloo for NCCL, and `pytest -m gpu` runs on
tests/engine/test_gpu.py only), writing the doc and JSON to a new temporary
folder unless `--doc` / `--json` say where: it proves the script runs, it
measures nothing. Without --dry-run on a machine without CUDA it refuses (exit
2). Exit 1 when a stage failed or a GPU test failed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("proxy", "score", "kcenter", "target", "ddp", "gpu_tests")
DATA_DIRS = (ROOT / "shared" / "datasets" / "cifar10", ROOT.parent / "shared" / "datasets" / "cifar10")
LEVEL = "balanced"  # the training level the check measures: the settings' default
NEEDED = ("torch", "numpy", "PIL", "sqlite_utils")  # without these nothing runs; faiss is needed by kcenter only
BUDGET_S = 440.0  # the whole check (make gpu-check adds start-up: 8 minutes in all)
# each stage's cap (seconds) and the least it needs to be worth starting; later stages' minimums are kept back
CAPS = {"proxy": 70.0, "score": 35.0, "kcenter": 130.0, "target": 120.0, "ddp": 60.0, "gpu_tests": 110.0}
MINIMUM = {"proxy": 30.0, "score": 8.0, "kcenter": 15.0, "target": 25.0, "ddp": 0.0, "gpu_tests": 30.0}
# The anchor (quoted, not measured here): airbench94 reaches 94 % on CIFAR-10 (50,000 training images,
# about 10 epochs) in 3.83 s on one A100, 3.29 s compiled (Jordan 2024, arXiv:2404.00498).
ANCHOR = {"accuracy": 0.94, "seconds": 3.83, "images": 50_000 * 10, "gpu": "A100", "source": "airbench94"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each stage is: the real check's sizes, or the dry run's."""

    per_class: tuple[int | None, int | None]  # CIFAR train / test images read per class (None: all)
    generated: tuple[int, int]  # train / test images when the CIFAR zips are not there
    proxy_labels: int
    fixed_steps: int | None  # None: the recipe's plan and time cap; else this many steps (the dry run)
    score_images: int
    cpu_score_images: int
    kcenter: tuple[int, int, int, int]  # pool, dimension, labeled, budget
    kcenter_probe: int  # budget of the first timed run, from which the full one is sized
    compare: tuple[int, int]  # pool and budget of the CPU lazy path against the device path
    target_labels: tuple[int, ...]
    ddp_labels: int
    ddp_steps: int
    test_paths: tuple[str, ...]  # what `pytest -m gpu` collects


REAL = Sizes(
    per_class=(None, None),
    generated=(20_000, 5_000),
    proxy_labels=20_000,
    fixed_steps=None,
    score_images=500_000,
    cpu_score_images=10_000,
    kcenter=(1_000_000, 512, 1_000, 10_000),
    kcenter_probe=100,
    compare=(100_000, 1_000),
    target_labels=(5_000, 50_000),
    ddp_labels=20_000,
    ddp_steps=300,
    test_paths=("tests",),
)
DRY = Sizes(
    per_class=(12, 6),
    generated=(120, 60),
    proxy_labels=100,
    fixed_steps=12,
    score_images=400,
    cpu_score_images=200,
    kcenter=(2_000, 32, 20, 40),
    kcenter_probe=5,
    compare=(1_000, 20),
    target_labels=(60, 150),
    ddp_labels=64,
    ddp_steps=4,
    test_paths=("tests/engine/test_gpu.py",),
)


@dataclasses.dataclass
class Check:
    """One run of the check: its settings, data, clock, results so far, and what a later stage reuses."""

    args: argparse.Namespace
    sizes: Sizes
    device: str  # "cuda", or "cpu" in a dry run
    started: float
    budget_s: float
    result: dict
    data: Any = None  # benchmarks.bench_training.Data
    proxy_model: Any = None  # the proxy stage's GPU model, scored by the score stage
    say: Callable[[str], None] = print

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def allowed(self, stage: str) -> float:
        """Seconds this stage may take: its cap, within the budget less what the stages after it need."""
        later = STAGES[STAGES.index(stage) + 1 :]
        return min(CAPS[stage], self.left() - sum(MINIMUM[s] for s in later if s in self.args.stages))

    def log(self, text: str) -> None:
        self.say(f"[{time.perf_counter() - self.started:6.1f} s] {text}")


# ---------------------------------------------------------------- data


def find_data(given: str | None) -> Path | None:
    """The folder holding train.zip and test.zip: `given`, else the first of DATA_DIRS that has both;
    None for generated images (`given` 'none', or nothing found)."""
    if given is not None:
        if given.lower() == "none":
            return None
        folder = Path(given)
        if not all((folder / name).is_file() for name in ("train.zip", "test.zip")):
            raise SystemExit(f"--data {given}: expected train.zip and test.zip in it")
        return folder
    return next((d for d in DATA_DIRS if all((d / n).is_file() for n in ("train.zip", "test.zip"))), None)


def unzip_split(archive: Path, dest: Path, per_class: int | None) -> None:
    """Extract `archive` (split/<class>/file) into `dest`; with `per_class`, only that many files of each class."""
    with zipfile.ZipFile(archive) as zipped:
        if per_class is None:
            zipped.extractall(dest)
            return
        taken: dict[str, int] = {}
        for member in sorted(m for m in zipped.namelist() if not m.endswith("/")):
            folder = member.rsplit("/", 1)[0]
            if taken.get(folder, 0) < per_class:
                taken[folder] = taken.get(folder, 0) + 1
                zipped.extract(member, dest)


def load_zips(folder: Path, per_class: tuple[int | None, int | None]):
    """The CIFAR subset (train.zip, test.zip in `folder`), unzipped into a temporary folder and decoded at
    the size the app would pick (`benchmarks.bench_training.load_data`)."""
    from benchmarks.bench_training import load_data

    with tempfile.TemporaryDirectory(prefix="gpu-check-data-") as tmp:
        for split, count in zip(("train", "test"), per_class, strict=True):
            unzip_split(folder / f"{split}.zip", Path(tmp), count)
        return load_data(Path(tmp))


def generated_data(n_train: int, n_test: int, seed: int = 0, size: int = 32):
    """Images of bench_scale's four generated pattern classes (random colours, noise), as uint8 arrays."""
    from benchmarks.bench_scale import CLASSES, _pattern
    from benchmarks.bench_training import Data
    from engine.pool_cache import channel_stats

    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        kinds = rng.integers(0, len(CLASSES), n)
        images = np.empty((n, 3, size, size), np.uint8)
        for k in range(n):
            mask = _pattern(int(kinds[k]), size, size, rng)[None]
            fg, bg = rng.uniform(0, 255, (3, 1, 1)), rng.uniform(0, 255, (3, 1, 1))
            images[k] = np.clip(bg + mask * (fg - bg) + rng.normal(0, 12, (3, size, size)), 0, 255)
        return images, kinds.astype(np.int64)

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    mean, std = channel_stats(train_x)
    return Data(train_x, train_y, test_x, test_y, list(CLASSES), (tuple(mean), tuple(std)), size)


def load(check: Check) -> dict:
    folder = find_data(check.args.data)
    started = time.perf_counter()
    where = "--data none" if check.args.data else f"no train.zip / test.zip in {' or '.join(map(str, DATA_DIRS))}"
    if folder is not None:
        try:
            check.data = load_zips(folder, check.sizes.per_class)
            source = {"source": "cifar10", "path": str(folder)}
        except Exception as exc:  # a broken zip: measure on generated images rather than nothing
            where = f"{folder} could not be read ({type(exc).__name__}: {exc})"
    if check.data is None:
        check.data = generated_data(*check.sizes.generated, seed=check.args.seed)
        source = {"source": "generated", "note": f"{where}: generated images of 4 pattern classes instead"}
    data = check.data
    return {
        **source,
        "train": len(data.train_y),
        "test": len(data.test_y),
        "classes": len(data.classes),
        "image_size": data.image_size,
        "seconds": round(time.perf_counter() - started, 2),
    }


# ---------------------------------------------------------------- training, as the product trains


def recipe(stage: str, device: str, dry: bool):
    """(model name, TrainConfig) the project trains `stage` with on `device` at the balanced level; a dry run
    fixes a few steps and skips the learned-something check (tiny sets learn nothing in 12 steps)."""
    import storage
    from engine.config import stage_config

    settings = storage.Settings(image_root="/", classes=("a", "b"), device=device)
    made = stage_config(settings, stage, level=LEVEL, steps=DRY.fixed_steps if dry else None)
    config = dataclasses.replace(made.train, check=False) if dry else made.train
    return made.model_name, config


def picks(data, n: int, seed: int) -> np.ndarray:
    """n training positions: a seeded shuffle of the set, repeated when n is larger than the set."""
    order = np.random.default_rng(seed).permutation(len(data.train_y))
    return np.resize(order, n)


def train_row(data, model_name: str, config, n: int, seed: int, *, processes: int = 1) -> dict:
    """Train `model_name` on n labels with `config` as the product does (`train_model`, under DDP with several
    processes); its seconds, steps, images/s and test accuracy. The trained model is under "model"."""
    from engine.distributed.launch import Launch, launching, train_model
    from engine.intervals import wilson
    from engine.models import build_model
    from engine.train import TrainingFailed, evaluate, plan, step_sizes

    chosen = picks(data, n, seed)
    images, labels = data.train_x[chosen], data.train_y[chosen]
    model = build_model(model_name, len(data.classes), data.image_size, seed=seed)
    seen: list = []
    failed = None
    started = time.perf_counter()
    try:
        with launching(Launch(processes=processes)):
            train_model(model, images, labels, config, data.normalization, on_progress=seen.append)
    except TrainingFailed as exc:
        failed = str(exc)
    seconds = time.perf_counter() - started
    batch, planned = plan(n, config, processes)
    per_step = float(np.mean(step_sizes(n, batch)))
    steps = seen[-1].step if seen else 0
    loop_s = seen[-1].seconds if seen else seconds
    row = {
        "model": model_name,
        "device": config.device,
        "processes": processes,
        "labels": n,
        "distinct": len(set(chosen.tolist())),
        "batch": batch,
        "steps": steps,
        "planned_steps": planned,
        "cap_s": config.max_seconds,
        "seconds": round(seconds, 2),
        "loop_seconds": round(loop_s, 2),
        "images_per_s": round(steps * per_step / max(loop_s, 1e-9), 1),
        "failed": failed,
        "model_object": model,
    }
    if failed is None:
        right = round(evaluate(model, data.test_x, data.test_y, data.normalization) * len(data.test_y))
        row.update(test_acc=right / len(data.test_y), test_n=len(data.test_y))
        row["test_interval"] = [round(v, 4) for v in wilson(right, len(data.test_y))]
    return row


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "model_object"}


# ---------------------------------------------------------------- the stages


def stage_proxy(check: Check) -> dict:
    dry, data, n = check.args.dry_run, check.data, check.sizes.proxy_labels
    name, config = recipe("proxy", check.device, dry)
    check.log(f"proxy: {name} on {n:,} labels, the {LEVEL} recipe on {check.device}")
    row = train_row(data, name, config, n, check.args.seed)
    check.proxy_model = row["model_object"]
    if row["failed"] is None:
        from engine.config import use_tta
        from engine.train import evaluate

        if use_tta(check.device):  # what a GPU round scores with
            row["test_acc_tta"] = evaluate(check.proxy_model, data.test_x, data.test_y, data.normalization, tta=True)
    cpu_name, cpu_config = recipe("proxy", "cpu", dry)
    check.log(f"proxy baseline: {cpu_name}, the CPU's {LEVEL} recipe on the same labels")
    base = train_row(data, cpu_name, cpu_config, n, check.args.seed)
    result = {"recipe": public(row), "baseline": public(base), "anchor": ANCHOR}
    if base["images_per_s"]:
        result["ratio"] = round(row["images_per_s"] / base["images_per_s"], 2)
    return result


def _score_rate(model, pool: np.ndarray, normalization, device: str, tta: bool) -> float:
    from engine.score import score_pool

    started = time.perf_counter()
    score_pool(model, pool, normalization, device=device, tta=tta)
    return len(pool) / max(time.perf_counter() - started, 1e-9)


def stage_score(check: Check) -> dict:
    from engine.config import use_tta

    data, sizes = check.data, check.sizes
    model = check.proxy_model
    if model is None:
        raise RuntimeError("the proxy stage made no model to score")
    tta = use_tta(check.device)
    source = np.concatenate([data.train_x, data.test_x])
    cap = check.allowed("score")
    # warm up (kernels, allocator) and size the pool to the time left: 60 % of the cap here, the rest on the CPU
    warm = min(len(source), 4_096 if not check.args.dry_run else 64)
    rate = _score_rate(model, source[:warm], data.normalization, check.device, tta)
    n = int(min(sizes.score_images, max(warm, rate * 0.6 * cap)))
    pool = source[np.arange(n) % len(source)]
    check.log(f"score: {n:,} images on {check.device} (tta {tta})")
    device_rate = _score_rate(model, pool, data.normalization, check.device, tta)
    cpu_model = copy.deepcopy(model).cpu()
    first = min(256, len(source))
    probe = _score_rate(cpu_model, source[:first], data.normalization, "cpu", tta)
    n_cpu = int(min(sizes.cpu_score_images, max(first, probe * 0.3 * cap)))
    check.log(f"score baseline: {n_cpu:,} images on the CPU, the same model")
    cpu_rate = _score_rate(cpu_model, pool[:n_cpu], data.normalization, "cpu", tta)
    return {
        "images": n,
        "distinct": min(n, len(source)),
        "tta": tta,
        "model": model.config.name,
        "images_per_s": round(device_rate, 1),
        "seconds": round(n / device_rate, 2),
        "baseline": {"device": "cpu", "images": n_cpu, "images_per_s": round(cpu_rate, 1)},
        "ratio": round(device_rate / cpu_rate, 2),
        "asked": sizes.score_images,
    }


def clustered(n: int, d: int, device: str, seed: int = 0, clusters: int = 1_000):
    """float32 [n, d] on `device`: points around `clusters` random centres, as embeddings bunch by class."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn(clusters, d, generator=gen, device=device)
    assign = torch.randint(0, clusters, (n,), generator=gen, device=device)
    return (centres[assign] + 0.5 * torch.randn(n, d, generator=gen, device=device)).contiguous()


def device_kcenter(X, labeled: np.ndarray, budget: int, device: str) -> np.ndarray:
    """k-center on the device: `k_center_greedy(device="cuda")`; in a dry run the same torch path on the CPU
    (`k_center_greedy` with device cpu would take the lazy path instead)."""
    from engine.selection.kcenter import check_selection, k_center_greedy, k_center_torch

    if device == "cuda":
        return k_center_greedy(X, labeled, budget, device="cuda")
    return k_center_torch(X, check_selection(len(X), labeled, budget), budget, device="cpu")[0]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def stage_kcenter(check: Check) -> dict:
    import faiss

    from engine.selection.kcenter import k_center_greedy

    n, d, n_labeled, budget = check.sizes.kcenter
    cap, started = check.allowed("kcenter"), time.perf_counter()
    rng = np.random.default_rng(check.args.seed)
    X = clustered(n, d, check.device, check.args.seed)
    labeled = rng.choice(n, n_labeled, replace=False)
    probe = check.sizes.kcenter_probe
    check.log(f"kcenter: {n:,} x {d} on {check.device}, {n_labeled:,} labeled; probe b = {probe}")
    _, probe_s = _timed(lambda: device_kcenter(X, labeled, probe, check.device))
    per_center = probe_s / (n_labeled + probe)  # one pass over the pool per labeled point and per pick
    run = budget
    if per_center * (n_labeled + budget) > 0.7 * cap:
        run = max(probe, int(0.7 * cap / per_center) - n_labeled)
    check.log(f"kcenter: b = {run:,} (asked {budget:,}; about {per_center * (n_labeled + budget):.0f} s for it)")
    chosen, seconds = _timed(lambda: device_kcenter(X, labeled, run, check.device))
    result = {
        "pool": n,
        "dim": d,
        "labeled": n_labeled,
        "budget_asked": budget,
        "budget": run,
        "seconds": round(seconds, 3),
        "picks_per_s": round(run / seconds, 1),
        "probe": {"budget": probe, "seconds": round(probe_s, 3)},
        "projected_s": round(per_center * (n_labeled + budget), 1),
        "path": "k_center_greedy(device='cuda'): k_center_torch" if check.device == "cuda" else "k_center_torch (cpu)",
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
        "picked": len(chosen),
    }
    small, small_budget = check.sizes.compare
    if time.perf_counter() - started > 0.9 * cap:
        result["compare"] = {"status": "skipped", "note": "no time left in the stage's cap"}
        return result
    small_labeled = rng.choice(small, min(n_labeled, small // 10), replace=False)
    Xs = X[:small]
    check.log(f"kcenter baseline: {small:,} x {d}, b = {small_budget:,}: the CPU lazy path against the device")
    on_device, device_s = _timed(lambda: device_kcenter(Xs, small_labeled, small_budget, check.device))
    host = Xs.cpu().numpy()
    on_cpu, cpu_s = _timed(lambda: k_center_greedy(host, small_labeled, small_budget, device="cpu"))
    result["compare"] = {
        "pool": small,
        "labeled": len(small_labeled),
        "budget": small_budget,
        "device_seconds": round(device_s, 3),
        "cpu_lazy_seconds": round(cpu_s, 3),
        "ratio": round(cpu_s / max(device_s, 1e-9), 2),
        "identical": bool(np.array_equal(on_device, on_cpu)),
    }
    return result


def stage_target(check: Check) -> dict:
    name, config = recipe("target", check.device, check.args.dry_run)
    cap = check.allowed("target")
    rows = []
    for i, n in enumerate(check.sizes.target_labels):
        started = time.perf_counter()
        share = cap * (0.3 if i == 0 else 0.85)  # the first row gets a third; the last what is left, less testing
        row_config = config
        if config.max_seconds is not None:
            row_config = dataclasses.replace(config, max_seconds=round(min(config.max_seconds, max(5.0, share)), 1))
        check.log(f"target: {name} on {n:,} labels ({check.device}, time cap {row_config.max_seconds} s)")
        row = public(train_row(check.data, name, row_config, n, check.args.seed))
        row["shipped_cap_s"] = config.max_seconds
        if row["steps"] and row["steps"] < row["planned_steps"]:  # cut by the check's cap: the whole plan's time
            row["projected_s"] = round(row["loop_seconds"] * row["planned_steps"] / row["steps"], 1)
        rows.append(row)
        cap -= time.perf_counter() - started
        gc.collect()
    result: dict = {"rows": rows}
    full = [row.get("projected_s", row["seconds"]) for row in rows]
    if len(rows) == 2 and full[0]:
        result["ratio"] = round(full[1] / full[0], 2)  # the larger set's time over the smaller's, whole plans
    return result


def stage_ddp(check: Check) -> dict:
    import torch

    gpus = torch.cuda.device_count() if check.device == "cuda" else 0
    if check.device == "cuda" and gpus < 2:
        return {"status": "not_measured", "gpus": gpus, "note": "one GPU: DDP not measured"}
    processes = gpus if check.device == "cuda" else 2  # a dry run: 2 CPU processes joined by gloo
    name, config = recipe("target", check.device, check.args.dry_run)
    config = dataclasses.replace(config, steps=check.sizes.ddp_steps, max_seconds=None)
    n = check.sizes.ddp_labels
    check.log(f"ddp: {name}, {config.steps} steps on {n:,} labels, 1 process then {processes}")
    one = public(train_row(check.data, name, config, n, check.args.seed))
    many = public(train_row(check.data, name, config, n, check.args.seed, processes=processes))
    return {
        "gpus": gpus,
        "processes": processes,
        "one": one,
        "many": many,
        "ratio": round(many["images_per_s"] / max(one["images_per_s"], 1e-9), 2),
    }


SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def pytest_counts(output: str) -> dict[str, int]:
    """{"passed": 3, "skipped": 2, ...} from the last summary line of pytest's output ('error' as 'errors')."""
    for line in reversed(output.strip().splitlines()):
        found = SUMMARY.findall(line)
        if found:
            return {("errors" if word.startswith("error") else word): int(count) for count, word in found}
    return {}


def stage_gpu_tests(check: Check) -> dict:
    paths = list(check.sizes.test_paths)
    ignored = []
    if importlib.util.find_spec("streamlit") is None and "tests" in paths:
        ignored = ["tests/app"]  # its modules import streamlit; no GPU test lives there
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *paths]
    command += [f"--ignore={path}" for path in ignored]
    timeout = max(10.0, check.allowed("gpu_tests"))
    check.log(f"gpu_tests: {' '.join(command[2:])} (timeout {timeout:.0f} s)")
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        return {"status": "failed", "note": f"timed out after {timeout:.0f} s", "output_tail": out[-3000:]}
    output = done.stdout + done.stderr
    counts = pytest_counts(done.stdout)
    ok = done.returncode == 0 or (done.returncode == 5 and not counts.get("failed"))  # 5: nothing selected
    result = {"command": " ".join(command[2:]), "returncode": done.returncode, "counts": counts, "ignored": ignored}
    if not ok:
        result.update(status="failed", output_tail=output[-3000:])
    return result


RUNNERS: dict[str, Callable[[Check], dict]] = {
    "proxy": stage_proxy,
    "score": stage_score,
    "kcenter": stage_kcenter,
    "target": stage_target,
    "ddp": stage_ddp,
    "gpu_tests": stage_gpu_tests,
}


# ---------------------------------------------------------------- the doc


def _n(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _acc(row: dict) -> str:
    if row.get("failed"):
        return f"failed: {row['failed']}"
    if "test_acc" not in row:
        return "—"
    low, high = row["test_interval"]
    return f"{100 * row['test_acc']:.1f} % [{100 * low:.1f}, {100 * high:.1f}] on {row['test_n']:,} test images"


def _train(row: dict) -> str:
    capped = ""
    if row.get("cap_s") and row["steps"] < row["planned_steps"]:
        capped = f", capped at {row['cap_s']:g} s"
        if "projected_s" in row:
            capped += f" (all {row['planned_steps']:,} steps: about {row['projected_s']:,.0f} s)"
    return (
        f"{_n(row['images_per_s'])} images/s: {row['steps']:,} of {row['planned_steps']:,} planned steps of "
        f"{row['batch']}, {row['seconds']:.1f} s{capped}"
    )


def _labels(row: dict) -> str:
    repeated = f" ({row['distinct']:,} distinct, repeated)" if row["distinct"] < row["labels"] else ""
    return f"{row['labels']:,} labels{repeated}"


def _problem(stage: dict) -> str | None:
    status = stage.get("status", "ok")
    if status == "error":
        return f"error: {stage['error']}"
    if status == "skipped":
        return f"skipped: {stage['note']}"
    if status == "not_measured":
        return stage["note"]
    return None


FIGURES = {
    "proxy": "proxy training",
    "score": "scoring",
    "kcenter": "k-center",
    "target": "target",
    "ddp": "DDP",
    "gpu_tests": "`pytest -m gpu`",
}


def table_rows(result: dict) -> list[str]:
    stages = result["stages"]
    rows = []

    def add(figure: str, *cells: str) -> None:
        rows.append("| " + " | ".join([figure, *cells]) + " |")

    for name in STAGES:
        if name not in stages:
            continue
        stage = stages[name]
        problem = _problem(stage)
        if problem is not None:
            add(FIGURES[name], problem, "", "", "")
            continue
        if name == "proxy":
            r, b = stage["recipe"], stage["baseline"]
            add(
                f"proxy training, {r['model']} ({LEVEL}, {r['device']}), {_labels(r)}",
                _train(r),
                f"CPU recipe, {b['model']}: {_train(b)}",
                f"{stage.get('ratio', '—')}x",
                f"{_acc(r)}; CPU: {_acc(b)}",
            )
        elif name == "score":
            add(
                f"scoring, {stage['model']}, {stage['images']:,} images (flip TTA {'on' if stage['tta'] else 'off'})",
                f"{_n(stage['images_per_s'])} images/s",
                f"same model on the CPU ({stage['baseline']['images']:,} images): "
                f"{_n(stage['baseline']['images_per_s'])} images/s",
                f"{stage['ratio']}x",
                "the proxy's, above",
            )
        elif name == "kcenter":
            c = stage.get("compare", {})
            budget = f"b = {stage['budget']:,}" + (
                f" (asked {stage['budget_asked']:,}, about {stage['projected_s']:g} s)"
                if stage["budget"] < stage["budget_asked"]
                else ""
            )
            compare = (
                f"CPU lazy path at {c['pool']:,} x {stage['dim']}, b = {c['budget']:,}: {c['cpu_lazy_seconds']} s "
                f"against {c['device_seconds']} s"
                if "cpu_lazy_seconds" in c
                else c.get("note", "—")
            )
            same = "same picks as the CPU path" if c.get("identical") else "picks DIFFER from the CPU path"
            add(
                f"k-center {stage['pool']:,} x {stage['dim']}, {stage['labeled']:,} labeled, {budget}",
                f"{stage['seconds']:.1f} s ({_n(stage['picks_per_s'])} picks/s)",
                compare,
                f"{c['ratio']}x" if "ratio" in c else "—",
                same if "identical" in c else "—",
            )
        elif name == "target":
            for i, row in enumerate(stage["rows"]):
                ratio = f"{stage['ratio']}x the time" if i == 1 and "ratio" in stage else "—"
                if i == 1 and any("projected_s" in r for r in stage["rows"]):
                    ratio += " (projected)"
                base = f"{stage['rows'][0]['labels']:,} labels" if i == 1 else "—"
                add(f"target, {row['model']} ({LEVEL}), {_labels(row)}", _train(row), base, ratio, _acc(row))
        elif name == "ddp":
            one, many = stage["one"], stage["many"]
            add(
                f"DDP, {many['model']}, {stage['processes']} processes, {_labels(many)}",
                _train(many),
                f"1 process: {_train(one)}",
                f"{stage['ratio']}x",
                f"{_acc(many)}; 1 process: {_acc(one)}",
            )
        elif name == "gpu_tests":
            counts = ", ".join(f"{v} {k}" for k, v in stage["counts"].items()) or "no summary"
            add("`pytest -m gpu`", counts, "—", "—", f"exit {stage['returncode']}")
    return rows


EXPLAINED = """\
## How to run

    make gpu-check        # on a machine with a CUDA GPU: this page and docs/gpu.json, in at most 8 minutes
    make gpu-check-dry    # anywhere: every stage at tiny sizes on the CPU, into a temporary folder

`make gpu-check` runs `python -m benchmarks.gpu_check --doc docs/gpu.md --json docs/gpu.json`, which runs
`pytest -m gpu` as its last stage. It needs the project's packages (`make setup`); on a machine that has torch
but not the rest, `make gpu-check PY=python3` after installing faiss-cpu and sqlite-utils (with its
dependencies) from wheels. The CIFAR-10 subset is read from `--data DIR` (train.zip, test.zip), else
`shared/datasets/cifar10/` in the repository, else `../shared/datasets/cifar10/` beside it; without it the
check trains on generated images and says so above. Each stage has a time cap inside the check's budget
(`--budget-s`, 440 s): a cut figure says so, and a stage that would not fit is skipped and says why.

## What each figure means

- **proxy training**: the proxy as a round trains it on this device (`engine.train.train` with the proxy's
  `engine.config.stage_config` at the balanced level: its model for the device, its step plan and its 20 s
  cap) on the CIFAR training images, in training images per second of the step loop (steps x images per
  step / seconds), with its test accuracy on the test images (Wilson 95 % interval, n beside it). Baseline:
  the CPU's recipe (its own model) on the same labels and test images, in the same run. The anchor, quoted
  and not measured here: airbench94 reaches 94 % on CIFAR-10 (50,000 images, about 10 epochs) in 3.83 s on
  one A100 (3.29 s compiled), about 130,000 training images/s.
- **scoring**: `engine.score.score_pool` of that proxy over a pool of CIFAR images (repeated to the pool's
  size), with flip test-time augmentation as a GPU round scores, in images/s. Baseline: the same model and
  the same augmentation on the CPU. It buys no accuracy of its own: the proxy's is the one above.
- **k-center**: `engine.selection.kcenter.k_center_greedy(device="cuda")` (the exact greedy on the GPU, one
  pass over the pool per center) on 1,000,000 generated 512-dimensional points around 1,000 centres, 1,000 of
  them labeled, b = 10,000; when the time cap would not hold b = 10,000, the smaller b run and the time
  projected for 10,000. Baseline: the CPU lazy path (FAISS seeding) against the GPU on a 100,000-point part
  with b = 1,000; 'same picks' says both chose the same points in the same order (the path is exact).
- **target**: the target's recipe (the target's `stage_config`, balanced: its model for the device and step
  plan; trained through `engine.distributed.launch.train_model` as `engine.target` does) on 5,000 and 50,000
  labels; the CIFAR subset has 20,000 training images, so 50,000 repeats them (timing is that of 50,000
  labels; the accuracy is that of 20,000 distinct images). Its 300 s cap is cut to fit the check: a capped row
  shows the steps done of those planned and `projected_s` in the JSON.
- **DDP**: the target's model for a fixed number of steps through `train_model` under
  `launching(Launch(processes=N))`, one process per GPU, against one process: images/s of the global batch
  and the accuracy each reached. On one GPU: not measured.
- **`pytest -m gpu`**: the GPU-marked tests, their counts.
"""


def render(result: dict | None) -> str:
    """The doc: this run's figures (or, for None, that no GPU run has happened), then how to run and what
    each figure means."""
    lines = ["# GPU check", ""]
    if result is None:
        lines += [
            "No GPU run has happened yet: no session has had a CUDA GPU to run `make gpu-check` on. The dry run",
            "(`make gpu-check-dry`) passes on the CPU; the first real run replaces this page with its figures.",
            "",
            "",
        ]
        return "\n".join(lines) + EXPLAINED
    if result["dry_run"]:
        lines += [
            "**Dry run**: every stage at tiny sizes on the CPU (the CPU stands in for the GPU, two gloo processes",
            "for DDP, and `pytest -m gpu` runs tests/engine/test_gpu.py only). These figures prove that the",
            "script runs; they measure nothing.",
            "",
        ]
    m = result["machine"]
    gpu = f"{m['gpu']} ({m['gpu_memory_gib']} GiB), {m['gpus']} GPU(s), CUDA {m['cuda']}" if m.get("gpu") else "no GPU"
    data = result.get("data", {})
    source = (
        f"the CIFAR-10 subset ({data.get('path')})"
        if data.get("source") == "cifar10"
        else f"generated images ({data.get('note', '')})"
    )
    lines += [
        f"Measured {result['date']} by `benchmarks/gpu_check.py`: {result['seconds']:.0f} s of a "
        f"{result['budget_s']:.0f} s budget. Rerun `make gpu-check` to refresh this page.",
        "",
        f"Machine: {gpu}; {m['cpu']}, {m['cores']} cores, torch {m.get('torch')} ({m.get('torch_threads')} threads), "
        f"Python {m['python']}.",
        "",
        f"Data: {source}: {data.get('train', 0):,} training and {data.get('test', 0):,} test images, "
        f"{data.get('classes', 0)} classes, {data.get('image_size', 0)} px.",
        "",
        "| figure | on the device | baseline, same run | ratio | what it bought |",
        "|---|---|---|---|---|",
        *table_rows(result),
        "",
        "Every stage's numbers, the sample sizes and the caps in force are in the JSON beside this page.",
        "",
        "",
    ]
    return "\n".join(lines) + EXPLAINED


# ---------------------------------------------------------------- the driver


def machine(device: str) -> dict:
    import torch

    from engine.machine import machine_info

    info = machine_info()
    info["pinned_cores"] = sorted(os.sched_getaffinity(0))
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
        )
    return info


def write(check: Check) -> None:
    check.result["seconds"] = round(time.perf_counter() - check.started, 1)
    for path, text in ((check.args.json, json.dumps(check.result, indent=1)), (check.args.doc, render(check.result))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def run_stage(check: Check, name: str) -> dict:
    import torch

    if check.allowed(name) < MINIMUM[name]:
        left = max(0.0, check.allowed(name))
        note = f"{left:.0f} s of the check's budget left for it, it needs {MINIMUM[name]:.0f} s"
        return {"status": "skipped", "note": note, "stage_seconds": 0.0}
    started = time.perf_counter()
    try:
        outcome = RUNNERS[name](check)
    except Exception as exc:  # one stage failing leaves the others to measure
        check.log(f"{name}: {type(exc).__name__}: {exc}")
        outcome = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    outcome.setdefault("status", "ok")
    outcome["stage_seconds"] = round(time.perf_counter() - started, 2)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return outcome


def run(check: Check) -> int:
    """Every stage asked for, in order, the doc and JSON rewritten after each; 1 when one failed."""
    import torch

    from engine.machine import machine_description

    if check.device == "cuda":
        _, check.result["machine"]["cuda_init_s"] = _timed(lambda: torch.zeros(1, device="cuda").sum().item())
    check.log(machine_description())
    check.result["data"] = load(check)
    check.log(f"data: {check.result['data']}")
    write(check)
    for name in check.args.stages:
        outcome = run_stage(check, name)
        check.result["stages"][name] = outcome
        check.log(f"{name}: {outcome['status']} in {outcome['stage_seconds']:.1f} s")
        write(check)
    check.log(f"wrote {check.args.doc} and {check.args.json}")
    return 1 if any(s["status"] in ("error", "failed") for s in check.result["stages"].values()) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every stage at tiny sizes on the CPU")
    parser.add_argument("--doc", type=Path, help="the doc (default docs/gpu.md; a dry run: a temporary folder)")
    parser.add_argument("--json", type=Path, help="the JSON (default docs/gpu.json; a dry run: beside its doc)")
    parser.add_argument("--data", help="folder with the CIFAR train.zip and test.zip, or 'none' for generated images")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dry_run:
        if args.doc is None:  # never docs/gpu.md unless asked for
            args.doc = Path(tempfile.mkdtemp(prefix="gpu-check-dry-")) / "gpu.md"
        args.json = args.json or args.doc.parent / "gpu.json"
    else:
        args.doc = args.doc or ROOT / "docs" / "gpu.md"
        args.json = args.json or ROOT / "docs" / "gpu.json"
    args.stages = [name for name in STAGES if name in args.stages]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        print(f"missing packages: {', '.join(missing)}; install the project's requirements (make setup)")
        return 3
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA GPU here: run the dry run instead (--dry-run, make gpu-check-dry)", file=sys.stderr)
        return 2
    device = "cuda" if not args.dry_run else "cpu"
    check = Check(
        args=args,
        sizes=DRY if args.dry_run else REAL,
        device=device,
        started=time.perf_counter(),
        budget_s=args.budget_s,
        result={
            "dry_run": args.dry_run,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "budget_s": args.budget_s,
            "machine": machine(device),
            "sizes": dataclasses.asdict(DRY if args.dry_run else REAL),
            "stages": {},
        },
        say=lambda line: print(line, flush=True),
    )
    return run(check)


if __name__ == "__main__":
    raise SystemExit(main())
