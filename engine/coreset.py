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
import csv
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import storage
from engine.config import TRAINING_LEVELS, scaled_to_subset, stage_config
from engine.example_stats import score_labeled_set
from engine.machine import machine_info
from engine.models import build_model
from engine.names import CORESET_DEFAULT_KEEP, CORESET_DEFAULT_METHOD, CORESET_METHODS, KEPT_DISTANCE_SCORED
from engine.pool_cache import channel_stats, decode_image, folder_image_size
from engine.score import PoolScores
from engine.selection.balance import class_balanced, class_shares
from engine.selection.coreset import STATISTICS, labeled_pool
from engine.selection.neighbours import nearest_among
from engine.selection.strategies import SCORES, STRATEGIES
from engine.simulate import class_folder_images, load_test_set
from engine.train import Sampler, evaluate, train
from engine.training.dynamic import DynamicKeep, check_keep
from storage.export import spreadsheet_safe

SELECTORS = ("proxy", "target")
# flags of the --data form that a project's settings decide instead
PROJECT_SETTINGS = (
    "proxy",
    "target",
    "proxy_training",
    "target_training",
    "proxy_steps",
    "target_steps",
    "device",
    "image_size",
)
PER_ITEM_SCORES = ("least_confidence", "margin", "entropy", *STATISTICS)


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
    paths: tuple[str, ...] = ()  # of the labeled images, relative to train/ ('cat/001.png'), in `labels` order


@dataclass(frozen=True)
class CoresetConfig:
    """One core-set run; field names match the command-line flags."""

    out: Path
    data: Path | None = None  # an ImageFolder tree: train/ is the labeled set, test/ tests the target ...
    project: Path | None = None  # ... or a project: its training labels, tested on its labeled validation images
    method: str = CORESET_DEFAULT_METHOD  # docs/coreset.md: the study these defaults come from
    keep: float = CORESET_DEFAULT_KEEP  # share of the labeled set kept, in (0, 1]
    selector: str = "proxy"  # proxy | target
    balance: bool = True  # class-balanced selection (DeepCore's setting)
    baselines: bool = False  # also the target on all data and on a random subset of the same size
    dynamic_keep: float = 0.0  # also the target with DynaMS at this average keep, and on all data; 0 = not
    proxy: str = "auto"
    target: str = "auto"
    proxy_training: str = "balanced"
    target_training: str = "balanced"
    proxy_steps: int = 0  # fixed optimizer steps; 0 = planned by the training level
    target_steps: int = 0
    seed: int = 0
    device: str = "auto"
    image_size: int = 0  # 0 = picked from the images
    subset_csv: Path | None = None  # also every labeled image's path, class and kept (1 or 0) as a CSV


