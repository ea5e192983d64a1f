"""`python -m engine simulate`: the whole active-learning loop headless, with an oracle.

Ground truth comes from an ImageFolder tree: `ROOT/train/<class>/*` is the
pool, `ROOT/test/<class>/*` the test set. The loop goes through the real
storage layer in a temporary project: ingest, the random initial batch,
then rounds until the budget is spent, the oracle labeling each queued
batch. Each round reports the selector's test accuracy and its train /
score / select seconds; at the end the target trains on every label.
`--selector target` selects with the target architecture and training: the
baseline the Selection-via-Proxy paper compares against. `--candidates seals`
chooses each batch among the `--seals-k` nearest neighbours of the labeled
images only (SEALS; each round's row then says how many candidates it had).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import storage
from engine.backbone_files import check_backbone_setting, check_backbone_users
from engine.config import BACKBONE_TARGET, TRAINING_LEVELS, check_model_name, resolve_model_name
from engine.distributed.launch import Launch, launch_from_args, launching, on_device
from engine.embeddings import embed_images
from engine.frozen import accuracy_on
from engine.names import check_labeling_strategy
from engine.pool_cache import decode_image, pick_image_size
from engine.representation import train_ssl_backbone
from engine.round import RoundOutcome, run_first_round, select_next_batch
from engine.target import fit_target
from engine.train import evaluate
from storage.walk import find_images

CSV_COLUMNS = ("round", "labeled", "proxy_test_acc", "train_s", "score_s", "select_s", "target_test_acc")


@dataclass(frozen=True)
class SimulateConfig:
    """One simulation; field names match the command-line flags."""

    data: Path
    out: Path
    strategy: str = "least_confidence"
    initial: int = 1000
    round_size: int = 1000
    budget: int = 5000
    proxy: str = "auto"
    target: str = "auto"
    selector: str = "proxy"  # proxy | target
    seed: int = 0
    proxy_training: str = "balanced"  # fast | balanced | thorough
    target_training: str = "balanced"
    proxy_steps: int = 0  # fixed optimizer steps; 0 = planned by the training level
    target_steps: int = 0
    eval_every_round: bool = False
    device: str = "auto"
    image_size: int = 0  # 0 = picked from the pool
    workdir: Path | None = None  # keep the project here instead of a temp dir
    backbone: str = "none"  # none | ssl (trained on the pool first) | a local weights file
    initial_strategy: str = "auto"  # round 0: auto | random | typiclust | probcover
    ssl_minutes: float = 10.0  # how long the ssl backbone trains
    ssl_steps: int = 0  # a fixed number of SSL steps instead (0 = ssl_minutes)
    candidates: str = "all"  # all | seals: each batch chosen among the labeled images' nearest neighbours
    seals_k: int = 100  # neighbours per labeled image with seals
    launch: Launch = field(default_factory=Launch)  # processes for training and scoring (engine.distributed)


def config_from_args(args: argparse.Namespace) -> SimulateConfig:
    """SimulateConfig from parsed flags (engine.cli); flags not given keep the defaults."""
    names = {f.name for f in dataclasses.fields(SimulateConfig)} - {"launch"}
    given = {k: v for k, v in vars(args).items() if k in names}
    return SimulateConfig(**given, launch=launch_from_args(args) if hasattr(args, "processes") else Launch())


def main(args: argparse.Namespace) -> int:
    """Entry point of `python -m engine simulate`."""
    result = simulate(config_from_args(args))
    target = result["target"]
    print(
        f"\ntarget test accuracy {target['test_acc']:.4f} with {target['labeled']} labels; results in {args.out}",
        file=sys.stderr,
    )
    return 0


def simulate(config: SimulateConfig, progress=None) -> dict:
    """Run one simulation and write its JSON (and CSV) to `config.out`; return the JSON dict."""
    started = time.perf_counter()
    check_config(config)
    progress = progress or ProgressLine(expected_rounds(config))
    with _workdir(config.workdir) as workdir, launching(on_device(config.launch, config.device)):
        project, classes = _make_project(config, Path(workdir))
        oracle = _oracle(project, classes)
        size = storage.load_settings(project).image_size
        test_images, test_labels = load_test_set(config.data / "test", classes, size)
        test_embeddings: dict[str, np.ndarray] = {}  # per backbone fingerprint, embedded once
        # the target as selector trains as the target does: its model, level and steps
        selector_stage = "target" if config.selector == "target" else "proxy"

        ssl = _train_backbone(project, config, progress)
        first = run_first_round(project)
        rows = [_row(first, None)]
        _label_queue(project, first, oracle)
        while storage.budget_left(project) > 0:
            progress.round(first.index + len(rows))
            outcome = select_next_batch(project, progress.update, stage=selector_stage)
            acc = _proxy_accuracy(outcome, test_images, test_labels, test_embeddings)
            row = _row(outcome.round, acc)
            if outcome.candidates is not None:
                row["candidates"] = outcome.candidates
            if config.eval_every_round:
                row["target_test_acc"] = _target_accuracy(project, test_images, test_labels, progress)[0]
            rows.append(row)
            _label_queue(project, outcome.round, oracle)

        progress.round(None, "training the target")
        test_acc, train_s = _target_accuracy(project, test_images, test_labels, progress)
        result = {
            "settings": _settings_json(config, classes, project, len(test_labels)),
            "rounds": rows,
            "target": {"test_acc": test_acc, "train_s": train_s, "labeled": len(storage.training_labels(project))},
            "total_s": time.perf_counter() - started,
            "processes": config.launch.processes,
        }
        if ssl is not None:
            result["ssl"] = ssl
    progress.done()
    write_results(result, config.out)
    return result


def check_config(config: SimulateConfig) -> None:
    """ValueError naming the first bad setting, before any work starts."""
    if not (config.data / "train").is_dir():
        raise ValueError(f"{config.data}/train is not a folder; --data must hold train/<class>/ and test/<class>/")
    if not (config.data / "test").is_dir():
        raise ValueError(f"{config.data}/test is not a folder; --data must hold train/<class>/ and test/<class>/")
    check_labeling_strategy(config.strategy)
    check_model_name(config.proxy, "proxy")
    check_model_name(config.target, "target")
    check_backbone_setting(config.backbone)
    if config.initial_strategy not in storage.INITIAL_STRATEGIES:
        raise ValueError(f"--initial-strategy must be one of {', '.join(storage.INITIAL_STRATEGIES)}")
    check_backbone_users(config.backbone, config.proxy, config.target)
    if config.selector not in ("proxy", "target"):
        raise ValueError(f"selector must be proxy or target, got {config.selector!r}")
    if (
        config.selector == "target"
        and resolve_model_name(config.target, "target", config.device, config.backbone) == BACKBONE_TARGET
    ):
        raise ValueError(
            "--selector target selects with a target trained on pixels; with a backbone give "
            "--target a model name (the auto target is then the backbone fine-tuned)"
        )
    for name in ("initial", "round_size", "budget"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("proxy_steps", "target_steps"):
        if getattr(config, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 (planned) or more")
    for name in ("proxy_training", "target_training"):
        if getattr(config, name) not in TRAINING_LEVELS:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(TRAINING_LEVELS)}")
    if config.initial > config.budget:
        raise ValueError(f"--initial ({config.initial}) is larger than --budget ({config.budget})")
    if config.candidates not in storage.project.CANDIDATES:
        raise ValueError(f"--candidates must be one of {', '.join(storage.project.CANDIDATES)}")
    if not 1 <= config.seals_k <= storage.project.MAX_SEALS_K:
        raise ValueError(f"--seals-k must be from 1 to {storage.project.MAX_SEALS_K}")


def expected_rounds(config: SimulateConfig) -> int:
    """Rounds the loop will make if the pool is large enough: round 0 plus the selection rounds."""
    return 1 + math.ceil(max(0, config.budget - config.initial) / config.round_size)


def _make_project(config: SimulateConfig, workdir: Path) -> tuple[storage.Project, list[str]]:
    train_root = (config.data / "train").resolve()
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    settings = storage.Settings(
        image_root=str(train_root),
        classes=tuple(classes),
        budget=config.budget,
        round_size=config.round_size,
        initial_size=config.initial,
        strategy=config.strategy,
        proxy=config.proxy,
        target=config.target,
        image_size=config.image_size,
        seed=config.seed,
        device=config.device,
        proxy_training=config.proxy_training,
        target_training=config.target_training,
        proxy_steps=config.proxy_steps,
        target_steps=config.target_steps,
        auto_next_round=False,
        backbone=config.backbone,
        initial_strategy=config.initial_strategy,
        ssl_minutes=config.ssl_minutes,
        candidates=config.candidates,
        seals_k=config.seals_k,
    )
    project = storage.create_project(workdir / "project", settings)
    storage.ingest(project)
    items = storage.usable_items(project)
    if len(items) < config.budget:
        raise ValueError(f"the pool has {len(items)} usable images, fewer than the budget of {config.budget}")
    if not config.image_size:
        size = pick_image_size([(item.width, item.height) for item in items])
        storage.save_settings(project, dataclasses.replace(storage.load_settings(project), image_size=size))
    return project, classes


def _oracle(project: storage.Project, classes: list[str]) -> dict[int, str | object]:
    """item id -> its class folder's name (SKIP for a file outside any class folder)."""
    known = set(classes)
    answers: dict[int, str | object] = {}
    for item in storage.usable_items(project):
        folder = item.path.split("/", 1)[0] if "/" in item.path else None
        answers[item.id] = folder if folder in known else storage.SKIP
    return answers


