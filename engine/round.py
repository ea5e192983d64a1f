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
With `candidates = seals` the strategy chooses only among the nearest
neighbours of the labeled images (`select_among`, docs/seals.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

import storage
from engine.config import stage_config, use_tta
from engine.distributed.launch import score_model, train_model
from engine.embeddings import Backbone, BackboneError
from engine.frozen import HEADS, Features, HeadConfig, train_head
from engine.frozen import accuracy as frozen_accuracy
from engine.frozen import pool_scores as frozen_pool_scores
from engine.initial import RoundError, first_batch_size, initial_strategy, run_initial_round
from engine.models import Model, build_model, load_pretrained
from engine.names import batch_offset, check_labeling_strategy
from engine.pool_cache import PoolCache, UnreadableImage, build_pool_cache, load_pool_cache, pick_image_size
from engine.representation import load_backbone, project_embeddings, require_backbone
from engine.saved_proxy import save_head_proxy, save_pixel_proxy, weights_path
from engine.score import PoolScores
from engine.selection.neighbours import SealsCandidates
from engine.selection.strategies import DISTANCE_STRATEGIES, STRATEGIES, select_with_scores
from engine.train import Cancelled, LearnedNothing, Progress, StepsSeen, TrainConfig, evaluate, plan
from storage.items import inside_root

OnProgress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]

WARM_START_FILE = "proxy/model.safetensors"  # under models/: the saved proxy's weights (engine.saved_proxy)
LEGACY_WARM_START_FILE = "proxy_last.safetensors"  # where rounds before issue 25 kept them
# Share of a round's progress bar per stage; decoding is only needed when the cache is stale.
STAGE_SPANS = {"decode": (0.0, 0.1), "train": (0.1, 0.85), "score": (0.85, 0.95), "select": (0.95, 1.0)}


@dataclass
class RoundOutcome:
    """A written round plus the selector model that chose it (for callers that evaluate it)."""

    round: storage.Round
    model: nn.Module
    pool: PoolCache
    train_steps: int  # optimizer steps the selector took
    backbone: Backbone | None = None  # set when the selector is a head on the backbone's embeddings ...
    features: Features | None = None  # ... which are these (the model then takes features, not pixels)
    candidates: int | None = None  # images the strategy chose among (candidates = seals); None: every free one


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
    storage.reserve_validation(project)
    inputs = storage.read_round_inputs(project)
    _strategy(inputs.settings.strategy)  # RoundError for an unknown name, before any work
    offset = batch_offset(storage.list_rounds(project))  # the messages number batches as people read them
    check_round(inputs, early, offset=offset)  # ... and for every other reason, before any decoding
    stages = _Stages(on_progress, should_stop)
    inputs, pool = load_inputs_and_pool(project, inputs, stages.span("decode", "decoding images"))
    size = check_round(inputs, early, offset=offset)
    settings = inputs.settings
    own_proxy = stage == "proxy" and model_name is None  # the project's proxy: warm start and keep it
    config = stage_config(
        settings, stage, model_name=model_name, steps=steps, level=level, seed_offset=inputs.next_index
    )
    stages.check_stop()

    if config.model_name in HEADS:
        selector = _frozen_selector(project, inputs, config.model_name, config.train.seed, pool, stages)
    else:
        selector = _pixel_selector(project, inputs, config, own_proxy, pool, stages)
    scores, strategy_name = selector.scores, selector.strategy or settings.strategy

    stages.at("select", 0.0, f"selecting {size} images ({strategy_name})")
    taken = pool.positions(sorted(inputs.taken))
    with stages.timed("select"):
        rng = np.random.default_rng(config.train.seed)
        among, space = None, ""
        if settings.candidates == "seals":
            stages.at("select", 0.0, f"finding the nearest neighbours of the labeled images ({strategy_name})")
            among, space = seals_candidates(project, inputs, selector, pool, taken)
            stages.at("select", 0.5, f"selecting {size} images ({strategy_name}) among {len(among):,} candidates")
        picks, item_scores, note = select_among(strategy_name, scores, taken, size, among, rng=rng)
    if among is not None:
        free = len(pool) - len(taken)
        share = f"{len(among):,} candidates of {free:,} ({100 * len(among) / max(1, free):.1f} %)"
        note = ", ".join(filter(None, [f"SEALS k={settings.seals_k} on {space}: {share}", note]))

    learned = strategy_name == settings.strategy  # a model that learned nothing guesses nothing
    probs = scores.probs[picks]
    written = storage.create_round(
        project,
        strategy=strategy_name,
        selector=selector.name + (f", {note}" if note else ""),
        item_ids=pool.item_ids[picks].tolist(),
        scores=[float(s) for s in item_scores],
        n_labeled=len(inputs.training),
        train_s=stages.seconds.get("train"),
        score_s=stages.seconds.get("score"),
        select_s=stages.seconds.get("select"),
        proxy_val_acc=selector.val_acc,
        proxy_val_n=selector.val_n,
        guesses=probs.argmax(axis=1).tolist() if learned else None,
        confidences=probs.max(axis=1).tolist() if learned else None,
    )
    if own_proxy and selector.strategy is None:  # the project's proxy, and one that learned: kept until the next
        _save_proxy(project, written, selector, pool, settings.classes)
    stages.at("select", 1.0, f"batch {written.index + offset} ready: {len(picks)} images to label")
    return RoundOutcome(
        round=written,
        model=selector.model,
        pool=pool,
        train_steps=selector.steps,
        backbone=selector.backbone,
        features=selector.features,
        candidates=None if among is None else len(among),
    )


