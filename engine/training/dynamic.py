"""DynaMS: train on the examples closest to the decision boundary, re-selected as the model learns.

Dynamic margin selection (Wang et al., "DynaMS: Dynamic Margin Selection for
Efficient Deep Learning", ICLR 2023): every so often the current model scores
the whole training set, and training continues on the examples of smallest
classification margin, chosen per class. Here, with `DynamicKeep(keep)` passed
as `engine.train.train(..., sampler=...)`:

- the first tenth of the run trains on all the data (the model must know
  something before its margins mean anything);
- then, at fixed intervals (`interval`, a share of the run: a tenth by
  default, so nine re-selections), the model scores every training image (no
  augmentation, eval mode, under `engine.precision.autocast`, in batches, on
  the device) and keeps, in each class, the `ratio` of its examples with the
  smallest margin `z_label - max over the other classes of z` (logits; a
  wrong prediction has a negative margin). Equal margins are ordered with the
  run's generator. A class keeps at least one example;
- the ratio decreases linearly over the run, from m + d to m - d with
  d = min(1 - m, m / 2) (so never above 1 nor below half its mean), m chosen
  so that the ratio's average over the run, the first tenth included, is
  `keep` (`keep_schedule`; with keep under 0.2 the all-data start is keep / 2
  of the run instead, so the rest keeps something).

The run's length follows the examples it uses: full training is P passes of S
steps over all N examples (`engine.train.plan`); the dynamic run makes as many
passes, each over its current subset (`step_plan`), so it takes about keep x
the steps, and its learning-rate schedule knows that length from the start
and ends at 0. Under a time cap that shortens the run mid-way, the segments
shrink in proportion, so every ratio still gets its share of the run.
Batch-norm recalibration and the final check use all the data, as always.
After training, `report` says what the run did (`DynamicReport`).
"""

from __future__ import annotations

import itertools
import math
import numbers
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from engine.device import to_float
from engine.precision import autocast
from engine.score import CPU_MAX_BATCH, eval_mode
from engine.train import TrainingRun, step_sizes

__all__ = [
    "DynamicKeep",
    "DynamicReport",
    "Segment",
    "keep_schedule",
    "kept_per_class",
    "margins",
    "score_margins",
    "smallest_margins",
    "step_plan",
]

WARMUP = 0.1  # share of the run on all the data
INTERVAL = 0.1  # share of the run between re-selections
SCORE_BATCH = {"cpu": CPU_MAX_BATCH, "cuda": 1024}  # images per scoring batch (others: the CPU's)


@dataclass(frozen=True)
class Segment:
    """A part of the run, in shares of it (0..1), trained on `ratio` of each class."""

    start: float
    stop: float
    ratio: float


@dataclass(frozen=True)
class DynamicReport:
    """What a dynamic run did: steps against full training's plan, its re-selections, its time."""

    steps: int  # steps taken
    full_steps: int  # the steps full training would have taken (the same plan)
    selections: tuple[tuple[int, int], ...]  # (the step it came before, examples kept) per re-selection
    seconds: float  # the step loop's seconds, re-selections included
    selection_seconds: float  # of which scoring and picking

    @property
    def step_share(self) -> float:
        """Steps taken over full training's steps."""
        return self.steps / max(1, self.full_steps)


