"""One active-learning round: train the selector on the labels, score the pool, queue the next batch.

Round 0 (`run_first_round`) is a seeded random batch, or with a backbone
TypiClust / ProbCover on its embeddings. Every later round (`run_round`)
reads the training labels from storage, trains the proxy from scratch (or
warm-starts it from the previous round) - or, for a `linear` / `mlp` proxy,
a head on the backbone's cached pool embeddings (engine.frozen) - evaluates
it on the labeled validation items, scores the whole usable pool in one
pass, picks the batch with the project's strategy and writes it, with
per-item scores and stage timings, in one storage transaction. Images come
only from the pool cache: once it is current, a round opens no image file.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

import storage
from engine.config import stage_config, use_tta
from engine.embeddings import Backbone, BackboneError
from engine.frozen import HEADS, Features, HeadConfig, train_head
from engine.frozen import accuracy as frozen_accuracy
from engine.frozen import pool_scores as frozen_pool_scores
from engine.initial import RoundError, candidate_ids, initial_strategy, run_initial_round, taken_ids
from engine.models import Model, build_model, load_pretrained
from engine.pool_cache import PoolCache, UnreadableImage, build_pool_cache, load_pool_cache, pick_image_size
from engine.representation import load_backbone, project_embeddings, require_backbone
from engine.score import PoolScores, score_pool
from engine.select import DISTANCE_STRATEGIES, STRATEGIES, strategy_scores
from engine.train import Cancelled, LearnedNothing, Progress, StepsSeen, TrainConfig, evaluate, plan, train
from storage.items import inside_root

OnProgress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]

WARM_START_FILE = "proxy_last.safetensors"
# Share of a round's progress bar per stage; decoding is only needed when the cache is stale.
STAGE_SPANS = {"decode": (0.0, 0.1), "train": (0.1, 0.85), "score": (0.85, 0.95), "select": (0.95, 1.0)}


@dataclass
class ProjectPool:
    """The project's usable items as pool positions over the pool cache."""

    item_ids: np.ndarray  # int64 [N], usable item ids in id order: pool position -> item id
    images: np.ndarray  # uint8 [N, 3, S, S] (the cache memmap itself when it matches)
    normalization: tuple  # (mean, std) per channel, 0..1 units
    image_size: int  # S, pixels

    def positions(self, item_ids) -> np.ndarray:
        """Pool positions (int64) of `item_ids`, in the order given."""
        ids = np.asarray(list(item_ids), dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids)
        if len(ids) and (pos.max() >= len(self.item_ids) or np.any(self.item_ids[pos] != ids)):
            raise RoundError("some labeled items are not usable pool items; re-ingest the image folder")
        return pos


@dataclass
class RoundOutcome:
    """A written round plus the selector model that chose it (for callers that evaluate it)."""

    round: storage.Round
    model: nn.Module
    pool: ProjectPool
    train_steps: int  # optimizer steps the selector took
    backbone: Backbone | None = None  # set when the selector is a head on the backbone's embeddings ...
    features: Features | None = None  # ... which are these (the model then takes features, not pixels)


def run_round(
    project: storage.Project,
    on_progress: OnProgress | None = None,
    should_stop: ShouldStop | None = None,
    *,
    model_name: str | None = None,
    steps: int | None = None,
    level: str | None = None,
    stage: str = "proxy",
    early: bool = False,
) -> storage.Round:
    """Train the selector on every training label, score the pool and queue the next batch.

    The selector is the project's proxy at its training level; `stage="target"`
    selects with the target's model and training instead (the SVP baseline),
    and `model_name` / `steps` / `level` override either. `on_progress(fraction 0..1, message)` follows decode,
    training steps, scoring and selection; `should_stop()` returning True
    raises engine.train.Cancelled and writes nothing. Raises RoundError when
    the budget is spent, the previous round still has unlabeled items, fewer
    than two classes have labels, or no candidates are left; TrainingFailed
    when the proxy diverged (nothing is written). A proxy that learned
    nothing (engine.train.LearnedNothing) does not stop the round: its batch
    is drawn at random, recorded as strategy "random" with a selector that
    says why. `early` starts the round while the previous batch still has open
    items (they count as taken; their labels join the round after this one),
    so the next batch is ready when the user finishes the current one.
    """
    return select_next_batch(
        project, on_progress, should_stop, model_name=model_name, steps=steps, level=level, stage=stage, early=early
    ).round


