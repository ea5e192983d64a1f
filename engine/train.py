"""Training: one function, the whole labeled set as uint8 on the device, counted in optimizer steps.

Following airbench/hlb-CIFAR10: the dataset is moved to the device once as
uint8 (a quarter of float32's bytes), batches are index slices, and random
crop + flip run on the device in batches. On CUDA the step loop never syncs
with the host between reports. The CPU path runs the same code.

Training length is counted in optimizer steps, not epochs: 100 labels and
5,000 labels both need a few hundred steps to converge, and an epoch of 100
labels is one step. `plan` picks the batch (small sets train with small
batches) and the steps (passes over the set, between a floor and a cap); a
wall-clock cap (`max_seconds`) fits the plan to the time left, first after a
few timed steps, then at each progress report. A run that diverges, collapses to one class or learned nothing raises
`TrainingFailed` with a reason a person can read.

Two hooks: a `StepObserver` sees every step's predictions (per-example
statistics, engine.example_stats), and a `Sampler` decides which training
positions each step's batch draws from and how many steps the run takes (the
default, `ShuffleAll`, is a fresh shuffle of all N each pass;
`engine.training.dynamic.DynamicKeep` is DynaMS).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.device import Normalization, best_device, check_images, normalization_tensors, to_float
from engine.distributed.world import World, data_parallel, from_main, mean_over_ranks, shard_range, world
from engine.precision import autocast, float32_convs
from engine.score import logits_and_embedding, predict_logits

__all__ = [
    "Cancelled",
    "LearnedNothing",
    "Progress",
    "Sampler",
    "ShuffleAll",
    "StepObserver",
    "StepsSeen",
    "TrainConfig",
    "TrainingFailed",
    "TrainingRun",
    "augment",
    "best_device",
    "evaluate",
    "plan",
    "step_sizes",
    "train",
]

SCHEDULES = ("onecycle", "cosine")
STOP_CHECK_S = 0.1  # seconds between should_stop() calls: it may query a database
MIN_BATCH = 16  # sets at least this large never train on smaller batches
BATCHES_PER_PASS = 8  # below batch_size, a set is cut into about this many batches per pass
BASE_BATCH = 128  # config.lr is the peak for this batch size; other sizes scale linearly
TIMED_FROM = 2  # timing for max_seconds starts at step 2 (step 1 pays one-off costs) ...
FIRST_FIT = 7  # ... and the plan is first fitted to the cap before step 7, then at each report
MIN_CAPPED_STEPS = 50  # a time cap never cuts a plan below this many steps
SHOWN_TOTAL_BAND = 0.1  # a refitted length changes the total reported only when it moves it by more than this
CHECK_SAMPLE = 512  # training images predicted after training to detect a collapse
BN_SAMPLE = 2048  # training images whose batch statistics become the batch-norm running statistics


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; units in comments. `plan` turns them into a batch size and a step count."""

    steps: int = 0  # optimizer steps; 0 = planned from the set size (passes, min/max_steps)
    passes: float = 30.0  # a plan sees each labeled image about this many times ...
    min_steps: int = 200  # ... in at least this many steps (small sets need many) ...
    max_steps: int = 4000  # ... and at most this many
    max_seconds: float | None = None  # wall-clock cap; None = none. Never cuts below MIN_CAPPED_STEPS
    batch_size: int = 128  # the largest batch; smaller sets use smaller batches (>= 2)
    lr: float = 0.2  # peak learning rate at a batch of 128; scaled linearly with the batch
    warmup: float = 0.15  # share of the steps over which the lr rises linearly from 0
    schedule: str = "onecycle"  # after warm-up: onecycle (linear decay to 0) | cosine
    momentum: float = 0.9  # SGD Nesterov momentum
    weight_decay: float = 5e-4  # on conv/linear weights only, not BN or biases
    label_smoothing: float = 0.1
    clip_norm: float = 5.0  # gradient norm clipping; 0 = off. Stops one bad batch from diverging a run
    ema: float = 0.0  # EMA of the weights with this decay per step, returned instead; 0 = off
    recalibrate_bn: bool = True  # batch-norm running statistics from the final weights (recalibrate_batchnorm)
    check: bool = True  # raise TrainingFailed for a diverged, collapsed or untrained model
    seed: int = 0  # shuffling and augmentation
    device: str = "auto"  # auto | cpu | cuda | mps
    report_every: int = 25  # steps between progress reports (and one at the last step)