def config_from_args(args: argparse.Namespace) -> CoresetConfig:
    names = {f.name for f in dataclasses.fields(CoresetConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if getattr(args, "no_balance", False):
        values["balance"] = False
    return CoresetConfig(**values)


def main(args: argparse.Namespace) -> int:
    """Entry point of `proxy-labeler coreset`."""
    from engine.distributed.launch import launch_from_args, launching, on_device

    with launching(on_device(launch_from_args(args), getattr(args, "device", "auto") or "auto")):
        result = run_coreset(config_from_args(args), progress=lambda line: print(line, flush=True))
    shown = ("method", "keep", "subset", "stages", "full", "random", "dynamic")
    print(json.dumps({k: result[k] for k in shown if k in result}, indent=1))
    return 0


def check_config(config: CoresetConfig) -> None:
    """ValueError, naming the setting, for anything that cannot run; before any training."""
    if (config.data is None) == (config.project is None):
        raise ValueError("give either --data (an ImageFolder tree) or --project (a project folder)")
    if config.project is not None:
        defaults = CoresetConfig(out=config.out)
        ignored = [
            f"--{name.replace('_', '-')}"
            for name in PROJECT_SETTINGS
            if getattr(config, name) != getattr(defaults, name)
        ]
        if ignored:
            raise ValueError(
                f"with --project the models, training and images come from the project's settings: drop "
                f"{', '.join(ignored)} (or change the settings on the Project page)"
            )
    check_choice(config.method, config.keep, config.selector)
    if config.dynamic_keep:
        check_keep(config.dynamic_keep)
    for level in (config.proxy_training, config.target_training):
        if level not in TRAINING_LEVELS:
            raise ValueError(f"unknown training level {level!r}; choose one of {', '.join(TRAINING_LEVELS)}")
    if config.data is not None:
        for split in ("train", "test"):
            if not (config.data / split).is_dir():
                raise ValueError(
                    f"{config.data / split} is not a folder: --data needs train/<class>/ and test/<class>/"
                )


def check_choice(method: str, keep: float, selector: str = "proxy") -> None:
    """ValueError for a keep outside (0, 1], a method that cannot select from a labeled set, or an unknown
    selector."""
    if isinstance(keep, bool) or not (isinstance(keep, float | int) and 0 < keep <= 1):
        raise ValueError(f"keep must lie in (0, 1] (a share of the labeled set), got {keep!r}")
    if method not in CORESET_METHODS:
        raise ValueError(f"unknown core-set method {method!r}; choose one of {', '.join(CORESET_METHODS)}")
    if selector not in SELECTORS:
        raise ValueError(f"selector must be proxy or target, got {selector!r}")


def keep_count(keep: float, labels: np.ndarray, classes: list[str], balance: bool) -> int:
    """How many of `labels` a keep ratio keeps; ValueError for a set of fewer than two classes, or (balanced)
    a class whose share of the kept would be none of it (its model could not learn that class)."""
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        raise ValueError("the labeled set holds one class: nothing to select between; label a second class first")
    keep_n = max(1, round(keep * len(labels)))
    if balance:
        shares = class_shares(counts, keep_n)
        starved = [(classes[int(c)], int(n)) for c, n, share in zip(present, counts, shares, strict=True) if not share]
        if starved:
            names = ", ".join(f"{name} ({n} labeled)" for name, n in starved[:5])
            raise ValueError(
                f"keeping {keep:.0%} of {len(labels)} labels leaves no image of {names}: keep more, "
                "or label more of those classes"
            )
    return keep_n


def select(pool: PoolScores, method: str, keep_n: int, balance: bool, seed: int) -> np.ndarray:
    """The kept positions of the labeled set `pool`, most worth keeping first."""
    strategy = STRATEGIES[method]
    return (class_balanced(strategy) if balance else strategy)(pool, [], keep_n, rng=np.random.default_rng(seed))


def item_scores(method: str, pool: PoolScores, picks: np.ndarray | None = None) -> np.ndarray | None:
    """float64 [N]: each example's score under `method` when it has one of its own (higher kept first). The
    methods whose order depends on the picking (k-center, herding, the submodular ones) have none; with the
    kept `picks` they get `kept_distances` instead (for k-center, too, every kept one is at least as far from
    the other kept ones as any dropped one). None for random."""
    if method in PER_ITEM_SCORES:
        return np.asarray(SCORES[method](pool, np.arange(len(pool.probs)), None), dtype=np.float64)
    if method in KEPT_DISTANCE_SCORED and picks is not None:
        return kept_distances(pool, picks)
    return None


def kept_distances(pool: PoolScores, picks: np.ndarray) -> np.ndarray:
    """float64 [N]: each example's distance, in the selector's embeddings, to the nearest *other* kept example
    of its class (nan where its class keeps no other). Small for a dropped example: a kept one stands for it."""
    x = np.ascontiguousarray(pool.embeddings, dtype=np.float32)
    labels = np.asarray(pool.labels)
    kept = np.zeros(len(x), bool)
    kept[np.asarray(picks, dtype=np.int64)] = True
    found = np.full(len(x), np.nan)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        base = members[kept[members]]
        if len(base) == 0:
            continue
        dist, idx = nearest_among(x, base, 2, members)
        other = idx != members[:, None]  # a kept example is its own nearest: the next one stands for it
        first_other = np.argmax(other, axis=1)
        has_other = other[np.arange(len(members)), first_other]
        found[members[has_other]] = np.sqrt(dist[np.arange(len(members)), first_other][has_other])
    return found


def suspects(pool: PoolScores) -> np.ndarray:
    """bool [N]: possibly mislabeled. The selector disagreed with the label: it answers another class at the
    end, or it never learned the example, or it forgot the example at least once and was wrong on at least
    half of its presentations while it trained (a small set is memorized by the end, wrong labels included,
    so the final answer alone misses them; Toneva et al. and Pleiss et al.'s area under the margin read the
    same training dynamics). `storage.suspects` lists them least likely label first (docs/label_review.md)."""
    forgetting = np.asarray(pool.per_example["forgetting"], dtype=np.float64)
    right_share = np.asarray(pool.per_example.get("right_share", np.ones(len(forgetting))), dtype=np.float64)
    mostly_wrong = np.nan_to_num(right_share, nan=1.0) <= 0.5
    final_wrong = np.asarray(pool.probs).argmax(1) != np.asarray(pool.labels)
    return final_wrong | np.isinf(forgetting) | ((forgetting >= 1) & mostly_wrong)


def run_coreset(config: CoresetConfig, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Select, train the target on the subset (and the baselines), write and return the JSON result."""
    check_config(config)
    result = _on_project(config, progress) if config.project is not None else _on_folder(config, progress)
    result["machine"] = machine_info()
    config.out.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_write(config.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def _on_folder(config: CoresetConfig, progress: Callable[[str], None]) -> dict:
    assert config.data is not None
    data = load_labeled_data(config)
    keep_n = keep_count(config.keep, data.labels, data.classes, config.balance)
    settings = _settings(config, data.classes)
    selector = stage_config(settings, config.selector)
    progress(f"{config.selector} ({selector.model_name}) trains on {len(data.labels)} labels and scores them")
    model = build_model(selector.model_name, len(data.classes), data.size, seed=config.seed)
    scored = score_labeled_set(model, data.images, data.labels, selector.train, data.normalization)
    pool = labeled_pool(scored, data.labels)
    started = time.perf_counter()
    picks = select(pool, config.method, keep_n, config.balance, config.seed)
    select_s = time.perf_counter() - started
    target = stage_config(settings, "target")
    progress(f"target ({target.model_name}) trains on the {keep_n} kept by {config.method}")
    subset = train_target(target, data, picks)
    stages = {"proxy_s": scored.train_s, "score_s": scored.score_s, "select_s": select_s, "target_s": subset["seconds"]}
    result = _result(config, selector.model_name, target.model_name, subset, stages)
    result.update(data=str(config.data), n_train=len(data.labels), n_test=len(data.test_labels))
    result["kept"] = sorted(data.paths[int(p)] for p in picks)  # relative to train/
    if config.subset_csv is not None:
        write_subset_csv(config.subset_csv, data, picks)
    everything = np.arange(len(data.labels))
    if config.baselines or config.dynamic_keep:
        progress(f"baseline: target on all {len(data.labels)}")
        result["full"] = train_target(target, data, everything)
    if config.baselines:
        started = time.perf_counter()
        drawn = select(pool, "random", keep_n, config.balance, config.seed + 1)
        drawn_s = time.perf_counter() - started
        progress(f"baseline: target on a random {keep_n}")
        random_row = train_target(target, data, drawn)
        result["random"] = {**random_row, "seconds": round(random_row["seconds"] + drawn_s, 2)}
    if config.dynamic_keep:
        progress(f"DynaMS: target on all {len(data.labels)}, keeping {config.dynamic_keep:.0%} on average")
        sampler = DynamicKeep(config.dynamic_keep)
        result["dynamic"] = _dynamic_row(train_target(target, data, everything, sampler=sampler), sampler, result)
    return result


def _on_project(config: CoresetConfig, progress: Callable[[str], None]) -> dict:
    """The same run on a project: the kept share is saved as a core-set run (the Curate page shows it); the
    target is measured on the project's labeled validation images. Models and training come from the
    project's settings."""
    from engine.jobs.coreset import curate
    from engine.target import fit_target

    assert config.project is not None
    project = storage.open_project(config.project)
    said = {"message": ""}

    def report(fraction: float, message: str) -> None:
        if message.split(":")[0] != said["message"]:
            said["message"] = message.split(":")[0]
            progress(message)

    run = curate(
        project,
        method=config.method,
        keep=config.keep,
        balance=config.balance,
        selector=config.selector,
        seed=config.seed,
        on_progress=report,
    )

    def target_row(**how) -> tuple[dict, dict]:
        fit = fit_target(project, report, **how)
        metrics = fit.metrics
        row = {"test_acc": metrics["accuracy"], "seconds": round(metrics["train_s"], 2), "n": metrics["n_labels"]}
        return row, metrics

    progress(f"target trains on the {run.n_kept} kept by {config.method}")
    subset, metrics = target_row(coreset_run=run.id)
    stages = {
        "proxy_s": run.train_s or 0.0,
        "score_s": run.score_s or 0.0,
        "select_s": run.select_s or 0.0,
        "target_s": subset["seconds"],
    }
    result = _result(config, run.selector_model, metrics["model"], subset, stages)
    result.update(
        project=str(project.root),
        coreset_run=run.id,
        n_train=run.n_labeled,
        n_test=metrics["n_validation"],
        test_set="the project's labeled validation images",
        kept=storage.kept_item_ids(project, run.id),
    )
    if config.subset_csv is not None:
        storage.export_labels_csv(project, config.subset_csv, coreset_run=run.id)
    if config.baselines or config.dynamic_keep:
        progress(f"baseline: target on all {run.n_labeled}")
        result["full"] = target_row()[0]
    if config.baselines:
        labels = storage.read_round_inputs(project).training
        ids = np.array(sorted(labels))
        probs = np.zeros((len(ids), len(storage.class_names(project))), np.float32)
        pool = PoolScores(probs, probs, labels=np.array([labels[i] for i in ids]))
        drawn = ids[select(pool, "random", run.n_kept, config.balance, config.seed + 1)]
        progress(f"baseline: target on a random {run.n_kept}")
        result["random"] = target_row(items=drawn.tolist())[0]
    if config.dynamic_keep:
        progress(f"DynaMS: target on all {run.n_labeled}, keeping {config.dynamic_keep:.0%} on average")
        row, metrics = target_row(dynamic_keep=config.dynamic_keep)
        result["dynamic"] = {**row, **_saved(row, metrics["dynamic"], result["full"])}
    return result


def _result(config: CoresetConfig, selector_model: str, target_model: str, subset: dict, stages: dict) -> dict:
    return {
        "method": config.method,
        "keep": config.keep,
        "selector": config.selector,
        "selector_model": selector_model,
        "target_model": target_model,
        "balance": config.balance,
        "seed": config.seed,
        "subset": {**subset, "seconds": round(sum(stages.values()), 2)},  # end to end
        "stages": {name: round(value, 2) for name, value in stages.items()},
    }


def _dynamic_row(row: dict, sampler: DynamicKeep, result: dict) -> dict:
    done = sampler.report
    dynamic = {"keep": sampler.keep, "steps": done.steps, "full_steps": done.full_steps}
    return {**row, **_saved(row, dynamic, result["full"])}


def _saved(row: dict, dynamic: dict, full: dict) -> dict:
    """The DynaMS row's steps against full training's plan, and its seconds against the full run's."""
    return {
        "keep": dynamic["keep"],
        "steps": dynamic["steps"],
        "full_steps": dynamic["full_steps"],
        "steps_saved": round(1 - dynamic["steps"] / max(1, dynamic["full_steps"]), 4),
        "seconds_saved": round(1 - row["seconds"] / full["seconds"], 4) if full["seconds"] else None,
    }


def load_labeled_data(config: CoresetConfig) -> LabeledData:
    """Decode train/ and test/ at one size."""
    assert config.data is not None
    root = config.data / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    size = config.image_size or folder_image_size(root, classes)
    paths, labels = class_folder_images(root, classes)
    images = np.stack([decode_image(path, size) for path in paths])
    test_images, test_labels = load_test_set(config.data / "test", classes, size)
    mean, std = channel_stats(images)
    relative = tuple(path.relative_to(root).as_posix() for path in paths)
    return LabeledData(images, labels, test_images, test_labels, (tuple(mean), tuple(std)), classes, size, relative)


def write_subset_csv(dest: Path, data: LabeledData, picks: np.ndarray) -> None:
    """Every labeled image of `data` as a CSV row: path (relative to train/), class and kept (1 or 0): the
    columns `proxy-labeler import-labels` reads, and the `kept` column of the project exports."""
    kept = np.zeros(len(data.labels), bool)
    kept[picks] = True
    dest.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_write(dest) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "class", "kept"))
        for path, label, flag in zip(data.paths, data.labels, kept, strict=True):
            writer.writerow((spreadsheet_safe(path), spreadsheet_safe(data.classes[label]), int(flag)))


def train_target(stage, data: LabeledData, picks: np.ndarray, sampler: Sampler | None = None) -> dict:
    """Train the target on `picks` of the labeled set (with `sampler`, e.g. DynaMS) for the picks' share of the
    steps and seconds all of it would get (`engine.config.scaled_to_subset`); its test accuracy, seconds and
    size."""
    model = build_model(stage.model_name, len(data.classes), data.size, seed=stage.train.seed)
    config = (
        stage.train if len(picks) == len(data.labels) else scaled_to_subset(stage.train, len(data.labels), len(picks))
    )
    started = time.perf_counter()
    train(model, data.images[picks], data.labels[picks], config, data.normalization, sampler=sampler)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, data.test_images, data.test_labels, data.normalization)
    return {"test_acc": round(accuracy, 4), "seconds": round(seconds, 2), "n": len(picks)}


def _settings(config: CoresetConfig, classes: list[str]) -> storage.Settings:
    return storage.Settings(
        image_root=str(config.data / "train" if config.data is not None else config.project),
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