def select_next_batch(
    project: storage.Project,
    on_progress: OnProgress | None = None,
    should_stop: ShouldStop | None = None,
    *,
    model_name: str | None = None,
    steps: int | None = None,
    level: str | None = None,
    stage: str = "proxy",
    early: bool = False,
) -> RoundOutcome:
    """`run_round`, also returning the trained selector model and the pool it scored."""
    settings = storage.load_settings(project)
    _strategy(settings.strategy)  # RoundError for an unknown name, before any work
    index = _next_index(project)
    own_proxy = stage == "proxy" and model_name is None  # the project's proxy: warm start and keep it
    config = stage_config(settings, stage, model_name=model_name, steps=steps, level=level, seed_offset=index)
    storage.reserve_validation(project)
    _batch_size(project, settings, early)  # RoundError before any decoding
    _check_classes(storage.training_labels(project), settings.classes)
    report = _Report(on_progress)
    pool = load_project_pool(project, settings, report.span("decode", "decoding images"))
    # read after decoding: an image found missing there has left the labels, the queue and the validation set
    storage.reserve_validation(project)
    size = _batch_size(project, settings, early)
    labels = storage.training_labels(project)
    _check_classes(labels, settings.classes)
    taken = pool.positions(taken_ids(project))
    _stop(should_stop)

    if config.model_name in HEADS:
        selector = _frozen_selector(project, settings, config.model_name, config.train.seed, pool, labels, report)
    else:
        selector = _pixel_selector(project, settings, config, own_proxy, pool, labels, report, should_stop)
    scores, strategy_name = selector.scores, selector.strategy or settings.strategy
    _stop(should_stop)

    report.at("select", 0.0, f"selecting {size} images ({strategy_name})")
    started = time.perf_counter()
    rng = np.random.default_rng(config.train.seed)
    picks = np.asarray(STRATEGIES[strategy_name](scores, taken, size, rng=rng), dtype=np.int64)
    item_scores = strategy_scores(strategy_name, scores, picks, labeled=taken)
    select_s = time.perf_counter() - started
    _stop(should_stop)

    learned = strategy_name == settings.strategy  # a model that learned nothing guesses nothing
    probs = scores.probs[picks]
    written = storage.create_round(
        project,
        strategy=strategy_name,
        selector=selector.name,
        item_ids=pool.item_ids[picks].tolist(),
        scores=[float(s) for s in item_scores],
        n_labeled=len(labels),
        train_s=selector.train_s,
        score_s=selector.score_s,
        select_s=select_s,
        proxy_val_acc=selector.val_acc,
        guesses=probs.argmax(axis=1).tolist() if learned else None,
        confidences=probs.max(axis=1).tolist() if learned else None,
    )
    report.at("select", 1.0, f"round {written.index} ready: {len(picks)} images to label")
    return RoundOutcome(
        round=written,
        model=selector.model,
        pool=pool,
        train_steps=selector.steps,
        backbone=selector.backbone,
        features=selector.features,
    )


@dataclass
class _Selector:
    """What a round's selector produced: the model, its validation accuracy, the pool's scores, timings."""

    model: nn.Module
    val_acc: float | None
    scores: PoolScores
    train_s: float
    score_s: float
    steps: int
    name: str  # the selector recorded with the round
    strategy: str | None = None  # overrides the project's strategy (a proxy that learned nothing)
    backbone: Backbone | None = None
    features: Features | None = None