def select_among(
    name: str,
    scores: PoolScores,
    taken: np.ndarray,
    size: int,
    candidates: np.ndarray | None,
    *,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, str]:
    """`select_with_scores` restricted to the `candidates` positions (None: the whole pool).

    The strategy runs, with its plain signature, on the pool's scores of the candidates and the taken
    positions only (the taken ones stay taken: k-center still measures from every labeled image), and its
    picks are mapped back to pool positions. When the candidates are fewer than `size` the rest are chosen
    from the whole pool, after them, and the note says how many.
    """
    if candidates is None:
        return select_with_scores(name, scores, taken, size, rng=rng)
    taken = np.asarray(taken, dtype=np.int64)
    candidates = np.setdiff1d(np.asarray(candidates, dtype=np.int64), taken)
    first = min(size, len(candidates))
    picks, item_scores, notes = np.empty(0, np.int64), np.empty(0), []
    if first:
        rows = np.union1d(candidates, taken)  # ascending: the subset keeps the pool's order (and its ties)
        inner, item_scores, note = select_with_scores(
            name, scores.subset(rows), np.searchsorted(rows, taken), first, rng=rng
        )
        picks = rows[inner]
        notes.append(note)
    if size > first:
        rest = size - first
        more, more_scores, note = select_with_scores(name, scores, np.concatenate([taken, picks]), rest, rng=rng)
        picks, item_scores = np.concatenate([picks, more]), np.concatenate([item_scores, more_scores])
        notes += [note, f"{rest} from the whole pool (fewer candidates than the batch)"]
    return picks, item_scores, ", ".join(filter(None, notes))


# SEALS's state over the last fixed embedding space, kept for the next round in this process (two flags per
# image; the embeddings stay in their cache): a round then searches only its new labels.
_SEALS_STATE: dict[tuple, SealsCandidates] = {}


def seals_candidates(
    project: storage.Project, inputs: storage.RoundInputs, selector: _Selector, pool: PoolCache, taken: np.ndarray
) -> tuple[np.ndarray, str]:
    """SEALS's candidates (engine.selection.neighbours.SealsCandidates, k = `seals_k`): the nearest neighbours
    of every labeled image (training and validation) that are not taken, and the space they were found in.

    The space is fixed when the project has a backbone (its embeddings; the search grows with the labels
    across rounds), else the round's proxy's embeddings (searched again each round: they change with it).
    """
    settings = inputs.settings
    labeled = pool.positions(sorted({**inputs.training, **inputs.validation}))
    backbone = selector.backbone or _backbone_for_distances(project, settings, pool)
    if backbone is None:
        seals = SealsCandidates(len(pool), settings.seals_k)
        return seals.candidates(selector.scores.embeddings, labeled, taken), "the proxy's embeddings"
    if selector.features is not None and selector.backbone is backbone:
        embeddings = selector.features.raw
    else:
        embeddings = project_embeddings(project, backbone, pool, settings.device)
    key = (backbone.fingerprint, settings.seals_k, hashlib.sha256(pool.item_ids.tobytes()).hexdigest())
    if key not in _SEALS_STATE:
        _SEALS_STATE.clear()
        _SEALS_STATE[key] = SealsCandidates(len(pool), settings.seals_k)
    return _SEALS_STATE[key].candidates(embeddings, labeled, taken), f"{backbone.name} embeddings"


