"""The target stage: train the target model on every training label, evaluate, save a checkpoint.

`fit_target` trains and evaluates (simulate uses it to test the target on a
held-out set); `run_target` also saves the checkpoint under
`project.models_dir / "target"` with the metrics beside it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

import storage
from engine.checkpoint import save_checkpoint
from engine.config import BACKBONE_TARGET, scaled_to_subset, stage_config
from engine.device import Normalization, model_device
from engine.distributed.launch import train_model
from engine.embeddings import backbone_classifier, resize_images
from engine.intervals import wilson
from engine.models import build_model
from engine.pool_cache import PoolCache
from engine.representation import require_backbone
from engine.round import RoundError, load_inputs_and_pool
from engine.saved_proxy import rescore
from engine.score import predict_logits
from engine.train import Cancelled, Progress, StepsSeen
from engine.training.dynamic import DynamicKeep

CHECKPOINT_DIR = "target"
SUBSET_CHECKPOINT_DIR = "target_subset"  # the target trained on a core-set run's kept items
METRICS_FILE = "metrics.json"


class TargetError(RoundError):
    """The target cannot be trained now; the message says what to do instead."""


@dataclass
class TargetFit:
    """A trained target model and what it was trained and evaluated on."""

    model: nn.Module
    pool: PoolCache
    class_names: list[str]
    metrics: dict  # see validation_metrics, plus train_s, n_labels, model, steps, training
    image_size: int  # what the model takes: the pool's size, or a fine-tuned backbone's input size
    normalization: Normalization
    validation: dict[int, int] = dataclasses.field(default_factory=dict)  # item id -> class it was measured on
    predicted: np.ndarray | None = None  # the target's class for each of them, ascending item id

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """The pool's uint8 images [N, 3, S, S] at the model's input size."""
        return resize_images(images, self.image_size)


def fit_target(
    project: storage.Project,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    model_name: str | None = None,
    steps: int | None = None,
    level: str | None = None,
    coreset_run: int | None = None,
    items: Collection[int] | None = None,
    dynamic_keep: float | None = None,
) -> TargetFit:
    """Train `settings.target` (or `model_name`) at its training level (or `steps` / `level`)
    on every training label (or, with `coreset_run`, on that run's kept items that still carry a label; with
    `items`, on those) and evaluate it on the labeled validation items. `dynamic_keep` trains with DynaMS
    (`engine.training.dynamic`: the smallest-margin share of each class, re-selected as it learns, `dynamic_keep`
    of the data on average); its metrics then say the steps it took against full training's.

    Raises TargetError when fewer than two classes have labels (or the run is unknown), Cancelled
    when `should_stop()` turns True, TrainingFailed when the run diverged or
    collapsed to one class (no model is returned, so none is ever saved).
    """
    sampler = None if not dynamic_keep else DynamicKeep(dynamic_keep)  # a bad keep is refused here, before decoding
    kept = _kept(project, coreset_run) if items is None else frozenset(int(i) for i in items)
    everything = storage.read_round_inputs(project)
    _check_labels(_restricted(everything, kept))  # before decoding: fail fast
    report = on_progress or (lambda fraction, message: None)
    inputs, pool = load_inputs_and_pool(project, everything, lambda f: report(0.05 * f, "decoding images"))
    n_full = len(inputs.training)  # every training label: a subset trains its share of their plan
    inputs = _restricted(inputs, kept)
    _check_labels(inputs)  # again: decoding may have found images missing
    settings = inputs.settings
    stage = stage_config(settings, "target", model_name=model_name, steps=steps, level=level)
    if kept is not None:  # a subset trains its share of the steps and seconds all the labels would get
        stage = dataclasses.replace(stage, train=scaled_to_subset(stage.train, n_full, len(inputs.training)))

    started = time.perf_counter()
    model, image_size, normalization = _initial_model(project, settings, stage.model_name, pool, stage.train.seed)
    images, targets = pool.arrays(inputs.training)
    images = resize_images(images, image_size)

    def on_train(p: Progress) -> None:
        report(0.05 + 0.9 * p.fraction, f"training the target: step {p.step}/{p.steps}, loss {p.loss:.3f}")

    seen = StepsSeen(on_train)
    train_model(
        model, images, targets, stage.train, normalization, on_progress=seen, should_stop=should_stop, sampler=sampler
    )
    train_s = time.perf_counter() - started
    if should_stop is not None and should_stop():
        raise Cancelled("target training cancelled")
    report(0.95, "evaluating on the validation set")
    fit = TargetFit(
        model=model,
        pool=pool,
        class_names=list(settings.classes),
        metrics={},
        image_size=image_size,
        normalization=normalization,
        validation=dict(inputs.validation),
    )
    fit.metrics = validation_metrics(fit, inputs.validation, len(settings.classes))
    level = level or settings.target_training
    fit.metrics.update(
        train_s=train_s,
        n_labels=len(targets),
        model=stage.model_name,
        steps=seen.last,
        training=f"{stage.train.steps} steps" if stage.train.steps else level,
    )
    if sampler is not None:
        done = sampler.report
        fit.metrics["dynamic"] = {
            "keep": float(dynamic_keep or 0),
            "steps": done.steps,
            "full_steps": done.full_steps,
            "step_share": round(done.step_share, 4),
            "selections": len(done.selections),
            "selection_s": round(done.selection_seconds, 2),
        }
    if coreset_run is not None:
        run = storage.get_coreset_run(project, coreset_run)
        fit.metrics["coreset"] = {"run": run.id, "method": run.method, "keep": run.keep, "n_labeled": run.n_labeled}
    return fit


def _kept(project: storage.Project, coreset_run: int | None) -> frozenset[int] | None:
    if coreset_run is None:
        return None
    try:
        return frozenset(storage.kept_item_ids(project, coreset_run))
    except storage.StorageError as exc:
        raise TargetError(f"{exc}: curate the labeled set again on the Curate page") from exc


def _restricted(inputs: storage.RoundInputs, kept: frozenset[int] | None) -> storage.RoundInputs:
    """`inputs` with only the `kept` training labels (all of them when None)."""
    if kept is None:
        return inputs
    return dataclasses.replace(inputs, training={i: c for i, c in inputs.training.items() if i in kept})


def _check_labels(inputs: storage.RoundInputs) -> None:
    if len(set(inputs.training.values())) < 2:
        raise TargetError("the target needs labels in at least 2 classes; label more images first")


def _initial_model(
    project: storage.Project, settings: storage.Settings, model_name: str, pool: PoolCache, seed: int
) -> tuple[nn.Module, int, Normalization]:
    """(the model to train, its input size, its normalization): a registered model from scratch on
    the pool's images, or (BACKBONE_TARGET) the project's backbone with a new classifier."""
    classes = len(settings.classes)
    if model_name != BACKBONE_TARGET:
        return build_model(model_name, classes, pool.image_size, seed=seed), pool.image_size, pool.normalization
    try:
        backbone = require_backbone(project, settings, pool.image_size, instead="a target model trained from scratch")
    except RoundError as exc:
        raise TargetError(str(exc)) from exc
    return backbone_classifier(backbone, classes, seed=seed), backbone.input_size, backbone.normalization


def run_target(
    project: storage.Project,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    coreset_run: int | None = None,
    dynamic_keep: float | None = None,
) -> dict:
    """Train and evaluate the target, save its checkpoint; return the metrics and `checkpoint` path.

    The checkpoint goes to `project.models_dir / "target"` (with `coreset_run`, trained on that run's kept
    items, to `"target_subset"`, so the target on all labels stays beside it) (engine.checkpoint
    format, loadable with `load_checkpoint`); the metrics are also written as
    `metrics.json` beside the weights. Metrics: accuracy (None without
    validation labels), correct, interval, per_class_accuracy, confusion, n_validation,
    train_s, n_labels, model, steps (run), training (level or fixed steps), and
    proxy (`proxy_on_same_images`: the last saved proxy on the same images).
    """
    fit = fit_target(project, on_progress, should_stop, coreset_run=coreset_run, dynamic_keep=dynamic_keep)
    if on_progress is not None:
        on_progress(0.97, "measuring the last proxy on the same validation images")
    fit.metrics["proxy"] = proxy_on_same_images(project, fit)
    path = save_checkpoint(
        fit.model,
        project.models_dir / (CHECKPOINT_DIR if coreset_run is None else SUBSET_CHECKPOINT_DIR),
        class_names=fit.class_names,
        image_size=fit.image_size,
        normalization=fit.normalization,
        metrics=fit.metrics,
        n_labels=fit.metrics["n_labels"],
    )
    path = Path(path)
    _write_json(path if path.is_dir() else path.parent, METRICS_FILE, fit.metrics)
    if on_progress is not None:
        on_progress(1.0, "target model saved")
    return {**fit.metrics, "checkpoint": str(path)}


def validation_metrics(fit: TargetFit, labels: dict[int, int], n_classes: int) -> dict:
    """Accuracy (with its count right and 95 % Wilson interval), per-class accuracy and confusion matrix
    on the labeled validation items `labels`; the predictions are kept in `fit.predicted`.

    confusion[i][j] counts items of class i predicted as j; per_class_accuracy[i]
    is None for a class with no validation items; accuracy is None when
    nothing in the validation set is labeled.
    """
    images, truth = fit.pool.arrays(labels)
    if labels:
        images = fit.prepare(images)
        predicted = predict_logits(fit.model, images, fit.normalization, tta=True).argmax(1)
    else:
        predicted = np.empty(0, dtype=np.int64)
    fit.predicted = predicted
    return classification_metrics(truth, predicted, n_classes)


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict:
    """accuracy, correct (of n_validation), interval (the 95 % Wilson interval of the accuracy, None with
    nothing to measure), per_class_accuracy and confusion (lists, JSON-ready) of int labels [N]."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    support = confusion.sum(1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(n_classes)]
    correct = int(np.trace(confusion))
    accuracy = correct / len(truth) if len(truth) else None
    return {
        "accuracy": accuracy,
        "correct": correct,
        "interval": list(wilson(correct, len(truth))) if len(truth) else None,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
        "n_validation": len(truth),
    }