def _pixel_selector(project, settings, stage, own_proxy, pool, labels, report, should_stop) -> _Selector:
    """A proxy trained from scratch (or warm-started) on the labeled pixels, scoring the whole pool."""
    started = time.perf_counter()
    model = build_model(stage.model_name, len(settings.classes), pool.image_size, seed=stage.train.seed)
    warm = settings.warm_start and own_proxy and _warm_start(model, project)
    ids = sorted(labels)
    images = np.asarray(pool.images[pool.positions(ids)])
    targets = np.array([labels[i] for i in ids], dtype=np.int64)
    steps = StepsSeen(_train_progress(report.span("train", "training")))
    config = warm_config(stage.train, len(ids)) if warm else stage.train
    strategy, name = None, stage.model_name
    try:
        train(model, images, targets, config, pool.normalization, on_progress=steps, should_stop=should_stop)
    except LearnedNothing as exc:
        # Selection through a proxy that learned nothing is worse than random, and failing the
        # round would leave no way to add the labels it needs: this batch is drawn at random.
        strategy, name = "random", f"random: {stage.model_name} learned nothing yet"
        report.at("train", 1.0, f"{exc}; this batch is drawn at random")
    val_acc = _validation_accuracy(project, model, pool)
    train_s = time.perf_counter() - started
    if own_proxy and strategy is None:
        _save_last(model, project)
    _stop(should_stop)
    report.at("score", 0.0, f"scoring {len(pool.item_ids)} images")
    started = time.perf_counter()
    scores = score_pool(model, pool.images, pool.normalization, tta=use_tta(settings.device))
    backbone = (
        _backbone_for_distances(project, settings, pool)
        if ((strategy or settings.strategy) in DISTANCE_STRATEGIES)
        else None
    )
    if backbone is not None:
        # distances between backbone embeddings mean more than between a few-label proxy's
        scores = PoolScores(scores.probs, project_embeddings(project, backbone, pool, settings.device))
    return _Selector(model, val_acc, scores, train_s, time.perf_counter() - started, steps.last, name, strategy)


def _backbone_for_distances(project, settings, pool) -> Backbone | None:
    try:
        return load_backbone(project, settings, pool.image_size)
    except BackboneError:
        return None  # a pixel proxy still works without its backbone


def _frozen_selector(project, settings, kind: str, seed: int, pool, labels, report) -> _Selector:
    """A linear or MLP head on the backbone's frozen pool embeddings (engine.frozen)."""
    backbone = require_backbone(project, settings, pool.image_size)
    started = time.perf_counter()
    embed_progress = report.span("train", "embedding the pool with the backbone")
    features = Features(project_embeddings(project, backbone, pool, settings.device, embed_progress))
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    ids = sorted(labels)
    head = train_head(
        features,
        pool.positions(ids),
        np.array([labels[i] for i in ids], dtype=np.int64),
        len(settings.classes),
        HeadConfig(kind=kind, seed=seed),
    )
    validation = storage.validation_labels(project)
    val_ids = sorted(validation)
    val_acc = (
        frozen_accuracy(head, features, pool.positions(val_ids), np.array([validation[i] for i in val_ids]))
        if val_ids
        else None
    )
    train_s = time.perf_counter() - started
    report.at("score", 0.0, f"scoring {len(pool.item_ids)} images")
    started = time.perf_counter()
    scores = frozen_pool_scores(head, features)
    return _Selector(
        head,
        val_acc,
        scores,
        train_s,
        embed_s + time.perf_counter() - started,
        HeadConfig().steps,
        f"{kind} on {backbone.name}",
        None,
        backbone,
        features,
    )


