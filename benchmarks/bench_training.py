"""Training benchmark: the test accuracy each training setting buys, and its seconds.

On an ImageFolder root holding train/<class>/ and test/<class>/ (default: the
CIFAR-10 subset unzipped to a temporary folder), with labels drawn at random:

(a) plans: the proxy and the target as a project trains them by default
    (`auto` model, "balanced" level, its time cap) on n labels each;
(b) recipe: the proxy on --recipe-n labels for a fixed number of steps, one
    ingredient changed at a time, beside the epoch recipe this project used
    before (8 epochs of batch 128: 64 steps at 1,000 labels) in the same run;
(c) warm start: a second round's proxy on twice the labels, from scratch
    with its full plan vs from the first round's weights with half of it.

Every row has test accuracy, accuracy with flip test-time augmentation,
optimizer steps and seconds. The machine is shared and noisy: compare rows of
one run, not runs.

    .venv/bin/python benchmarks/bench_training.py [--data ROOT] [--only plans recipe warm] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

import storage
from benchmarks.bench_round import CIFAR_TEST_ZIP, CIFAR_ZIP
from engine.config import BASE, stage_config
from engine.machine import machine_description
from engine.models import build_model
from engine.pool_cache import channel_stats, folder_image_size
from engine.simulate import load_test_set
from engine.train import StepsSeen, TrainConfig, TrainingFailed, evaluate, train

# The epoch recipe before steps: 8 epochs, batches of up to 128, 25% warm-up, no clipping.
EPOCH_RECIPE_EPOCHS = 8
EPOCH_RECIPE = dataclasses.replace(BASE, warmup=0.25, clip_norm=0.0, check=False)


@dataclasses.dataclass
class Data:
    train_x: np.ndarray  # uint8 [N, 3, S, S]
    train_y: np.ndarray  # int64 [N]
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    normalization: tuple
    image_size: int


def load_data(root: Path) -> Data:
    """Decode root/train and root/test at the size the app would pick for them."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    size = folder_image_size(root / "train", classes)
    train_x, train_y = load_test_set(root / "train", classes, size)
    test_x, test_y = load_test_set(root / "test", classes, size)
    mean, std = channel_stats(train_x)
    return Data(train_x, train_y, test_x, test_y, classes, (tuple(mean), tuple(std)), size)


def run(
    data: Data, model_name: str, n: int, config: TrainConfig, seed: int, label: str, init: torch.nn.Module | None = None
) -> dict:
    """Train `model_name` on n random labels (seeded) with `config`; test it."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data.train_y), size=min(n, len(data.train_y)), replace=False)
    model = build_model(model_name, len(data.classes), data.image_size, seed=seed)
    if init is not None:
        model.load_state_dict(init.state_dict())
    steps = StepsSeen()
    started = time.perf_counter()
    error = None
    try:
        train(
            model,
            data.train_x[picks],
            data.train_y[picks],
            dataclasses.replace(config, seed=seed),
            data.normalization,
            on_progress=steps,
        )
    except TrainingFailed as exc:
        error = str(exc)
    seconds = time.perf_counter() - started
    row = {
        "row": label,
        "model": model_name,
        "labels": len(picks),
        "seed": seed,
        "steps": steps.last,
        "seconds": round(seconds, 1),
        "test_acc": round(evaluate(model, data.test_x, data.test_y, data.normalization), 4),
        "test_acc_tta": round(evaluate(model, data.test_x, data.test_y, data.normalization, tta=True), 4),
        "failed": error,
    }
    print(
        f"  {label:<34} {model_name:<10} {row['labels']:>6} labels  seed {seed}  {row['steps']:>5} steps "
        f"{row['seconds']:>7.1f} s   test {row['test_acc']:.3f}  tta {row['test_acc_tta']:.3f}"
        + (f"   FAILED: {error}" if error else ""),
        flush=True,
    )
    row["model_object"] = model
    return row


def defaults(stage: str, device: str) -> tuple[str, TrainConfig]:
    settings = storage.Settings(image_root="/", classes=("a", "b"), device=device)
    made = stage_config(settings, stage)
    return made.model_name, made.train


def plans(data: Data, args) -> list[dict]:
    print("(a) default plans (balanced level, time cap on)", flush=True)
    rows = []
    for stage, sizes in (("proxy", args.proxy_sizes), ("target", args.target_sizes)):
        name, config = defaults(stage, args.device)
        rows += [run(data, name, n, config, seed, f"{stage} default") for n in sizes for seed in args.seeds[:1]]
    return rows


def recipe(data: Data, args) -> list[dict]:
    print(f"(b) recipe: proxy on {args.recipe_n} labels, {args.recipe_steps} steps unless said", flush=True)
    name, _ = defaults("proxy", args.device)
    fixed = dataclasses.replace(BASE, steps=args.recipe_steps, device=args.device)
    epoch_steps = EPOCH_RECIPE_EPOCHS * -(-args.recipe_n // 128)
    variants = [
        (
            f"epoch recipe before ({epoch_steps} steps)",
            dataclasses.replace(EPOCH_RECIPE, steps=epoch_steps, device=args.device),
        ),
        ("steps recipe (default)", fixed),
        ("lr 0.2 instead of 0.4", dataclasses.replace(fixed, lr=0.2)),
        ("no gradient clipping", dataclasses.replace(fixed, clip_norm=0.0)),
        ("EMA of weights, decay 0.99", dataclasses.replace(fixed, ema=0.99)),
        ("no label smoothing", dataclasses.replace(fixed, label_smoothing=0.0)),
    ]
    return [run(data, name, args.recipe_n, config, seed, label) for label, config in variants for seed in args.seeds]


def warm(data: Data, args) -> list[dict]:
    print(f"(c) warm start: {args.recipe_n} then {2 * args.recipe_n} labels (no time cap)", flush=True)
    name, config = defaults("proxy", args.device)
    config = dataclasses.replace(config, max_seconds=None)
    rows = []
    for seed in args.seeds[:1]:
        first = run(data, name, args.recipe_n, config, seed, "round 1")
        scratch = run(data, name, 2 * args.recipe_n, config, seed, "round 2 from scratch")
        half = dataclasses.replace(config, steps=max(1, scratch["steps"] // 2))
        rows += [
            first,
            scratch,
            run(data, name, 2 * args.recipe_n, half, seed, "round 2 warm, half the steps", init=first["model_object"]),
        ]
    return rows


def cifar_root(tmp: Path) -> Path:
    for archive in (CIFAR_ZIP, CIFAR_TEST_ZIP):
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
    return tmp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ImageFolder root with train/ and test/ (default: CIFAR subset)")
    parser.add_argument("--only", nargs="+", choices=("plans", "recipe", "warm"), default=["plans", "recipe", "warm"])
    parser.add_argument("--proxy-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--target-sizes", type=int, nargs="+", default=[2000])
    parser.add_argument("--recipe-n", type=int, default=1000)
    parser.add_argument("--recipe-steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    print(machine_description(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = args.data or cifar_root(Path(tmp))
        started = time.perf_counter()
        data = load_data(root)
        print(
            f"data: {root}: {len(data.train_y)} train / {len(data.test_y)} test images, {len(data.classes)} "
            f"classes, {data.image_size} px (decoded in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        rows = []
        for part in args.only:
            rows += {"plans": plans, "recipe": recipe, "warm": warm}[part](data, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_description(),
                    "data": str(args.data or "cifar10"),
                    "rows": [{k: v for k, v in r.items() if k != "model_object"} for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
