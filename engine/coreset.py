"""`proxy-labeler coreset`: Selection via Proxy's core-set half, headless, on a labeled ImageFolder tree.

`ROOT/train/<class>/*` is the labeled set, `ROOT/test/<class>/*` the test set.
A selector (the proxy, or with `--selector target` the target's own model and
training: the paper's baseline) trains once on every label while
`engine.example_stats` records forgetting, EL2N and GraNd; the method picks
`keep` of the set (class-balanced unless `--no-balance`); the target trains on
that subset and is tested. `--baselines` also trains the target on all of the
set and on a random subset of the same size (balanced the same way), in the
same run. One JSON holds the accuracies, sizes and seconds of each stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import storage
from engine.config import TRAINING_LEVELS, stage_config
from engine.example_stats import score_labeled_set
from engine.machine import machine_info
from engine.models import build_model
from engine.pool_cache import channel_stats, folder_image_size
from engine.selection.balance import class_balanced
from engine.selection.coreset import labeled_pool
from engine.selection.strategies import STRATEGIES, random_sample
from engine.simulate import load_test_set
from engine.train import evaluate, train

SELECTORS = ("proxy", "target")


@dataclass(frozen=True)
class LabeledData:
    """The decoded labeled set and test set of one run."""

    images: np.ndarray  # uint8 [N, 3, S, S]
    labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    normalization: tuple
    classes: list[str]
    size: int


@dataclass(frozen=True)
class CoresetConfig:
    """One core-set run; field names match the command-line flags."""

    data: Path
    out: Path
    method: str = "forgetting"
    keep: float = 0.5  # share of the labeled set kept, in (0, 1]
    selector: str = "proxy"  # proxy | target
    balance: bool = True  # class-balanced selection (DeepCore's setting)
    baselines: bool = False  # also the target on all data and on a random subset of the same size
    proxy: str = "auto"
    target: str = "auto"
    proxy_training: str = "balanced"
    target_training: str = "balanced"
    proxy_steps: int = 0  # fixed optimizer steps; 0 = planned by the training level
    target_steps: int = 0
    seed: int = 0
    device: str = "auto"
    image_size: int = 0  # 0 = picked from the images


def config_from_args(args: argparse.Namespace) -> CoresetConfig:
    names = {f.name for f in dataclasses.fields(CoresetConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if getattr(args, "no_balance", False):
        values["balance"] = False
    return CoresetConfig(**values)


def main(args: argparse.Namespace) -> int:
    """Entry point of `proxy-labeler coreset`."""
    result = run_coreset(config_from_args(args), progress=lambda line: print(line, flush=True))
    print(json.dumps({k: result[k] for k in ("method", "keep", "subset", "stages")}, indent=1))
    return 0


def check_config(config: CoresetConfig) -> None:
    """ValueError, naming the setting, for anything that cannot run; before any training."""
    if not (isinstance(config.keep, float | int) and 0 < config.keep <= 1):
        raise ValueError(f"keep must lie in (0, 1] (a share of the labeled set), got {config.keep!r}")
    if config.method not in STRATEGIES:
        raise ValueError(f"unknown method {config.method!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    if config.selector not in SELECTORS:
        raise ValueError(f"selector must be proxy or target, got {config.selector!r}")
    for level in (config.proxy_training, config.target_training):
        if level not in TRAINING_LEVELS:
            raise ValueError(f"unknown training level {level!r}; choose one of {', '.join(TRAINING_LEVELS)}")
    for split in ("train", "test"):
        if not (config.data / split).is_dir():
            raise ValueError(f"{config.data / split} is not a folder: --data needs train/<class>/ and test/<class>/")


def run_coreset(config: CoresetConfig, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Select, train the target on the subset (and the baselines), write and return the JSON result."""
    check_config(config)
    data = load_labeled_data(config)
    keep_n = max(1, round(config.keep * len(data.labels)))
    settings = _settings(config, data.classes)
    selector = stage_config(settings, config.selector)
    progress(f"{config.selector} ({selector.model_name}) trains on {len(data.labels)} labels and scores them")
    model = build_model(selector.model_name, len(data.classes), data.size, seed=config.seed)
    scored = score_labeled_set(model, data.images, data.labels, selector.train, data.normalization)
    pool = labeled_pool(scored, data.labels)
    started = time.perf_counter()
    method = STRATEGIES[config.method]
    picks = (class_balanced(method) if config.balance else method)(
        pool, [], keep_n, rng=np.random.default_rng(config.seed)
    )
    select_s = time.perf_counter() - started
    target = stage_config(settings, "target")
    progress(f"target ({target.model_name}) trains on the {keep_n} kept by {config.method}")
    subset = train_target(target, data, picks)
    stages = {"proxy_s": scored.train_s, "score_s": scored.score_s, "select_s": select_s, "target_s": subset["seconds"]}
    result = {
        "method": config.method,
        "keep": config.keep,
        "selector": config.selector,
        "selector_model": selector.model_name,
        "target_model": target.model_name,
        "balance": config.balance,
        "seed": config.seed,
        "data": str(config.data),
        "n_train": len(data.labels),
        "n_test": len(data.test_labels),
        "subset": {**subset, "seconds": round(sum(stages.values()), 2)},  # end to end
        "stages": {name: round(value, 2) for name, value in stages.items()},
        "kept": sorted(int(p) for p in picks),
        "machine": machine_info(),
    }
    if config.baselines:
        progress(f"baseline: target on all {len(data.labels)}")
        result["full"] = train_target(target, data, np.arange(len(data.labels)))
        started = time.perf_counter()
        sampler = class_balanced(random_sample) if config.balance else random_sample
        drawn = sampler(pool, [], keep_n, rng=np.random.default_rng(config.seed + 1))
        drawn_s = time.perf_counter() - started
        progress(f"baseline: target on a random {keep_n}")
        random_row = train_target(target, data, drawn)
        result["random"] = {**random_row, "seconds": round(random_row["seconds"] + drawn_s, 2)}
    config.out.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_write(config.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def load_labeled_data(config: CoresetConfig) -> LabeledData:
    """Decode train/ and test/ at one size; ValueError for a set of one class."""
    root = config.data / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    size = config.image_size or folder_image_size(root, classes)
    images, labels = load_test_set(root, classes, size)
    test_images, test_labels = load_test_set(config.data / "test", classes, size)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"the labeled set holds one class ({classes[int(labels[0])]}): nothing to select between")
    mean, std = channel_stats(images)
    return LabeledData(images, labels, test_images, test_labels, (tuple(mean), tuple(std)), classes, size)


def train_target(stage, data: LabeledData, picks: np.ndarray) -> dict:
    """Train the target on `picks` of the labeled set; its test accuracy, seconds and size."""
    model = build_model(stage.model_name, len(data.classes), data.size, seed=stage.train.seed)
    started = time.perf_counter()
    train(model, data.images[picks], data.labels[picks], stage.train, data.normalization)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, data.test_images, data.test_labels, data.normalization)
    return {"test_acc": round(accuracy, 4), "seconds": round(seconds, 2), "n": len(picks)}


def _settings(config: CoresetConfig, classes: list[str]) -> storage.Settings:
    return storage.Settings(
        image_root=str(config.data / "train"),
        classes=tuple(classes),
        proxy=config.proxy,
        target=config.target,
        proxy_training=config.proxy_training,
        target_training=config.target_training,
        proxy_steps=config.proxy_steps,
        target_steps=config.target_steps,
        seed=config.seed,
        device=config.device,
    )