@dataclass
class _Selector:
    """What a round's selector produced: the model, its validation accuracy (on val_n images), the pool's scores."""

    model: nn.Module
    val_acc: float | None
    val_n: int | None
    scores: PoolScores
    steps: int
    name: str  # the selector recorded with the round
    strategy: str | None = None  # overrides the project's strategy (a proxy that learned nothing)
    backbone: Backbone | None = None
    features: Features | None = None
    head: str | None = None  # the kind of head on the backbone's features, when the model is one


def _pixel_selector(project, inputs, stage, own_proxy, pool, stages) -> _Selector:
    """A proxy trained from scratch (or warm-started) on the labeled pixels, scoring the whole pool."""
    settings = inputs.settings
    strategy, name = None, stage.model_name
    with stages.timed("train"):
        model = build_model(stage.model_name, len(settings.classes), pool.image_size, seed=stage.train.seed)
        warm = settings.warm_start and own_proxy and _warm_start(model, project)
        images, targets = pool.arrays(inputs.training)
        steps = StepsSeen(_train_progress(stages.span("train", "training")))
        config = warm_config(stage.train, len(targets)) if warm else stage.train
        try:
            train_model(
                model, images, targets, config, pool.normalization, on_progress=steps, should_stop=stages.should_stop
            )
        except LearnedNothing as exc:
            # Selection through a proxy that learned nothing is worse than random, and failing the
            # round would leave no way to add the labels it needs: this batch is drawn at random.
            strategy, name = "random", f"random: {stage.model_name} learned nothing yet"
            stages.at("train", 1.0, f"{exc}; this batch is drawn at random")
        val_acc = _validation_accuracy(inputs.validation, model, pool)
    stages.at("score", 0.0, f"scoring {len(pool)} images")
    with stages.timed("score"):
        scores = score_model(model, pool.images, pool.normalization, tta=use_tta(settings.device))
        backbone = (
            _backbone_for_distances(project, settings, pool)
            if ((strategy or settings.strategy) in DISTANCE_STRATEGIES)
            else None
        )
        if backbone is not None:
            # distances between backbone embeddings mean more than between a few-label proxy's
            scores = PoolScores(scores.probs, project_embeddings(project, backbone, pool, settings.device))
    val_n = len(inputs.validation) if val_acc is not None else None
    return _Selector(model, val_acc, val_n, scores, steps.last, name, strategy)


def _backbone_for_distances(project, settings, pool) -> Backbone | None:
    try:
        return load_backbone(project, settings, pool.image_size)
    except BackboneError:
        return None  # a pixel proxy still works without its backbone


def _frozen_selector(project, inputs, kind: str, seed: int, pool, stages) -> _Selector:
    """A linear or MLP head on the backbone's frozen pool embeddings (engine.frozen)."""
    settings = inputs.settings
    backbone = require_backbone(project, settings, pool.image_size)
    with stages.timed("score"):
        embed_progress = stages.span("train", "embedding the pool with the backbone")
        features = Features(project_embeddings(project, backbone, pool, settings.device, embed_progress))
    with stages.timed("train"):
        labels = inputs.training
        ids = sorted(labels)
        head = train_head(
            features,
            pool.positions(ids),
            np.array([labels[i] for i in ids], dtype=np.int64),
            len(settings.classes),
            HeadConfig(kind=kind, seed=seed),
        )
        validation = inputs.validation
        val_ids = sorted(validation)
        val_acc = (
            frozen_accuracy(head, features, pool.positions(val_ids), np.array([validation[i] for i in val_ids]))
            if val_ids
            else None
        )
    stages.at("score", 0.0, f"scoring {len(pool)} images")
    with stages.timed("score"):
        scores = frozen_pool_scores(head, features)
    name = f"{kind} on {backbone.name}"
    val_n = len(val_ids) if val_ids else None
    return _Selector(head, val_acc, val_n, scores, HeadConfig().steps, name, None, backbone, features, kind)


