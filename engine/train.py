"""Training: one function, the whole labeled set as uint8 on the device.

Following airbench/hlb-CIFAR10: the dataset is moved to the device once as
uint8 (a quarter of float32's bytes), batches are index slices, and random
crop + flip run on the device in batches. On CUDA the step loop never syncs
with the host: the loss is summed on the device and read at report points.
The CPU path runs the same code.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.device import Normalization, best_device, check_images, normalization_tensors, to_float
from engine.score import predict_logits

__all__ = ["TrainConfig", "Progress", "Cancelled", "best_device", "train", "evaluate", "augment"]

SCHEDULES = ("onecycle", "cosine")
STOP_CHECK_S = 0.1      # seconds between should_stop() calls: it may query a database


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults suit a proxy trained from scratch on ~1,000 images."""

    epochs: int = 8
    batch_size: int = 128          # most images per step; batches are made equal; >= 2
    lr: float = 0.4                # peak learning rate of the schedule
    momentum: float = 0.9          # SGD Nesterov momentum
    weight_decay: float = 5e-4     # on conv/linear weights only, not BN or biases
    label_smoothing: float = 0.1
    schedule: str = "onecycle"     # onecycle (linear warm-up 25%, linear decay) | cosine
    seed: int = 0                  # shuffling and augmentation
    device: str = "auto"           # auto | cpu | cuda | mps
    report_every: int = 50         # steps between progress reports (and one at each epoch end)


@dataclass(frozen=True)
class Progress:
    """Where training is: epoch 1..epochs, step 1..steps within the epoch, mean loss since the last report."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float

    @property
    def fraction(self) -> float:
        """Share of all steps done, 0..1."""
        return ((self.epoch - 1) * self.steps + self.step) / max(1, self.epochs * self.steps)


class Cancelled(Exception):
    """Training stopped because should_stop() returned True."""


def train(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    config: TrainConfig,
    normalization: Normalization,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> nn.Module:
    """Train `model` in place on uint8 `images` [N, 3, H, W] with int64 `labels` [N]; return it.

    Runs on `best_device(config.device)`; the returned model stays there, in
    eval mode. `should_stop` is polled between steps (at most every 0.1 s)
    and makes this raise Cancelled; `on_progress` gets a Progress every
    `config.report_every` steps and at each epoch end.
    """
    labels = _labels_array(labels)
    _check_inputs(images, labels, config, model)
    device = best_device(config.device)
    data = _as_tensor(images).to(device)                         # uint8, converted per batch
    targets = torch.from_numpy(labels.astype(np.int64)).to(device)
    model.to(device, memory_format=torch.channels_last)          # faster on CUDA and on CPU
    model.train()
    mean, std = normalization_tensors(normalization, device)
    on_cuda = device.type == "cuda"
    gen = torch.Generator(device=device if device.type in ("cpu", "cuda") else "cpu").manual_seed(config.seed)
    n = data.shape[0]
    sizes = _step_sizes(n, config.batch_size)
    steps = len(sizes)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config, steps * config.epochs)
    pad = max(1, round(4 * data.shape[-1] / 32))                  # 4 px at 32 px, scaled with the size
    stopper = _Stopper(should_stop)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n, generator=gen, device=gen.device).repeat(2 if n == 1 else 1).to(device)
        for step, idx in enumerate(order.split(sizes), start=1):
            stopper.check()
            x = to_float(augment(data[idx], pad, gen), mean, std, channels_last=True)
            loss_sum += _step(model, x, targets[idx], optimizer, config.label_smoothing, on_cuda)
            scheduler.step()
            seen += 1
            if on_progress is not None and (step == steps or step % config.report_every == 0):
                on_progress(Progress(epoch, config.epochs, step, steps, loss_sum.item() / seen))
                loss_sum.zero_()
                seen = 0
    return model.eval()


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
          label_smoothing: float, bf16: bool) -> torch.Tensor:
    """One SGD step; returns the detached float32 loss, still on the device (no host sync)."""
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().float()


def evaluate(model: nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
             normalization: Normalization, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy (0..1) of `model` on uint8 `images` [N, 3, H, W] with int labels [N]."""
    labels = _labels_array(labels)
    if len(images) == 0:
        raise ValueError("cannot evaluate on an empty set")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    logits = predict_logits(model, images, normalization, device=device)
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
    rows = _reflect(dy + torch.arange(h, device=dev), h).to(batch.device)      # [B, H]
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


def _step_sizes(n: int, batch_size: int) -> list[int]:
    """Images in each step of one epoch: every example once, in near-equal batches.

    Equal batches, not full batches plus a remainder: 5,000 images in
    batches of 128 would leave a step of 8 images in every epoch (the last
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


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]    # BN scales/shifts and biases
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    warmup = max(1, round(0.25 * total)) if config.schedule == "onecycle" else max(1, round(0.05 * total))

    def factor(step: int) -> float:   # multiplier of config.lr before step `step` (0-based)
        if step < warmup:
            return (step + 1) / warmup
        rest = (step - warmup) / max(1, total - warmup)
        if config.schedule == "onecycle":
            return max(0.0, 1.0 - rest)
        return 0.5 * (1.0 + math.cos(math.pi * rest))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Stopper:
    """Calls should_stop() before the first step, then at most every STOP_CHECK_S seconds."""

    def __init__(self, should_stop: Callable[[], bool] | None):
        self.should_stop, self.last = should_stop, None

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
        raise ValueError(f"labels must lie in 0..{classes - 1 if classes else 'C-1'}, got {labels.min()}..{labels.max()}")
    if config.epochs < 1 or config.report_every < 1:
        raise ValueError("epochs and report_every must be >= 1")
    if config.batch_size < 2:
        raise ValueError("batch_size must be >= 2 (batch norm needs two examples)")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; use one of {SCHEDULES}")
