"""bf16 autocast against float32, in one run, on the machine it runs on (docs/training.md, "Precision").

For each precision (PROXY_LABELER_BF16=0, then 1, alternating which goes
first from seed to seed, so a change in the machine's load falls on both):

- training: the proxy (proxy_tiny) and the CPU target (resnet20) on --labels
  random labels for a fixed --steps, seeds --seeds: optimizer steps per
  second and test accuracy (the model trained and evaluated in that precision);
- SSL: SimCLR steps per second (--ssl-steps steps);
- scoring: pool images per second of `score_pool` (softmax and embeddings).

On an ImageFolder root holding train/<class>/ and test/<class>/ (default: the
CIFAR-10 subset unzipped to a temporary folder). Compare the two columns of
one run, not runs: the machine is shared.

    .venv/bin/python -m benchmarks.bench_precision [--data ROOT] [--labels 1000] [--steps 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_round import CIFAR_TEST_ZIP, CIFAR_ZIP, unzip
from benchmarks.bench_training import Data, load_data
from engine.config import BASE
from engine.machine import machine_description, machine_info
from engine.models import build_model
from engine.precision import BF16_ENV
from engine.score import score_pool
from engine.ssl import SSLConfig, pretrain
from engine.train import StepsSeen, TrainingFailed, evaluate, train

PRECISIONS = {"float32": "0", "bf16": "1"}
MODELS = ("proxy_tiny", "resnet20")


@contextlib.contextmanager
def precision(name: str):
    before = os.environ.get(BF16_ENV)
    os.environ[BF16_ENV] = PRECISIONS[name]
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BF16_ENV, None)
        else:
            os.environ[BF16_ENV] = before


def train_row(data: Data, model_name: str, labels: int, steps: int, seed: int) -> dict:
    picks = np.random.default_rng(seed).choice(len(data.train_y), size=min(labels, len(data.train_y)), replace=False)
    model = build_model(model_name, len(data.classes), data.image_size, seed=seed)
    config = dataclasses.replace(BASE, steps=steps, seed=seed, device="cpu", max_seconds=None, check=False)
    seen = StepsSeen()
    started = time.perf_counter()
    failed = None
    try:
        train(model, data.train_x[picks], data.train_y[picks], config, data.normalization, on_progress=seen)
    except TrainingFailed as exc:
        failed = str(exc)
    seconds = time.perf_counter() - started
    return {
        "model": model_name,
        "seed": seed,
        "labels": len(picks),
        "steps": seen.last,
        "steps_per_s": round(seen.last / seconds, 2),
        "test_acc": round(evaluate(model, data.test_x, data.test_y, data.normalization), 4),
        "test_images": len(data.test_y),
        "failed": failed,
    }


def ssl_row(data: Data, steps: int) -> dict:
    config = SSLConfig(steps=steps, max_seconds=None, device="cpu", report_every=steps)
    started = time.perf_counter()
    result = pretrain(data.train_x, data.normalization, config)
    return {"ssl_steps": result.steps, "ssl_steps_per_s": round(result.steps / (time.perf_counter() - started), 2)}


def score_row(data: Data, model_name: str, images: int) -> dict:
    model = build_model(model_name, len(data.classes), data.image_size, seed=0)
    pool = data.train_x[:images]
    score_pool(model, pool[:256], data.normalization)  # warm-up: first calls pay one-off costs
    started = time.perf_counter()
    score_pool(model, pool, data.normalization)
    return {
        "model": model_name,
        "images": len(pool),
        "images_per_s": round(len(pool) / (time.perf_counter() - started)),
    }


def run(data: Data, args: argparse.Namespace) -> dict:
    rows: dict[str, list[dict]] = {name: [] for name in PRECISIONS}
    order = list(PRECISIONS)
    for round_number, seed in enumerate(args.seeds):
        for name in order if round_number % 2 == 0 else order[::-1]:
            with precision(name):
                for model_name in MODELS:
                    row = train_row(data, model_name, args.labels, args.steps, seed)
                    rows[name].append({"kind": "train", **row})
                    print(f"  {name:<8} {_describe(row)}", flush=True)
    for round_number in range(2):
        for name in order if round_number % 2 == 0 else order[::-1]:
            with precision(name):
                for model_name in MODELS:
                    row = score_row(data, model_name, args.score_images)
                    rows[name].append({"kind": "score", **row})
                    print(f"  {name:<8} scoring {model_name}: {row['images_per_s']} images/s", flush=True)
                row = ssl_row(data, args.ssl_steps)
                rows[name].append({"kind": "ssl", **row})
                print(f"  {name:<8} SSL: {row['ssl_steps_per_s']} steps/s", flush=True)
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: dict[str, list[dict]]) -> list[dict]:
    """One line per measure: the median of each precision, and bf16 / float32."""
    measures: list[tuple[str, str, str, str | None]] = []
    for model_name in MODELS:
        measures += [
            (f"{model_name} training steps/s", "train", "steps_per_s", model_name),
            (f"{model_name} test accuracy", "train", "test_acc", model_name),
            (f"{model_name} scoring images/s", "score", "images_per_s", model_name),
        ]
    measures.append(("SSL steps/s", "ssl", "ssl_steps_per_s", None))
    out = []
    for label, kind, key, model_name in measures:
        values = {
            name: [r[key] for r in rows[name] if r["kind"] == kind and r.get("model") == model_name]
            for name in PRECISIONS
        }
        f32, bf16 = statistics.median(values["float32"]), statistics.median(values["bf16"])
        out.append(
            {"measure": label, "float32": values["float32"], "bf16": values["bf16"], "ratio": round(bf16 / f32, 3)}
        )
    return out


def _describe(row: dict) -> str:
    return (
        f"{row['model']:<10} seed {row['seed']}  {row['labels']} labels  {row['steps']} steps  "
        f"{row['steps_per_s']:.2f} steps/s  test {row['test_acc']:.3f} on {row['test_images']}"
        + (f"  FAILED: {row['failed']}" if row["failed"] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="ImageFolder root with train/ and test/ (default: CIFAR-10 subset)")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--ssl-steps", type=int, default=20)
    parser.add_argument("--score-images", type=int, default=10000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(machine_description(), flush=True)
    flags = sorted(f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in Path("/proc/cpuinfo").read_text())
    print(f"bf16 CPU flags: {flags or 'none'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        root = args.data
        if root is None:
            root = unzip(CIFAR_ZIP, Path(tmp) / "data").parent
            unzip(CIFAR_TEST_ZIP, root)
        data = load_data(root)
        print(f"data: {root} ({len(data.train_y)} train, {len(data.test_y)} test, {data.image_size} px)", flush=True)
        result = run(data, args)
    for line in result["summary"]:
        print(f"{line['measure']:<34} float32 {line['float32']}  bf16 {line['bf16']}  bf16/float32 {line['ratio']}")
    if args.json:
        info = {"machine": machine_info(), "cpu_flags": flags, "args": {k: str(v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({**info, **result}, indent=1))


if __name__ == "__main__":
    main()
