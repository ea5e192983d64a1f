"""One process against several on one machine: `python -m benchmarks.bench_processes --data DIR --json FILE`.

What a job pays and gains when its heavy stages run as torchrun jobs (`engine.distributed.launch`):

- `stage_start`: a training stage of one step in N processes, minus the same step in this process: what
  starting torchrun, its ranks and their process group costs each stage;
- `train`: the proxy recipe's model (`proxy_tiny`) trained the same number of passes over the labeled images
  of an ImageFolder tree (`DIR/train`), in this process and as an N-process stage (DDP: a global batch of up
  to N x 128, so N times fewer steps), with the test accuracy each model reaches on `DIR/test` (n and 95 %
  interval) and the images per second of the steps (the stage's start taken off);
- `score`: the pool (`DIR/train`, repeated to `--pool` rows, from a memmap) scored in this process and as
  an N-process stage (each rank its shard).

Ratios are N processes against one, measured in the same run. On a CPU, one process uses every core through
torch's threads, N processes one thread each (torchrun's default), so the ratio says what splitting the work
between processes costs or saves there; on a machine with N GPUs it is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from engine.distributed.launch import Launch, launching, score_model, train_model
from engine.intervals import wilson
from engine.machine import machine_description
from engine.models import build_model
from engine.pool_cache import channel_stats
from engine.score import score_pool
from engine.simulate import load_test_set
from engine.train import TrainConfig, evaluate, train


def load(data: Path, size: int = 32):
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    train_images, train_labels = load_test_set(data / "train", classes, size)
    test_images, test_labels = load_test_set(data / "test", classes, size)
    return classes, train_images, train_labels, test_images, test_labels


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def measure(args) -> dict:
    classes, images, labels, test_images, test_labels = load(args.data)
    norm = channel_stats(images)
    many = Launch(processes=args.processes)
    config = TrainConfig(passes=args.passes, min_steps=1, max_steps=1_000_000, device="cpu", report_every=50, seed=0)
    result: dict = {
        "machine": machine_description(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "processes": args.processes,
        "labeled": len(labels),
        "test": len(test_labels),
        "passes": args.passes,
        "threads_in_process": torch.get_num_threads(),  # torchrun gives each rank one (OMP_NUM_THREADS=1)
    }

    one_step = TrainConfig(steps=1, device="cpu", check=False, recalibrate_bn=False)
    small = images[:256], labels[:256]
    _, alone = timed(lambda: train(build_model("proxy_tiny", len(classes), 32, seed=0), *small, one_step, norm))
    with launching(many):
        _, staged = timed(
            lambda: train_model(build_model("proxy_tiny", len(classes), 32, seed=0), *small, one_step, norm)
        )
    result["stage_start"] = {"seconds": staged - alone, "one_step_in_process_s": alone}
    print("stage start", result["stage_start"], flush=True)

    rows = {}
    for name, launch in (("1", Launch()), (str(args.processes), many)):
        model = build_model("proxy_tiny", len(classes), 32, seed=0)
        with launching(launch):
            _, seconds = timed(lambda model=model: train_model(model, images, labels, config, norm))
        accuracy = evaluate(model, test_images, test_labels, norm, device="cpu")
        low, high = wilson(round(accuracy * len(test_labels)), len(test_labels))
        start = result["stage_start"]["seconds"] if launch.distributed else 0.0
        seen = args.passes * len(labels)
        rows[name] = {
            "seconds": seconds,
            "images_per_s": seen / max(1e-9, seconds - start),
            "test_acc": accuracy,
            "interval": [low, high],
            "n": len(test_labels),
        }
        print("train", name, rows[name], flush=True)
    result["train"] = rows

    repeats = -(-args.pool // len(images))
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "pool.npy", np.concatenate([images] * repeats)[: args.pool])
        pool = np.load(Path(tmp) / "pool.npy", mmap_mode="r")
        model = build_model("proxy_tiny", len(classes), 32, seed=0)
        scores = {}
        _, scores["1"] = timed(lambda: score_pool(model, pool, norm, device="cpu"))
        with launching(many):
            _, scores[str(args.processes)] = timed(lambda: score_model(model, pool, norm, device="cpu"))
    result["score"] = {"images": args.pool, **{k: {"seconds": v} for k, v in scores.items()}}
    print("score", result["score"], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder root with train/ and test/")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--passes", type=float, default=2.0, help="passes over the labeled images, in one and in N")
    parser.add_argument("--pool", type=int, default=50_000, help="images scored")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    result = measure(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