def run_first_round(project: storage.Project, on_progress: OnProgress | None = None) -> storage.Round:
    """Round 0 by the project's initial strategy: typiclust or probcover on the backbone's embeddings, or random.

    `auto` is typiclust when the project has a backbone and the first batch
    is at most TYPICAL_SHARE of the usable pool, else random; a backbone
    that is not ready yet (ssl still training) gives the random batch,
    recorded with a selector that says why.
    """
    storage.reserve_validation(project)
    inputs = storage.read_round_inputs(project)
    name, why = initial_strategy(inputs.settings, len(inputs.items))
    if name == "random":
        return run_initial_round(project, selector=why)
    if inputs.latest is not None:
        raise RoundError("the initial batch was already made; run a selection round instead")
    stages = _Stages(on_progress)
    inputs, pool = load_inputs_and_pool(project, inputs, stages.span("decode", "decoding images"))
    settings = inputs.settings
    try:
        backbone = require_backbone(project, settings, pool.image_size, instead="a random first batch")
    except RoundError as exc:
        return run_initial_round(project, selector=f"random: {exc}")
    size = first_batch_size(inputs)
    embeddings = project_embeddings(
        project, backbone, pool, settings.device, stages.span("train", "embedding the pool with the backbone")
    )
    classes = len(settings.classes)
    scores = PoolScores(np.full((len(pool), classes), 1 / classes, np.float32), embeddings)
    taken = pool.positions(sorted(inputs.taken))
    stages.at("select", 0.0, f"selecting {size} images ({name})")
    with stages.timed("select"):
        picks, item_scores, note = select_with_scores(
            name, scores, taken, size, rng=np.random.default_rng(settings.seed)
        )
    return storage.create_round(
        project,
        strategy=name,
        selector=f"{name} on {backbone.name} embeddings" + (f", {note}" if note else ""),
        item_ids=pool.item_ids[picks].tolist(),
        scores=[float(v) for v in item_scores],
        n_labeled=len(inputs.training),
        select_s=stages.seconds["select"],
        index=0,
    )