def proxy_on_same_images(project: storage.Project, fit: TargetFit) -> dict:
    """The last saved round proxy (engine.saved_proxy) measured on exactly the validation images the target
    was: round, selector, accuracy, correct, n_validation, interval, and on how many images only the target
    (target_only) or only the proxy (proxy_only) was right; or `unavailable`, saying why there is no such
    measurement (the page then shows no difference)."""
    settings = storage.load_settings(project)
    found = rescore(project, settings, fit.pool, fit.validation, device=model_device(fit.model))
    record: dict = {"round": found.round, "selector": found.selector}
    if found.predicted is None or fit.predicted is None:
        return {**record, "unavailable": found.unavailable or "the target was measured on no validation image"}
    _, truth = fit.pool.arrays(fit.validation)
    proxy_right = found.predicted == truth
    target_right = fit.predicted == truth
    correct = int(proxy_right.sum())
    return {
        **record,
        "accuracy": correct / len(truth),
        "correct": correct,
        "n_validation": len(truth),
        "interval": list(wilson(correct, len(truth))),
        "target_only": int((target_right & ~proxy_right).sum()),
        "proxy_only": int((proxy_right & ~target_right).sum()),
    }


def _write_json(folder: Path, name: str, data: dict) -> Path:
    with storage.atomic_write(folder / name) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return folder / name