def check_keep(keep: float) -> float:
    """`keep` as a float; ValueError unless it lies in (0, 1]."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or not 0 < keep <= 1:
        raise ValueError(f"the keep ratio must lie in (0, 1] (e.g. 0.6: 60 % of the data on average), got {keep!r}")
    return float(keep)


def keep_schedule(keep: float, interval: float = INTERVAL) -> list[Segment]:
    """The ratio kept per class over the run: all the data for the first tenth, then one segment per
    `interval`, each at its middle's value of a line decreasing from m + d to m - d (module docstring).

    The line is integrated exactly by its midpoints, so the length-weighted average of the ratios is `keep`.
    """
    keep = check_keep(keep)
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real) or not 0 < interval <= 1:
        raise ValueError(f"interval must be a share of the run in (0, 1], got {interval!r}")
    if keep == 1:
        return [Segment(0.0, 1.0, 1.0)]
    warmup = min(WARMUP, keep / 2)
    mean = (keep - warmup) / (1 - warmup)  # the ratio's mean after the warm-up
    spread = min(1 - mean, mean / 2)
    count = max(1, math.ceil((1 - warmup) / interval - 1e-9))
    edges = np.minimum(warmup + interval * np.arange(count + 1), 1.0)
    edges[-1] = 1.0
    segments = [Segment(0.0, warmup, 1.0)]
    for start, stop in itertools.pairwise(edges.tolist()):
        middle = ((start + stop) / 2 - warmup) / (1 - warmup)  # 0..1 along the line
        segments.append(Segment(float(start), float(stop), mean + spread * (1 - 2 * middle)))
    return segments


def kept_per_class(ratio: float, counts: np.ndarray) -> np.ndarray:
    """int64 [C]: `ratio` of each class's `counts`, rounded, at least 1 for a class with examples."""
    counts = np.asarray(counts, np.int64)
    kept = np.floor(ratio * counts + 0.5).astype(np.int64)
    return np.where(counts > 0, np.clip(kept, 1, counts), 0)


def step_plan(segments: list[Segment], counts: np.ndarray, batch: int, planned: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts int64 [K + 1], kept int64 [K, C]): the steps before each segment begins (the last entry is the
    run's length) and the examples it keeps per class.

    Full training is `planned` steps: P = planned / S passes of S steps over all N examples. Each segment
    makes its share of the P passes, each over its subset in batches of `batch` (`engine.train.step_sizes`),
    rounded cumulatively so the whole run is off by under one step.
    """
    counts = np.asarray(counts, np.int64)
    passes = planned / len(step_sizes(int(counts.sum()), batch))
    kept = np.stack([kept_per_class(s.ratio, counts) for s in segments])
    per_pass = np.array([len(step_sizes(int(k.sum()), batch)) for k in kept], np.float64)
    lengths = np.array([s.stop - s.start for s in segments]) * passes * per_pass
    starts = np.floor(np.concatenate([[0.0], np.cumsum(lengths)]) + 0.5).astype(np.int64)
    starts[-1] = max(1, starts[-1])
    return starts, kept


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """float32 [B]: the labelled class's logit minus the largest other one (negative: predicted wrong)."""
    z = logits.float()
    own = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], -math.inf)
    return own - others.max(dim=1).values


def smallest_margins(
    values: torch.Tensor,
    labels: torch.Tensor,
    kept: np.ndarray,
    gen: torch.Generator | None = None,
    *,
    counts: np.ndarray | None = None,
) -> torch.Tensor:
    """int64 positions: in each class c, the `kept[c]` examples of smallest `values`, on their device.

    Equal values are ordered with `gen` (by position without one). Grouped by class, smallest first within
    each: one sort by value and one by class, on the device. With the class `counts` [C] given (known on
    the host), nothing waits for the device.
    """
    device = values.device
    kept = np.asarray(kept, np.int64)
    if counts is None:
        counts = torch.bincount(labels, minlength=len(kept)).cpu().numpy()
    if len(counts) != len(kept) or (kept > counts).any() or (kept < 0).any():
        raise ValueError(f"cannot keep {kept.tolist()} of classes of {np.asarray(counts).tolist()} examples")
    n = len(values)
    if gen is None:
        shuffle = torch.arange(n, device=device)
    else:
        shuffle = torch.randperm(n, generator=gen, device=gen.device).to(device)
    by_value = shuffle[torch.sort(values[shuffle], stable=True).indices]
    by_class = by_value[torch.sort(labels[by_value], stable=True).indices]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.concatenate([np.arange(start, start + k) for start, k in zip(starts, kept, strict=True)])
    return by_class[torch.from_numpy(rows.astype(np.int64)).to(device)]