def run_first_round(project: storage.Project, on_progress: OnProgress | None = None) -> storage.Round:
    """Round 0 by the project's initial strategy: typiclust or probcover on the backbone's embeddings, or random.

    `auto` is typiclust when the project has a backbone and the first batch
    is at most TYPICAL_SHARE of the usable pool, else random; a backbone
    that is not ready yet (ssl still training) gives the random batch,
    recorded with a selector that says why.
    """
    settings = storage.load_settings(project)
    name, why = initial_strategy(settings, len(storage.usable_items(project)))
    if name == "random":
        return run_initial_round(project, selector=why)
    if storage.current_round(project) is not None:
        raise RoundError("the initial batch was already made; run a selection round instead")
    report = _Report(on_progress)
    storage.reserve_validation(project)
    pool = load_project_pool(project, settings, report.span("decode", "decoding images"))
    storage.reserve_validation(project)
    try:
        backbone = require_backbone(project, settings, pool.image_size, instead="a random first batch")
    except RoundError as exc:
        return run_initial_round(project, selector=f"random: {exc}")
    candidates = candidate_ids(project)
    size = min(settings.initial_size, storage.budget_left(project), len(candidates))
    if size < 1:
        raise RoundError("no unlabeled images are left to queue; add images or raise the budget")
    embeddings = project_embeddings(
        project, backbone, pool, settings.device, report.span("train", "embedding the pool with the backbone")
    )
    classes = len(settings.classes)
    scores = PoolScores(np.full((len(pool.item_ids), classes), 1 / classes, np.float32), embeddings)
    taken = pool.positions(taken_ids(project))
    report.at("select", 0.0, f"selecting {size} images ({name})")
    started = time.perf_counter()
    picks = np.asarray(STRATEGIES[name](scores, taken, size, rng=np.random.default_rng(settings.seed)), np.int64)
    item_scores = strategy_scores(name, scores, picks, labeled=taken)
    return storage.create_round(
        project,
        strategy=name,
        selector=f"{name} on {backbone.name} embeddings",
        item_ids=pool.item_ids[picks].tolist(),
        scores=[float(v) for v in item_scores],
        n_labeled=len(storage.training_labels(project)),
        select_s=time.perf_counter() - started,
        index=0,
    )


MAX_UNREADABLE_RETRIES = 20  # images found unreadable while decoding, each marked missing and skipped