def _label_queue(project: storage.Project, made: storage.Round, oracle: dict) -> None:
    for item_id, _ in storage.round_queue(project, made.id):
        storage.set_label(project, item_id, oracle[item_id], annotator="oracle", round_id=made.id)


def load_test_set(test_root: Path, classes: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode `test_root/<class>/*` once: (uint8 [N, 3, S, S], int64 class indices [N])."""
    paths, labels = class_folder_images(test_root, classes)
    images = np.stack([decode_image(path, image_size) for path in paths])
    return images, labels


def class_folder_images(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The images of `root/<class>/*`, class folders in name order, and their int64 class indices; ValueError
    for a folder not among `classes`, or no image at all."""
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in index:
            raise ValueError(f"class {folder.name!r} of {root} is not among the train classes {classes}")
        found = find_images(folder).paths
        paths += [folder / p for p in found]
        labels += [index[folder.name]] * len(found)
    if not paths:
        raise ValueError(f"no images under {root}/<class>/")
    return paths, np.asarray(labels, dtype=np.int64)


def _target_accuracy(project, test_images, test_labels, progress) -> tuple[float, float]:
    fit = fit_target(project, progress.update)
    acc = evaluate(fit.model, fit.prepare(test_images), test_labels, fit.normalization, tta=True)
    return acc, fit.metrics["train_s"]


def _train_backbone(project: storage.Project, config: SimulateConfig, progress) -> dict | None:
    """Learn the ssl backbone on the pool before round 0 (the app runs it as a job right after ingest)."""
    if config.backbone != "ssl":
        return None
    progress.round(0, "self-supervised backbone")
    return train_ssl_backbone(project, progress.update, steps=config.ssl_steps)


def _proxy_accuracy(outcome: RoundOutcome, test_images, test_labels, cache: dict) -> float:
    """Test accuracy of the round's selector: on pixels, or (a frozen head) on the backbone's embeddings."""
    if outcome.backbone is None:
        return evaluate(outcome.model, test_images, test_labels, outcome.pool.normalization)
    key = outcome.backbone.fingerprint
    if key not in cache:
        cache[key] = embed_images(outcome.backbone, test_images)
    assert outcome.features is not None  # a frozen head comes with its features
    return accuracy_on(outcome.model, outcome.features, cache[key], test_labels)


def _row(made: storage.Round, acc: float | None) -> dict:
    return {
        "round": made.index,
        "labeled": made.n_labeled,
        "proxy_test_acc": acc,
        "train_s": made.train_s,
        "score_s": made.score_s,
        "select_s": made.select_s,
    }


def _settings_json(config: SimulateConfig, classes, project, n_test: int) -> dict:
    values: dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    values["launch"] = {k: v for k, v in dataclasses.asdict(config.launch).items() if v is not None}
    values.update(
        classes=list(classes),
        pool_size=len(storage.usable_items(project)),
        test_size=n_test,
        image_size=storage.load_settings(project).image_size,
    )
    return values


def write_results(result: dict, out: Path) -> tuple[Path, Path]:
    """Write the JSON to `out` and the rounds as CSV beside it (same name, .csv); both atomically."""
    with storage.atomic_write(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    csv_path = out.with_suffix(".csv")
    with storage.atomic_write(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["rounds"])
    return out, csv_path


class _workdir:
    """The given folder, or a temporary one removed afterwards."""

    def __init__(self, path: Path | None):
        self.path = path
        self.temp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        if self.path is not None:
            Path(self.path).mkdir(parents=True, exist_ok=True)
            return str(self.path)
        self.temp = tempfile.TemporaryDirectory(prefix="engine-simulate-")
        return self.temp.name

    def __exit__(self, *exc) -> None:
        if self.temp is not None:
            self.temp.cleanup()


class ProgressLine:
    """A one-line progress display on stderr, redrawn with \\r at most 10 times a second."""

    def __init__(self, rounds: int, stream=None):
        self.rounds, self.stream = rounds, stream or sys.stderr
        self.current, self.label, self.last = 0, "", 0.0

    def round(self, index: int | None, label: str = "") -> None:
        """Start round `index` (None: the final target stage)."""
        if index is not None:
            self.current = index
        self.label = label or f"round {self.current}/{self.rounds - 1}"
        self.update(0.0, "", force=True)

    def update(self, fraction: float, message: str, force: bool = False) -> None:
        """Redraw with the current stage's fraction (0..1) and message."""
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        done = min(1.0, (self.current + fraction) / max(1, self.rounds))
        bar = "#" * int(done * 20)
        self.stream.write(f"\r[{bar:<20}] {self.label} {message[:60]:<60}")
        self.stream.flush()

    def done(self) -> None:
        """End the line."""
        self.stream.write("\n")
        self.stream.flush()