class DynamicKeep:
    """DynaMS as a sampler for `engine.train.train` (module docstring); `report` after training."""

    def __init__(self, keep: float = 0.6, *, interval: float = INTERVAL):
        self.segments = keep_schedule(keep, interval)
        self.keep, self.interval = check_keep(keep), interval
        self._reset(np.zeros(0, np.int64), 0)

    def _reset(self, counts: np.ndarray, planned: int) -> None:
        self.counts, self.full_steps = counts, planned
        self.starts = np.zeros(2, np.int64)
        self.kept = np.zeros((1, len(counts)), np.int64)
        self.selections: list[tuple[int, int]] = []
        self.taken = 0
        self.seconds = self.selection_seconds = 0.0
        self.began: float | None = None

    # ------------------------------------------------------------- Sampler

    def steps(self, labels: np.ndarray, batch: int, planned: int) -> int:
        counts = np.bincount(np.asarray(labels, np.int64))
        self._reset(counts, planned)
        self.starts, self.kept = step_plan(self.segments, counts, batch, planned)
        return int(self.starts[-1])

    def batches(self, run: TrainingRun) -> Iterator[torch.Tensor]:
        self.began = time.perf_counter()
        device = run.data.device
        segment, step = -1, 0
        subset = torch.arange(len(run.targets), device=device)
        queue: list[torch.Tensor] = []
        while True:
            step += 1
            if step <= run.total:  # beyond it the loop ends: the batch it draws then re-selects nothing
                now = max(segment, self._segment_of(step, run.total))
                if now != segment:
                    segment, subset, queue = now, self._select(run, now, step), []
                self.taken = step
            if not queue:  # a new pass, drawn as engine.train._batches draws it
                queue = list(_shuffled(subset, run.gen).split(step_sizes(len(subset), run.batch)))
            yield queue.pop(0)

    def finish(self, steps: int, seconds: float) -> None:
        self.taken, self.seconds = steps, seconds

    # ------------------------------------------------------------- report

    @property
    def report(self) -> DynamicReport:
        seconds = self.seconds
        if not seconds and self.began is not None:  # training stopped before finishing
            seconds = time.perf_counter() - self.began
        return DynamicReport(
            steps=self.taken,
            full_steps=self.full_steps,
            selections=tuple(self.selections),
            seconds=seconds,
            selection_seconds=self.selection_seconds,
        )

    # ------------------------------------------------------------- internals

    def _segment_of(self, step: int, total: int) -> int:
        """The segment step `step` (1-based) falls in, the boundaries scaled to a run of `total` steps."""
        starts = self.starts[:-1]
        planned = int(self.starts[-1])
        if total != planned:
            starts = np.floor(starts * (total / planned) + 0.5).astype(np.int64)
        return int(np.searchsorted(starts, step, side="left")) - 1

    def _select(self, run: TrainingRun, segment: int, step: int) -> torch.Tensor:
        """The positions segment `segment` trains on: all, or per class the smallest margins now."""
        kept = self.kept[segment]
        device = run.data.device
        if np.array_equal(kept, self.counts):  # every class keeps all its examples: nothing to score
            return torch.arange(len(run.targets), device=device)
        began = time.perf_counter()
        values = score_margins(run)
        subset = smallest_margins(values, run.targets, kept, run.gen, counts=self.counts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the time is the selection's, not the next step's
        self.selection_seconds += time.perf_counter() - began
        self.selections.append((step, int(kept.sum())))
        return subset


@torch.no_grad()
def score_margins(run: TrainingRun) -> torch.Tensor:
    """float32 [N] on the device: every training image's margin under the model now (eval mode, no
    augmentation, under autocast, in batches); the model's train mode is restored. Polls `run.stop`."""
    device = run.data.device
    n = len(run.targets)
    out = torch.empty(n, dtype=torch.float32, device=device)
    size = SCORE_BATCH.get(device.type, CPU_MAX_BATCH)
    with eval_mode(run.model), autocast(device):
        for start in range(0, n, size):
            run.stop()
            stop = min(start + size, n)
            x = to_float(run.data[start:stop], run.mean, run.std, channels_last=True)
            out[start:stop] = margins(run.model(x), run.targets[start:stop])
    return out


def _shuffled(subset: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`subset` in a fresh random order drawn from `gen` (a lone example twice: batch norm needs two),
    as `engine.train._batches` shuffles all N."""
    order = torch.randperm(len(subset), generator=gen, device=gen.device).repeat(2 if len(subset) == 1 else 1)
    return subset[order.to(subset.device)]