def load_inputs_and_pool(
    project: storage.Project,
    inputs: storage.RoundInputs | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> tuple[storage.RoundInputs, PoolCache]:
    """A snapshot of the project's round inputs and the pool of exactly its usable items.

    Decoding may find images gone (they leave the labels, the queue and the
    validation set): then the validation set is topped up and the snapshot
    read again, so the labels always match the pool. `inputs`: a snapshot
    already read, used when decoding finds nothing missing.
    """
    inputs = inputs or storage.read_round_inputs(project)
    for _ in range(MAX_UNREADABLE_RETRIES + 1):
        pool = load_project_pool(project, inputs.settings, on_progress, items=inputs.items)
        if pool.item_ids.tolist() == inputs.item_ids:
            return inputs, pool
        storage.reserve_validation(project)
        inputs = storage.read_round_inputs(project)
    raise RoundError("the image folder kept changing while the round read it; try again")


MAX_UNREADABLE_RETRIES = 20  # images found unreadable while decoding, each marked missing and skipped


def load_project_pool(
    project: storage.Project,
    settings: storage.Settings | None = None,
    on_progress: Callable[[float], None] | None = None,
    *,
    items: Sequence[storage.Item] | None = None,
) -> PoolCache:
    """The pool cache over every usable item, decoding only items not cached yet.

    Image size: `settings.image_size`, or picked from the items' sizes. When
    every usable item is already cached no image file is opened. An image
    to decode whose file is gone, or that no longer decodes, is marked
    missing (storage.mark_missing, with the reason) and left out of the
    pool, so one deleted file never blocks a round. `on_progress(fraction)`
    follows decoding. `items`: the usable items as already read (a snapshot).
    """
    settings = settings or storage.load_settings(project)
    root = Path(settings.image_root).resolve()
    for _ in range(MAX_UNREADABLE_RETRIES + 1):
        items = list(items) if items is not None else storage.usable_items(project)
        if not items:
            raise RoundError("the project has no usable images; ingest an image folder first")
        size = settings.image_size or pick_image_size([(item.width, item.height) for item in items])
        ids = np.array([item.id for item in items], dtype=np.int64)
        cache = load_pool_cache(project.cache_dir, size)
        if cache is not None and np.isin(ids, cache.item_ids).all():
            return cache.subset(ids)
        cached = set(cache.item_ids.tolist()) if cache is not None else set()
        paths, missing = _files_to_read(root, items, cached)
        if missing:
            storage.mark_missing(project, missing)
            items = None
            continue
        try:
            cache = build_pool_cache(project.cache_dir, paths, size, on_progress=_count_progress(on_progress))
        except UnreadableImage as exc:
            by_path = {str(path): item_id for item_id, path in paths}
            if exc.path not in by_path:
                raise
            storage.mark_missing(project, {by_path[exc.path]: f"cannot be decoded ({exc.reason})"})
            items = None
            continue
        return cache.subset(ids)
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


def _count_progress(on_progress: Callable[[float], None] | None):
    """Adapt a fraction callback to the cache builder's (done, total, ...) callback."""
    if on_progress is None:
        return None

    def callback(done, total=None, *_):
        on_progress(done / total if total else float(done))

    return callback


# ---------------------------------------------------------------- checks


def _strategy(name: str):
    try:
        check_labeling_strategy(name)
    except ValueError as exc:
        raise RoundError(str(exc)) from None
    return STRATEGIES[name]


def check_round(inputs: storage.RoundInputs, early: bool = False, *, offset: int) -> int:
    """The next batch's size; RoundError when no selection round can run on `inputs`.

    It cannot when the budget is spent, the latest round still has open
    items (unless `early`), no candidates are left, or fewer than two
    classes have training labels. The messages name a round's batch as people
    read it: round index + `offset` (engine.names.batch_offset).
    """
    settings = inputs.settings
    if inputs.budget_left < 1:
        raise RoundError(
            f"the labeling budget of {settings.budget} is spent; train the target model "
            "or raise the budget in the settings"
        )
    if inputs.latest is not None and inputs.open_in_latest and not early:
        raise RoundError(
            f"batch {inputs.latest.index + offset} still has {inputs.open_in_latest} unlabeled images; "
            "label or skip them before the next batch is chosen"
        )
    candidates = len(inputs.candidates)
    if candidates < 1:
        raise RoundError(
            "every usable image is already labeled, queued, skipped or in the validation set; add images to continue"
        )
    _check_classes(inputs.training, settings.classes)
    return min(settings.round_size, inputs.budget_left, candidates)


def _check_classes(labels: dict[int, int], classes: tuple[str, ...]) -> None:
    present = sorted(set(labels.values()))
    if len(present) < 2:
        have = ", ".join(classes[i] for i in present) or "none"
        raise RoundError(
            f"training needs labels in at least 2 classes (labeled so far: {have}); label more images first"
        )


# ---------------------------------------------------------------- model state


def _validation_accuracy(labels: dict[int, int], model: nn.Module, pool: PoolCache) -> float | None:
    if not labels:
        return None
    images, targets = pool.arrays(labels)
    return evaluate(model, images, targets, pool.normalization, tta=True)


def _warm_start(model: Model, project: storage.Project) -> bool:
    """Load the last round's proxy weights into `model`; False (train from scratch) if there are none that fit."""
    for path in (weights_path(project), project.models_dir / LEGACY_WARM_START_FILE):
        if path.is_file():
            try:
                load_pretrained(model, path)
            except ValueError:
                return False  # the architecture or the classes changed since the last round
            return True
    return False


def warm_config(config: TrainConfig, n: int) -> TrainConfig:
    """A warm-started proxy's training: half the planned steps, the same time cap.

    On CIFAR-10 a round-2 proxy (2,000 labels) from round 1's weights reached
    the accuracy of one trained from scratch in half the steps
    (docs/training.md). A fixed step count is left as it is.
    """
    if config.steps:
        return config
    return dataclasses.replace(config, steps=max(1, plan(n, config)[1] // 2))


def _save_proxy(project: storage.Project, made: storage.Round, selector: _Selector, pool, classes) -> None:
    """Keep the round's proxy (engine.saved_proxy): the target job measures it again on today's validation
    images, and a pixel proxy's weights are the next round's warm start."""
    if selector.head is not None and selector.features is not None and selector.backbone is not None:
        backbone = selector.backbone
        save_head_proxy(
            project,
            made,
            selector.model,
            selector.head,
            selector.features,
            backbone.fingerprint,
            backbone.input_size,
            classes,
        )
        return
    save_pixel_proxy(project, made, selector.model, pool, classes)
    (project.models_dir / LEGACY_WARM_START_FILE).unlink(missing_ok=True)


# ---------------------------------------------------------------- progress


class _Stages:
    """A round's stages: progress mapped onto 0..1 (STAGE_SPANS), seconds per stage, and the stop check."""

    def __init__(self, on_progress: OnProgress | None, should_stop: ShouldStop | None = None):
        self.on_progress, self.should_stop = on_progress, should_stop
        self.seconds: dict[str, float] = {}

    def at(self, stage: str, fraction: float, message: str) -> None:
        if self.on_progress is not None:
            start, end = STAGE_SPANS[stage]
            self.on_progress(start + (end - start) * min(1.0, max(0.0, fraction)), message)

    def span(self, stage: str, message: str) -> Callable[..., None]:
        def callback(fraction: float, detail: str | None = None) -> None:
            self.at(stage, fraction, detail or message)

        return callback

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the block's wall-clock seconds to `seconds[stage]`, then stop if asked to."""
        started = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
        self.check_stop()

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("round cancelled")


def _train_progress(callback: Callable[..., None]) -> Callable[[Progress], None]:
    def on_progress(p: Progress) -> None:
        callback(p.fraction, f"training: step {p.step}/{p.steps}, loss {p.loss:.3f}")

    return on_progress