def load_project_pool(
    project: storage.Project,
    settings: storage.Settings | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> ProjectPool:
    """The pool cache over every usable item, decoding only items not cached yet.

    Image size: `settings.image_size`, or picked from the items' sizes. When
    every usable item is already cached no image file is opened. An image
    to decode whose file is gone, or that no longer decodes, is marked
    missing (storage.mark_missing, with the reason) and left out of the
    pool, so one deleted file never blocks a round. `on_progress(fraction)`
    follows decoding.
    """
    settings = settings or storage.load_settings(project)
    root = Path(settings.image_root).resolve()
    for _ in range(MAX_UNREADABLE_RETRIES + 1):
        items = storage.usable_items(project)
        if not items:
            raise RoundError("the project has no usable images; ingest an image folder first")
        size = settings.image_size or pick_image_size([(item.width, item.height) for item in items])
        ids = np.array([item.id for item in items], dtype=np.int64)
        cache = load_pool_cache(project.cache_dir, size)
        if cache is not None and np.isin(ids, cache.item_ids).all():
            return _pool_view(cache, ids, size)
        cached = set(cache.item_ids.tolist()) if cache is not None else set()
        paths, missing = _files_to_read(root, items, cached)
        if missing:
            storage.mark_missing(project, missing)
            continue
        try:
            cache = build_pool_cache(project.cache_dir, paths, size, on_progress=_count_progress(on_progress))
        except UnreadableImage as exc:
            by_path = {str(path): item_id for item_id, path in paths}
            if exc.path not in by_path:
                raise
            storage.mark_missing(project, {by_path[exc.path]: f"cannot be decoded ({exc.reason})"})
            continue
        return _pool_view(cache, ids, size)
    raise RoundError(
        f"more than {MAX_UNREADABLE_RETRIES} images could not be decoded; "
        "check the image folder (the Project page lists them)"
    )


def _files_to_read(root: Path, items: list[storage.Item], cached: set[int]) -> tuple[list, dict[int, str]]:
    """(item id, path) of every item, and why items not cached yet cannot be read (file gone, link out)."""
    paths, missing = [], {}
    for item in items:
        try:
            path = inside_root(root, item.path)
        except storage.StorageError:
            missing[item.id] = "the file now leads outside the image folder"
            continue
        if item.id not in cached and not path.is_file():
            missing[item.id] = "file not found"
            continue
        paths.append((item.id, path))
    return paths, missing


def _pool_view(cache: PoolCache, ids: np.ndarray, size: int) -> ProjectPool:
    cached = np.asarray(cache.item_ids, dtype=np.int64)
    normalization = (tuple(cache.mean), tuple(cache.std))
    if np.array_equal(cached, ids):
        return ProjectPool(ids, cache.images, normalization, size)  # no copy of the pool
    order = np.argsort(cached, kind="stable")
    rows = order[np.searchsorted(cached[order], ids)]
    return ProjectPool(ids, np.asarray(cache.images[rows]), normalization, size)


def _count_progress(on_progress: Callable[[float], None] | None):
    """Adapt a fraction callback to the cache builder's (done, total, ...) callback."""
    if on_progress is None:
        return None

    def callback(done, total=None, *_):
        on_progress(done / total if total else float(done))

    return callback


# ---------------------------------------------------------------- checks


def _strategy(name: str):
    if name not in STRATEGIES:
        raise RoundError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


def _next_index(project: storage.Project) -> int:
    latest = storage.current_round(project)
    return 0 if latest is None else latest.index + 1


def _batch_size(project: storage.Project, settings: storage.Settings, early: bool = False) -> int:
    left = storage.budget_left(project)
    if left < 1:
        raise RoundError(
            f"the labeling budget of {settings.budget} is spent; train the target model "
            "or raise the budget in the settings"
        )
    latest = storage.current_round(project)
    if latest is not None and not early:
        open_items = len(storage.round_queue(project, latest.id))
        if open_items:
            raise RoundError(
                f"round {latest.index} still has {open_items} unlabeled images; "
                "label or skip them before the next round"
            )
    candidates = len(candidate_ids(project))
    if candidates < 1:
        raise RoundError(
            "every usable image is already labeled, queued, skipped or in the validation set; add images to continue"
        )
    return min(settings.round_size, left, candidates)


def _check_classes(labels: dict[int, int], classes: tuple[str, ...]) -> None:
    present = sorted(set(labels.values()))
    if len(present) < 2:
        have = ", ".join(classes[i] for i in present) or "none"
        raise RoundError(
            f"training needs labels in at least 2 classes (labeled so far: {have}); label more images first"
        )


def _stop(should_stop: ShouldStop | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("round cancelled")


# ---------------------------------------------------------------- model state


def _validation_accuracy(project: storage.Project, model: nn.Module, pool: ProjectPool) -> float | None:
    labels = storage.validation_labels(project)
    if not labels:
        return None
    ids = sorted(labels)
    images = np.asarray(pool.images[pool.positions(ids)])
    return evaluate(model, images, np.array([labels[i] for i in ids], dtype=np.int64), pool.normalization, tta=True)


def _warm_start(model: Model, project: storage.Project) -> bool:
    """Load the last round's proxy weights into `model`; False (train from scratch) if there are none that fit."""
    path = project.models_dir / WARM_START_FILE
    if not path.is_file():
        return False
    try:
        load_pretrained(model, path)
    except ValueError:
        return False  # the architecture or the classes changed since the last round
    return True


def warm_config(config: TrainConfig, n: int) -> TrainConfig:
    """A warm-started proxy's training: half the planned steps, the same time cap.

    On CIFAR-10 a round-2 proxy (2,000 labels) from round 1's weights reached
    the accuracy of one trained from scratch in half the steps
    (docs/training.md). A fixed step count is left as it is.
    """
    if config.steps:
        return config
    return dataclasses.replace(config, steps=max(1, plan(n, config)[1] // 2))


def _save_last(model: nn.Module, project: storage.Project) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with storage.atomic_write(project.models_dir / WARM_START_FILE) as tmp:
        save_file(state, str(tmp))


# ---------------------------------------------------------------- progress


class _Report:
    """Maps per-stage fractions onto the round's 0..1 progress (see STAGE_SPANS)."""

    def __init__(self, on_progress: OnProgress | None):
        self.on_progress = on_progress

    def at(self, stage: str, fraction: float, message: str) -> None:
        if self.on_progress is not None:
            start, end = STAGE_SPANS[stage]
            self.on_progress(start + (end - start) * min(1.0, max(0.0, fraction)), message)

    def span(self, stage: str, message: str) -> Callable[..., None]:
        def callback(fraction: float, detail: str | None = None) -> None:
            self.at(stage, fraction, detail or message)

        return callback


def _train_progress(callback: Callable[..., None]) -> Callable[[Progress], None]:
    def on_progress(p: Progress) -> None:
        callback(p.fraction, f"training: step {p.step}/{p.steps}, loss {p.loss:.3f}")

    return on_progress
