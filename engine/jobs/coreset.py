"""The `coreset` job: keep a share of a project's training labels by a method, and flag labels that may be wrong.

The selector (the proxy, or the target's own model and training) trains once on every training
label while `engine.example_stats` records forgetting, EL2N and GraNd; the method picks
`keep` of the labels (class-balanced unless told not), and the trained selector is
tested on the labeled validation items. The run, every item's statistics, whether it is kept, and
the suspects (`engine.coreset.suspects`) are written in one transaction
(`storage.save_coreset_run`): a job stopped or killed before that writes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

import storage
from engine.backbone_files import BACKBONE_TARGET, FROZEN_PROXIES, NONE
from engine.config import stage_config
from engine.coreset import check_choice, item_scores, keep_count, select, suspects
from engine.example_stats import score_labeled_set
from engine.models import build_model
from engine.names import CORESET_DEFAULT_KEEP, CORESET_DEFAULT_METHOD
from engine.round import RoundError, load_inputs_and_pool
from engine.selection.coreset import labeled_pool
from engine.train import Cancelled, Progress, evaluate

PARAMS = {"method", "keep", "balance", "selector"}


class CoresetError(RoundError):
    """The labeled set cannot be curated now; the message says what to do instead."""


def run_coreset_job(
    project: storage.Project,
    params: dict,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    job_id: int | None = None,
) -> dict:
    """The worker's entry: `params` {method, keep, balance (default true), selector (default proxy)}; the run
    records `job_id`, the job that made it."""
    run = curate(
        project,
        method=params.get("method", CORESET_DEFAULT_METHOD),
        keep=params.get("keep", CORESET_DEFAULT_KEEP),
        balance=bool(params.get("balance", True)),
        selector=params.get("selector", "proxy"),
        on_progress=on_progress,
        should_stop=should_stop,
        job_id=job_id,
    )
    counts = storage.review_counts(project, run.id)
    return {
        "run_id": run.id,
        "method": run.method,
        "keep": run.keep,
        "n_labeled": run.n_labeled,
        "n_kept": run.n_kept,
        "selector_model": run.selector_model,
        "val_acc": run.val_acc,
        "n_val": run.n_val,
        "suspects": counts.suspects,
        "train_s": run.train_s,
        "score_s": run.score_s,
        "select_s": run.select_s,
    }


def curate(
    project: storage.Project,
    *,
    method: str,
    keep: float,
    balance: bool = True,
    selector: str = "proxy",
    seed: int | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    job_id: int | None = None,
) -> storage.CoresetRun:
    """Run the selector once on the project's training labels, keep `keep` of them by `method`, save the run.
    `seed` (default: the project's) seeds the selector's training and the selection's tie-breaks.

    CoresetError (before any decoding or training) for a bad method, keep or selector, fewer than two
    labeled classes, or a class the kept share would leave empty; Cancelled when `should_stop()` turns
    true; TrainingFailed when the selector diverged or learned nothing (nothing is saved).
    """
    report = on_progress or (lambda fraction, message: None)
    inputs = storage.read_round_inputs(project)
    classes = list(inputs.settings.classes)
    try:
        check_choice(method, keep, selector)
        keep_count(keep, np.array(list(inputs.training.values()), dtype=np.int64), classes, balance)
    except ValueError as exc:
        raise CoresetError(_no_labels(inputs) or str(exc)) from exc
    inputs, pool = load_inputs_and_pool(project, inputs, lambda f: report(0.05 * f, "decoding images"))
    labels_by_item = inputs.training
    try:
        keep_n = keep_count(keep, np.array(list(labels_by_item.values()), dtype=np.int64), classes, balance)
    except ValueError as exc:  # decoding found images gone
        raise CoresetError(_no_labels(inputs) or str(exc)) from exc
    settings = inputs.settings
    stage = _selector_stage(settings, selector, seed)
    item_ids = sorted(labels_by_item)
    images, labels = pool.arrays(labels_by_item)

    def on_train(p: Progress) -> None:
        report(0.05 + 0.85 * p.fraction, f"{selector} trains on {len(labels)} labels: step {p.step}/{p.steps}")

    model = build_model(stage.model_name, len(classes), pool.image_size, seed=stage.train.seed)
    scored = score_labeled_set(
        model, images, labels, stage.train, pool.normalization, on_progress=on_train, should_stop=should_stop
    )
    if should_stop is not None and should_stop():
        raise Cancelled("curation cancelled")
    report(0.92, f"selecting {keep_n} of {len(labels)} by {method}")
    scores = labeled_pool(scored, labels)
    started = time.perf_counter()
    picks = select(scores, method, keep_n, balance, settings.seed if seed is None else seed)
    select_s = time.perf_counter() - started
    val_acc, n_val = _validation_accuracy(model, pool, inputs.validation)
    report(0.97, "saving the run")
    run = storage.save_coreset_run(
        project,
        method=method,
        keep=float(keep),
        balance=balance,
        selector=selector,
        selector_model=stage.model_name,
        label_watermark=inputs.label_watermark,
        job_id=job_id,
        rows=_rows(item_ids, labels, scores, picks, method),
        steps=scored.steps,
        train_s=scored.train_s,
        score_s=scored.score_s,
        select_s=select_s,
        val_acc=val_acc,
        n_val=n_val,
    )
    report(1.0, f"kept {run.n_kept} of {run.n_labeled} labels")
    return run


def _no_labels(inputs: storage.RoundInputs) -> str | None:
    if not inputs.training:
        return "the project has no training labels yet: label images (or import labels) first"
    return None


def _selector_stage(settings: storage.Settings, selector: str, seed: int | None):
    """The selector's model and training: the stage's settings, except that a head on the backbone's
    embeddings (or the fine-tuned backbone) is replaced by the device's model trained on pixels, since the
    statistics are gathered while a model trains on the images."""
    stage = stage_config(settings, selector)
    if stage.model_name in FROZEN_PROXIES or stage.model_name == BACKBONE_TARGET:
        stage = stage_config(dataclasses.replace(settings, backbone=NONE), selector, model_name="auto")
    if seed is not None:
        stage = dataclasses.replace(stage, train=dataclasses.replace(stage.train, seed=seed))
    return stage


def _validation_accuracy(model, pool, validation: dict[int, int]) -> tuple[float | None, int]:
    if not validation:
        return None, 0
    images, labels = pool.arrays(validation)
    return evaluate(model, images, labels, pool.normalization, tta=True), len(labels)


def _rows(item_ids, labels, scores, picks, method) -> list[storage.CoresetRow]:
    rank = {int(position): r for r, position in enumerate(picks)}
    per_item = item_scores(method, scores, picks)
    stats = scores.per_example
    flagged = suspects(scores)
    probs = np.asarray(scores.probs)
    predicted = probs.argmax(1)
    own = probs[np.arange(len(labels)), labels]
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1.0
    alternative = others.argmax(1)
    right_share = stats["right_share"]
    return [
        storage.CoresetRow(
            item_id=int(item_id),
            label=int(labels[p]),
            kept=p in rank,
            rank=rank.get(p),
            score=None if per_item is None else float(per_item[p]),
            forgetting=float(stats["forgetting"][p]),
            el2n=float(stats["el2n"][p]),
            grand=float(stats["grand"][p]),
            predicted=int(predicted[p]),
            alternative=int(alternative[p]),
            confidence=float(own[p]),
            right_share=float(right_share[p]),
            suspect=bool(flagged[p]),
        )
        for p, item_id in enumerate(item_ids)
    ]