@dataclass(frozen=True)
class Progress:
    """Where training is: step 1..steps, mean loss since the last report, seconds so far."""

    step: int
    steps: int
    loss: float
    seconds: float = 0.0

    @property
    def fraction(self) -> float:
        """Share of all steps done, 0..1."""
        return self.step / max(1, self.steps)


class StepsSeen:
    """A progress callback that remembers the last step reported and passes each report on."""

    def __init__(self, then: Callable[[Progress], None] | None = None):
        self.then, self.last = then, 0

    def __call__(self, p: Progress) -> None:
        self.last = p.step
        if self.then is not None:
            self.then(p)


class Cancelled(Exception):
    """Training stopped because should_stop() returned True."""


class TrainingFailed(RuntimeError):
    """Training ran but produced a model not worth using; the message says why and what to try."""


class LearnedNothing(TrainingFailed):
    """Training stayed finite but the model predicts one class for everything, or no better than the majority."""


def plan(n: int, config: TrainConfig, processes: int = 1) -> tuple[int, int]:
    """(batch size, optimizer steps) for a labeled set of `n` images, before any time cap.

    The batch is `config.batch_size` for large sets, about n / 8 for smaller
    ones, never under MIN_BATCH (or n, if smaller) nor under 2. The steps are
    `config.steps` when set, else `passes` times the steps of one pass,
    clamped to [min_steps, max_steps]. With several `processes` (DDP) the batch
    is the global one, split between them: up to `config.batch_size` each, so
    a large set takes proportionally fewer, larger steps (and a larger learning
    rate, scaled with the global batch by `_optimizer`).
    """
    batch = max(2, min(config.batch_size * processes, max(min(n, MIN_BATCH), n // BATCHES_PER_PASS)))
    if config.steps:
        return batch, config.steps
    per_pass = len(step_sizes(n, batch))
    return batch, int(min(config.max_steps, max(config.min_steps, round(config.passes * per_pass))))


def train(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    config: TrainConfig,
    normalization: Normalization,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    observer: StepObserver | None = None,
    sampler: Sampler | None = None,
) -> nn.Module:
    """Train `model` in place on uint8 `images` [N, 3, H, W] with int64 `labels` [N]; return it.

    Runs on `best_device(config.device)`; the returned model stays there, in
    eval mode. `should_stop` is polled between steps (at most every 0.1 s)
    and makes this raise Cancelled; `on_progress` gets a Progress every
    `config.report_every` steps and at the last. After the last step the
    batch-norm statistics are recomputed for the final weights
    (`recalibrate_batchnorm`). Raises TrainingFailed when the loss stops
    being finite, and (with `config.check`) LearnedNothing when the trained
    model predicts one class for every training image or does no better on
    them than always answering the most common class. `observer` sees every step's predictions
    (`StepObserver`: per-example statistics such as forgetting events, without a second pass).
    `sampler` picks the positions each step's batch draws from and the run's length (`Sampler`;
    default `ShuffleAll`, every example once a pass); recalibration and the check use all the data.

    Inside a torchrun job (`engine.distributed.world`) every rank calls this with the same arguments and
    trains one model with DistributedDataParallel: each global batch is split between the ranks, the time
    cap's length and `should_stop` are decided on rank 0 and broadcast (ranks never disagree on the number of
    steps), only rank 0 reports progress, and every rank returns the same weights.
    """
    labels = _labels_array(labels)
    _check_inputs(images, labels, config, model)
    here = world()
    device = best_device(config.device) if here.size == 1 else _rank_device(config.device, here)
    data = _as_tensor(images).to(device)  # uint8, converted per batch
    targets = torch.from_numpy(labels.astype(np.int64)).to(device)
    model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # faster on CUDA and CPU
    model.train()
    mean, std = normalization_tensors(normalization, device)
    gen = torch.Generator(device=device if device.type in ("cpu", "cuda") else "cpu").manual_seed(config.seed)
    sampler = ShuffleAll() if sampler is None else sampler
    batch, planned = plan(len(labels), config, here.size)
    _check_world(here, batch, observer)
    # the shuffles (gen) are the same in every rank; each rank's augmentation draws differ
    crops = gen if here.size == 1 else torch.Generator(device=gen.device).manual_seed(config.seed * 7919 + here.rank)
    schedule = _Schedule(_run_steps(sampler, labels, batch, planned), config)
    shown = _ShownTotal(schedule.total)
    optimizer = _optimizer(model, config, batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    ema = _Ema(model, config.ema) if config.ema else None
    pad = max(1, round(4 * data.shape[-1] / 32))  # 4 px at 32 px, scaled with the size
    stopper = _Stopper(should_stop if here.main else None)
    clock = _Clock(device)
    loss_sum = torch.zeros((), device=device)
    since_report = done = 0
    run = TrainingRun(model, data, targets, mean, std, batch, gen, schedule, stopper.check)
    stepped = model if here.size == 1 else data_parallel(model, device)
    # convolutions that oneDNN's bf16 kernels get wrong run in float32 (engine.precision)
    with float32_convs(model, to_float(data[:1], mean, std, channels_last=True)):
        for step, idx in enumerate(sampler.batches(run), start=1):
            if step > schedule.total:
                break
            fit_now = step in (TIMED_FROM, FIRST_FIT) or step % config.report_every == 1
            timed = config.max_seconds is not None and fit_now
            if here.size == 1:
                stopper.check()
                if timed:
                    clock.fit(step, schedule, config.max_seconds or 0.0)
            elif step == 1 or step % config.report_every == 1 or timed:
                _agree_on_rank_0(stopper, clock, schedule, step, config.max_seconds if timed else None)
                if step > schedule.total:
                    break
            idx = idx if here.size == 1 else _my_part(idx, here)
            x = to_float(augment(data[idx], pad, crops), mean, std, channels_last=True)
            seen = None if observer is None else (observer, step, idx)
            loss_sum += _step(stepped, x, targets[idx], optimizer, config, seen)
            scheduler.step()
            if ema is not None:
                ema.update(model, step)
            since_report += 1
            if step == schedule.total or step % config.report_every == 0:
                loss = mean_over_ranks(loss_sum).item() / since_report
                _check_finite(loss, step, schedule.total)
                if on_progress is not None and here.main:
                    on_progress(Progress(step, shown(step, schedule.total), loss, clock.seconds()))
                loss_sum.zero_()
                since_report = 0
            done = step
        sampler.finish(done, clock.seconds())
        if ema is not None:
            ema.copy_to(model)
        if config.recalibrate_bn:
            recalibrate_batchnorm(model, data, batch, mean, std, gen)
    model.eval()
    if config.check:
        check_learned(model, data, targets, normalization, gen)
    return model


@dataclass(frozen=True)
class TrainingRun:
    """What a `Sampler` sees of the run it draws batches for; tensors are on the training device."""

    model: nn.Module  # in train mode between steps; a sampler that scores with it restores that
    data: torch.Tensor  # uint8 [N, 3, H, W], the whole training set
    targets: torch.Tensor  # int64 [N]
    mean: torch.Tensor  # normalization (engine.device.to_float)
    std: torch.Tensor
    batch: int  # the plan's batch size
    gen: torch.Generator  # the run's generator (shuffles, augmentation); seeded with config.seed
    schedule: _Schedule  # schedule.total: the steps the run takes now (a time cap may shorten it mid-run)
    stop: Callable[[], None]  # raises Cancelled when should_stop() says so (rate-limited): call it in long work

    @property
    def total(self) -> int:
        """The steps the run takes, as known now."""
        return self.schedule.total


class Sampler(Protocol):
    """Which training positions each step's batch draws from, and how many steps the run takes."""

    def steps(self, labels: np.ndarray, batch: int, planned: int) -> int:
        """The run's length in steps (the learning-rate schedule's), given the labels [N], the batch size and
        the steps full training would take (`plan`); called once, before the first step."""
        ...

    def batches(self, run: TrainingRun) -> Iterator[torch.Tensor]:
        """Each step's batch in turn, without end: int64 positions (rows of the training set) on the device.

        Drawn lazily, just before its step; the loop stops after `run.total` steps (it draws one batch more,
        which must be cheap)."""
        ...

    def finish(self, steps: int, seconds: float) -> None:
        """Called after the last step: the steps taken and the seconds the step loop ran."""
        ...


class ShuffleAll:
    """The default sampler: the planned steps, each pass a fresh shuffle of all N examples (`_batches`)."""

    def steps(self, labels: np.ndarray, batch: int, planned: int) -> int:
        return planned

    def batches(self, run: TrainingRun) -> Iterator[torch.Tensor]:
        return _batches(len(run.targets), run.batch, run.gen, run.data.device)

    def finish(self, steps: int, seconds: float) -> None:
        pass


def _rank_device(preference: str, here: World) -> torch.device:
    """A rank's device: its own GPU (by local rank) unless the CPU is asked for."""
    if preference == "cpu" or here.device.type == "cpu":
        return torch.device("cpu")
    return here.device


def _check_world(here: World, batch: int, observer: StepObserver | None) -> None:
    if here.size == 1:
        return
    if batch < 2 * here.size:
        raise ValueError(
            f"{here.size} processes need batches of at least {2 * here.size} images (two per process for batch "
            f"norm), but this set trains with batches of {batch}: label more images or use one process"
        )
    if observer is not None:
        raise ValueError("per-example statistics (a StepObserver) are gathered in one process: run with one process")


def _my_part(idx: torch.Tensor, here: World) -> torch.Tensor:
    """This rank's contiguous part of a global batch (every rank gets at least two, see _check_world)."""
    start, stop = shard_range(len(idx), here.rank, here.size)
    return idx[start:stop]


def _agree_on_rank_0(
    stopper: _Stopper, clock: _Clock, schedule: _Schedule, step: int, max_seconds: float | None
) -> None:
    """Under DDP: rank 0 polls should_stop and fits the run's length to the time cap, and every rank takes
    its answer, so all stop together after the same number of steps."""
    stop = False
    if world().main:
        try:
            stopper.check()
        except Cancelled:
            stop = True
        if max_seconds is not None:
            clock.fit(step, schedule, max_seconds)
    stop_flag, total = from_main([int(stop), schedule.total])
    schedule.total = total
    if stop_flag:
        raise Cancelled("training cancelled")


def _run_steps(sampler: Sampler, labels: np.ndarray, batch: int, planned: int) -> int:
    steps = sampler.steps(labels, batch, planned)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"a sampler must plan at least one step, got {steps!r}")
    return int(steps)


class StepObserver(Protocol):
    """Sees every training step's predictions, before that step's update, on the device.

    `positions` are the batch's rows of the training set (0..N-1), `logits` [B, C] and `embeddings`
    [B, D] (the penultimate features the logits come from; None for a model without `embed` and
    `classify`) are detached; `labels` [B]. An observer must not sync with the host.
    """

    def observe(
        self,
        step: int,
        positions: torch.Tensor,
        logits: torch.Tensor,
        embeddings: torch.Tensor | None,
        labels: torch.Tensor,
    ) -> None: ...


def _step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    seen: tuple[StepObserver, int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One SGD step; returns the detached float32 loss, still on the device (no host sync).
    `seen`: (observer, step, the batch's positions), shown the batch's predictions before the update."""
    embeddings = None
    with autocast(x.device):
        if seen is not None and hasattr(model, "embed"):
            logits, embeddings = logits_and_embedding(model, x)  # one pass: classify(embed(x))
        else:
            logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    if seen is not None:
        observer, step, positions = seen
        observer.observe(step, positions, logits.detach(), None if embeddings is None else embeddings.detach(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip_norm:
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm, foreach=True)
    optimizer.step()
    return loss.detach().float()


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: torch.Tensor, batch: int, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator
) -> None:
    """Replace every batch-norm layer's running statistics with the average over batches of the final model.

    During training the running statistics trail the weights (momentum 0.1):
    after a short run or with small batches they describe earlier weights,
    and the model in eval mode predicts worse than in training. One pass
    over up to BN_SAMPLE un-augmented training images, in batches of the
    training size, with a cumulative average fixes that.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average of the batches' statistics
    n = len(data)
    order = torch.randperm(n, generator=gen, device=gen.device)[:BN_SAMPLE].to(data.device)
    if len(order) == 1:
        order = order.repeat(2)
    model.train()
    for idx in order.split(step_sizes(len(order), batch)):
        with autocast(data.device):
            model(to_float(data[idx], mean, std, channels_last=True))
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum


def check_learned(
    model: nn.Module, data: torch.Tensor, targets: torch.Tensor, normalization: Normalization, gen: torch.Generator
) -> None:
    """Raise TrainingFailed when the trained `model` (eval mode) collapsed or learned nothing.

    Predicts up to CHECK_SAMPLE of its own training images: one predicted
    class for all of them (while the labels hold two or more), or an accuracy
    no better than always answering the most common label, means the run
    failed, whatever its loss said.
    """
    n = len(targets)
    counts = torch.bincount(targets).cpu()
    if (counts > 0).sum() < 2:
        return
    pick = torch.randperm(n, generator=gen, device=gen.device)[:CHECK_SAMPLE].to(data.device)
    truth = targets[pick].cpu().numpy()
    logits = predict_logits(model, data[pick], normalization)
    if not np.isfinite(logits).all():
        raise TrainingFailed(
            "training diverged: the model outputs NaN or infinity; "
            "retry, or choose a lighter training setting or a smaller model"
        )
    predicted = logits.argmax(1)
    majority = counts.max().item() / n
    accuracy = float((predicted == truth).mean())
    if len(np.unique(predicted)) == 1:
        raise LearnedNothing(
            f"training collapsed: the model predicts class {int(predicted[0])} for every "
            f"training image ({accuracy:.0%} right on them); retry, or label more images "
            "of the other classes"
        )
    if accuracy <= majority and accuracy < 0.99:
        raise LearnedNothing(
            f"the model learned nothing: {accuracy:.0%} right on its own training images, "
            f"no better than always answering the most common class ({majority:.0%}); "
            "retry with a more thorough training setting, or check the labels"
        )


def _check_finite(loss: float, step: int, total: int) -> None:
    if not math.isfinite(loss):
        raise TrainingFailed(
            f"training diverged: the loss became {loss} at step {step} of {total}; "
            "retry, or choose a lighter training setting or a smaller model"
        )


def evaluate(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    normalization: Normalization,
    device: torch.device | str | None = None,
    *,
    tta: bool = False,
) -> float:
    """Top-1 accuracy (0..1) of `model` on uint8 `images` [N, 3, H, W] with int labels [N].

    `tta`: average the logits of each image and its mirror image.
    """
    labels = _labels_array(labels)
    if len(images) == 0:
        raise ValueError("cannot evaluate on an empty set")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    logits = predict_logits(model, images, normalization, device=device, tta=tta)
    return float((logits.argmax(1) == labels).mean())


def augment(batch: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop (reflect padding of `pad` px) and horizontal flip of uint8 [B, C, H, W].

    Done with two gathers on per-sample index grids, so it runs on any device
    and dtype without building a padded copy of the batch.
    """
    b, c, h, w = batch.shape
    dev = gen.device
    dy = torch.randint(-pad, pad + 1, (b, 1), generator=gen, device=dev)
    dx = torch.randint(-pad, pad + 1, (b, 1), generator=gen, device=dev)
    flip = torch.randint(0, 2, (b, 1), generator=gen, device=dev).bool()
    cols = torch.arange(w, device=dev)
    rows = _reflect(dy + torch.arange(h, device=dev), h).to(batch.device)  # [B, H]
    cols = _reflect(dx + torch.where(flip, w - 1 - cols, cols), w).to(batch.device)  # [B, W]
    out = batch.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range positions back inside 0..size-1 (edge pixel not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _batches(n: int, batch: int, gen: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Index batches forever: each pass a fresh shuffle of all n images, cut into near-equal batches."""
    sizes = step_sizes(n, batch)
    while True:
        order = torch.randperm(n, generator=gen, device=gen.device).repeat(2 if n == 1 else 1).to(device)
        yield from order.split(sizes)


def step_sizes(n: int, batch_size: int) -> list[int]:
    """Images in each step of one pass: every example once, in near-equal batches.

    Equal batches, not full batches plus a remainder: 5,000 images in
    batches of 128 would leave a step of 8 images in every pass (the last
    one moving the batch-norm running statistics too), and that alone cost
    the target 3-8 points of test accuracy (docs/svp-study.md). No step ever has a single
    example (batch norm cannot train on one when the last feature map is
    1x1, as in torchvision ResNets on small images): a lone example is
    repeated, and a batch_size of 2 or 3 may give one step of 3.
    """
    n = max(n, 2)
    steps = max(1, min(-(-n // batch_size), n // 2))
    small, extra = divmod(n, steps)
    return [small + 1] * extra + [small] * (steps - extra)


def _optimizer(model: nn.Module, config: TrainConfig, batch: int) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN scales/shifts and biases
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = config.lr * batch / BASE_BATCH  # linear scaling: small batches, small steps
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)


class _Schedule:
    """Learning-rate multiplier per step: linear warm-up, then linear (onecycle) or cosine decay.

    Under a time cap `total` is refitted as steps are timed (see _Clock);
    the multiplier follows the current length.
    """

    def __init__(self, total: int, config: TrainConfig):
        self.total, self.warmup_share, self.kind = total, config.warmup, config.schedule

    def factor(self, step: int) -> float:  # multiplier of the peak lr before step `step` (0-based)
        warmup = max(1, round(self.warmup_share * self.total))
        if step < warmup:
            return (step + 1) / warmup
        rest = min(1.0, (step - warmup) / max(1, self.total - warmup))
        if self.kind == "onecycle":
            return max(0.0, 1.0 - rest)
        return 0.5 * (1.0 + math.cos(math.pi * rest))


class _ShownTotal:
    """The step total a progress report gives. Under a time cap the run's length is refitted at every
    report and wanders a few percent with the machine's load (517, 540, 506 steps): shown as it is, the
    end a person reads keeps moving. The total shown changes only when the fitted length leaves a band of
    SHOWN_TOTAL_BAND around it or the steps reach it, and is the true length at the last step. Reporting
    only: the schedule runs `schedule.total` steps whatever is shown."""

    def __init__(self, total: int):
        self.total = total

    def __call__(self, step: int, fitted: int) -> int:
        if step >= fitted or step >= self.total or abs(fitted - self.total) > SHOWN_TOTAL_BAND * self.total:
            self.total = fitted
        return self.total


class _Clock:
    """Times the steps from TIMED_FROM on and fits the schedule's length to a time cap.

    Each fit uses every step timed so far, so a slow start (allocator
    warm-up, a busy machine) is outweighed as the run goes on; the length
    never exceeds the plan nor drops below MIN_CAPPED_STEPS.
    """

    def __init__(self, device: torch.device):
        self.device, self.started = device, time.perf_counter()
        self.timed_from: tuple[float, int] | None = None  # (clock time, step) when timing began
        self.planned = 0  # the plan's length, before any fit

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def fit(self, step: int, schedule: _Schedule, max_seconds: float) -> None:
        """Call before step `step` runs."""
        self._sync()
        now = time.perf_counter()
        if self.timed_from is None:
            if step >= TIMED_FROM:
                self.timed_from, self.planned = (now, step), schedule.total
            return
        since, first = self.timed_from
        if step <= first:
            return
        per_step = (now - since) / (step - first)
        affordable = (step - 1) + int(max(0.0, max_seconds - (now - self.started)) / max(per_step, 1e-9))
        # never below the step about to run: the last step must be the one that reports
        schedule.total = max(min(self.planned, MIN_CAPPED_STEPS), step, min(self.planned, affordable))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class _Ema:
    """An exponential moving average of the weights (and a copy of the buffers), updated every step.

    The decay ramps up from 0 ((1 + t) / (10 + t)) so an early average is
    not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.params, [p.detach() for p in model.parameters()], 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for own, averaged in zip(model.parameters(), self.params, strict=True):
            own.copy_(averaged)


class _Stopper:
    """Calls should_stop() before the first step, then at most every STOP_CHECK_S seconds."""

    def __init__(self, should_stop: Callable[[], bool] | None):
        self.should_stop = should_stop
        self.last: float | None = None

    def check(self) -> None:
        if self.should_stop is None:
            return
        now = time.monotonic()
        if self.last is not None and now - self.last < STOP_CHECK_S:
            return
        self.last = now
        if self.should_stop():
            raise Cancelled("training cancelled")


def _labels_array(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    return labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    # read-only arrays (memmap slices) are copied: torch.from_numpy needs writable memory
    return torch.from_numpy(images if images.flags.writeable else np.array(images))


def _check_inputs(images, labels: np.ndarray, config: TrainConfig, model: nn.Module) -> None:
    check_images(images)
    n = images.shape[0]
    if n == 0:
        raise ValueError("cannot train on an empty set: label some images first")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    classes = getattr(getattr(model, "config", None), "num_classes", None)
    if labels.min() < 0 or (classes is not None and labels.max() >= classes):
        raise ValueError(
            f"labels must lie in 0..{classes - 1 if classes else 'C-1'}, got {labels.min()}..{labels.max()}"
        )
    if config.steps < 0 or config.min_steps < 1 or config.max_steps < config.min_steps or config.passes <= 0:
        raise ValueError("steps must be >= 0 (0 = planned), min_steps >= 1, max_steps >= min_steps, passes > 0")
    if config.report_every < 1:
        raise ValueError("report_every must be >= 1")
    if config.batch_size < 2:
        raise ValueError("batch_size must be >= 2 (batch norm needs two examples)")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; use one of {SCHEDULES}")
    if not 0 <= config.warmup < 1 or not 0 <= config.ema < 1 or config.clip_norm < 0:
        raise ValueError("warmup and ema must lie in [0, 1), clip_norm must be >= 0")
    if config.max_seconds is not None and config.max_seconds <= 0:
        raise ValueError("max_seconds must be positive (or None for no cap)")
