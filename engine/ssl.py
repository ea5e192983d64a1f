"""Self-supervised pretraining on the unlabeled pool: SimCLR (Chen et al., ICML 2020).

Two augmented views of every image in a batch are pulled together and pushed
away from the other images' views (the NT-Xent loss) through a small
projection head; the backbone's pooled features are the representation.
SimCLR was chosen over BYOL/DINO for its measured quality per CPU second at
the scale of a labeling pool (docs/representation.md): no momentum encoder
to run, and a few thousand steps on a few thousand images already give
features a linear probe and k-NN can use.

Augmentation runs batched on the device, like engine.train's: one affine
`grid_sample` per batch for the random resized crop and flip, and one 3x3
colour matrix per image for brightness, saturation, hue and grayscale
(contrast is the blend with each image's mean). The crop is resampled to
`input_size` (the pool's size, at most MAX_INPUT), so large images train at
a CPU-sized resolution.

Training is counted in steps and saves its whole state (weights, optimizer,
step, schedule length, seconds so far) atomically every `save_every_s`:
`pretrain` called again with the same state path resumes where the last run
stopped. A time cap (training seconds, resumed runs included) refits the
schedule's length at every report from the step times measured so far in
this run, so a machine that gets busier shortens the run instead of
overrunning the cap, and a resumed run fits what is left.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import storage
from engine.device import Normalization, best_device, check_images, normalization_tensors
from engine.distributed.world import (
    buffers_from_main,
    data_parallel,
    from_main,
    gather_with_grad,
    mean_over_ranks,
    world,
)
from engine.models import Model, ModelConfig, model_from_config
from engine.precision import autocast, float32_convs
from engine.train import Cancelled, TrainingFailed, _as_tensor, _Stopper

MAX_INPUT = 64  # SSL trains on crops resampled to at most this many pixels
TIMED_FROM = 3  # a time cap times the steps from this many steps into a run (earlier ones pay warm-up)
STATE_VERSION = 1


@dataclass(frozen=True)
class SSLConfig:
    """SimCLR hyperparameters; units in comments."""

    depth: int = 8  # pre-activation ResNet depth (6n+2): on a 2-core CPU 8 x 16 learned more
    width: int = 16  # per second than 14 x 32 (docs/representation.md); features are 4 x width
    batch_size: int = 128  # images per step (two views each); 128 beat 256 per CPU second
    steps: int = 0  # 0 = as many as fit `max_seconds` (at most max_steps)
    max_steps: int = 20000
    max_seconds: float | None = 900.0
    lr: float = 0.5  # peak SGD learning rate at batch 256 (scaled linearly)
    weight_decay: float = 5e-4
    warmup: float = 0.05  # share of the steps with a linear warm-up
    temperature: float = 0.2
    projection_dim: int = 128
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: float = 0.4  # brightness, contrast and saturation strength
    hue: float = 0.1  # hue rotation, as a share of a full turn
    jitter_p: float = 0.8
    gray_p: float = 0.2
    seed: int = 0
    device: str = "auto"
    save_every_s: float = 30.0
    report_every: int = 10


@dataclass(frozen=True)
class SSLProgress:
    """Where pretraining is: step of steps, the recent loss, seconds so far (resumed runs included)."""

    step: int
    steps: int
    loss: float
    seconds: float
    model: nn.Module | None = None  # the backbone being trained (for snapshots; do not modify)

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.steps)


@dataclass
class SSLResult:
    """A finished (or resumed-to-finish) pretraining run."""

    model: Model  # the backbone, eval mode; `embed(x)` gives features
    steps: int
    seconds: float
    final_loss: float
    resumed_from: int  # the step the run started at (0 = from scratch)


def backbone_config(config: SSLConfig, input_size: int) -> ModelConfig:
    """The backbone architecture SSL trains (an engine.models pre-activation ResNet)."""
    return ModelConfig("ssl_backbone", "preact_resnet", config.depth, config.width, 1, input_size)


def ssl_input_size(image_size: int) -> int:
    """Side of the crops SSL trains on for a pool cached at `image_size` px."""
    return min(image_size, MAX_INPUT)


class ProjectionHead(nn.Module):
    """SimCLR's MLP head: features -> hidden -> projection (the loss sees only its output)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        hidden = max(256, 2 * dim)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The SimCLR loss of two views' projections [B, D]: each view must find its partner among 2B - 1.

    Inside a torchrun job the other ranks' projections are gathered with their gradients, so each of this
    rank's 2B views finds its partner among all 2BW - 1 of the global batch (SimCLR's large-batch negatives);
    every rank passes the same B."""
    here = world()
    if here.size > 1:
        return _nt_xent_gathered(z1, z2, temperature, here.rank, here.size)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def _nt_xent_gathered(z1: torch.Tensor, z2: torch.Tensor, temperature: float, rank: int, size: int) -> torch.Tensor:
    """nt_xent of this rank's views against the views of every rank: rows of all first views (rank by rank),
    then all second views; the anchors are this rank's rows, taken from the gathered tensor so the gradient
    of each comparison reaches both sides."""
    n = len(z1)
    every = F.normalize(torch.cat([*gather_with_grad(z1), *gather_with_grad(z2)]).float(), dim=1)  # [2nW, D]
    mine = torch.cat([torch.arange(rank * n, (rank + 1) * n), torch.arange((size + rank) * n, (size + rank + 1) * n)])
    mine = mine.to(every.device)
    sim = every[mine] @ every.T / temperature  # [2n, 2nW]
    sim[torch.arange(2 * n, device=sim.device), mine] = float("-inf")  # never its own partner
    half = size * n
    partner = torch.where(mine < half, mine + half, mine - half)
    return F.cross_entropy(sim, partner)


class _Projector(nn.Module):
    """Backbone and projection head as one module, the one DistributedDataParallel wraps. The backbone's
    classifier (`fc`) takes no part in SimCLR: it is frozen, as DDP needs every trained parameter used."""

    def __init__(self, model: nn.Module, head: nn.Module):
        super().__init__()
        self.model, self.head = model, head
        for p in model.fc.parameters():  # type: ignore[union-attr]
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.embed(x))  # type: ignore[operator]


def augment_views(batch: torch.Tensor, out_size: int, config: SSLConfig, gen: torch.Generator) -> torch.Tensor:
    """A random view of each uint8 image [B, 3, H, W] as float 0..1 [B, 3, out, out]."""
    x = batch.float() / 255
    b, device = len(x), x.device
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=gen.device).to(device)
    # random resized crop: area share in crop_scale, aspect ratio 3/4..4/3 (log-uniform), random flip
    lo, hi = config.crop_scale
    area = lo + (hi - lo) * rand(b)
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b))
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * rand(b) - 1)
    cy = (1 - h) * (2 * rand(b) - 1)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _color(x, config, rand).clamp_(0, 1)


# RGB -> YIQ and back: a hue rotation is a rotation of the I/Q plane
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GRAY = torch.tensor([0.299, 0.587, 0.114])


def _color(x: torch.Tensor, config: SSLConfig, rand) -> torch.Tensor:
    """Colour jitter (with probability jitter_p) and grayscale (gray_p) as one 3x3 matrix per image."""
    b, device = len(x), x.device
    eye = torch.eye(3, device=device).expand(b, 3, 3)
    jittered = (rand(b) < config.jitter_p).float().view(b, 1, 1)
    s = config.jitter
    brightness = (1 + s * (2 * rand(b) - 1)).view(b, 1, 1)
    saturation = (1 + s * (2 * rand(b) - 1)).view(b, 1, 1)
    angle = (2 * math.pi * config.hue) * (2 * rand(b) - 1)
    gray_rows = _GRAY.to(device).expand(3, 3)  # every channel = luma
    yiq, yiq_inv = _YIQ.to(device), torch.linalg.inv(_YIQ).to(device)
    rot = torch.zeros(b, 3, 3, device=device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    hue = yiq_inv @ rot @ yiq
    sat = saturation * eye + (1 - saturation) * gray_rows
    jitter = brightness * (sat @ hue)
    matrix = jittered * jitter + (1 - jittered) * eye
    grayscale = (rand(b) < config.gray_p).float().view(b, 1, 1)
    matrix = grayscale * (gray_rows @ matrix) + (1 - grayscale) * matrix
    out = torch.einsum("bij,bjhw->bihw", matrix, x)
    contrast = (1 + s * (2 * rand(b) - 1)).view(b, 1, 1, 1)
    mean = (out * _GRAY.to(device).view(1, 3, 1, 1)).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    contrast = torch.where(jittered.view(b, 1, 1, 1) > 0, contrast, torch.ones_like(contrast))
    return (out - mean) * contrast + mean


def pretrain(
    images: np.ndarray | torch.Tensor,
    normalization: Normalization,
    config: SSLConfig,
    state_path: str | Path | None = None,
    on_progress: Callable[[SSLProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SSLResult:
    """SimCLR on uint8 `images` [N, 3, S, S]; the backbone, trained, in eval mode.

    With `state_path`, the whole training state is saved there every
    `config.save_every_s` seconds and when cancelled, and a run whose state
    file exists resumes from it (its config must match, else ValueError).
    `should_stop()` returning True saves the state and raises
    engine.train.Cancelled. TrainingFailed if the loss stops being finite.
    """
    check_images(images)
    if len(images) < 2:
        raise ValueError("self-supervised training needs at least 2 images")
    here = world()
    device = best_device(config.device) if here.size == 1 else _rank_device(config.device, here)
    if here.size > 1 and len(images) < 2 * here.size:
        raise ValueError(f"{here.size} processes need at least {2 * here.size} images (two per process)")
    input_size = ssl_input_size(int(images.shape[-1]))
    # each rank draws its batches from its own contiguous shard of the pool; all draw the same batch size
    batch = max(2, min(config.batch_size, len(images) // here.size))
    start, stop = here.shard(len(images))
    torch.manual_seed(config.seed)
    model = model_from_config(backbone_config(config, input_size), seed=config.seed).to(device)
    head = ProjectionHead(model.embed_dim, config.projection_dim).to(device)
    params = list(model.parameters()) + list(head.parameters())
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    global_batch = batch * here.size  # the learning rate follows the global batch
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr * global_batch / 256,
        momentum=0.9,
        nesterov=True,
    )
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    state = _State(step=0, total=config.steps or config.max_steps, seconds=0.0, fitted=bool(config.steps))
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.is_file():  # every rank reads rank 0's state: any world size resumes
        state = _load_state(state_path, config, model, head, optimizer, gen)
    if here.size > 1:  # each rank its own draws, the same whatever world size saved the state
        gen.manual_seed(config.seed * 1_000_003 + here.rank * 7919 + state.step)
    resumed_from = state.step
    data = _as_tensor(images[start:stop]).to(device)  # this rank's shard only: never a copy of the pool per rank
    mean, std = (t / 255 for t in normalization_tensors(normalization, device))
    stopper = _Stopper(should_stop if here.main else None)
    net = _Projector(model, head) if here.size == 1 else data_parallel(_Projector(model, head), device)
    model.train()
    head.train()
    started = time.perf_counter() - state.seconds
    last_save = time.perf_counter()
    timed: tuple[float, int] | None = None
    loss_sum, since = torch.zeros((), device=device), 0
    loss = float("nan")
    # convolutions that oneDNN's bf16 kernels get wrong run in float32 (engine.precision)
    with float32_convs(model, torch.zeros(1, 3, input_size, input_size, device=device)):
        while state.step < state.total:
            try:
                if here.size == 1:
                    stopper.check()
                else:  # rank 0 fits the time cap before the step, then its length and stop reach every rank
                    if not state.fitted and config.max_seconds is not None and here.main and state.step > 0:
                        timed = _fit_total(state, config, device, timed, started, resumed_from)
                    _agree_on_rank_0(stopper, state)
            except Cancelled:
                if state_path is not None and here.main:
                    state.seconds = time.perf_counter() - started
                    _save_state(state_path, config, model, head, optimizer, gen, state)
                raise
            if state.step >= state.total:  # rank 0 fitted the run to its time cap
                break
            step = state.step
            _set_lr(optimizer, config, global_batch, step, state.total)
            idx = torch.randint(len(data), (batch,), generator=gen).to(device)
            views = [(augment_views(data[idx], input_size, config, gen) - mean) / std for _ in range(2)]
            with autocast(device):
                if here.size == 1:
                    z1, z2 = (net(v.contiguous(memory_format=torch.channels_last)) for v in views)
                else:  # one forward through DDP per step: both views in one batch
                    z1, z2 = net(torch.cat(views).contiguous(memory_format=torch.channels_last)).chunk(2)
                loss_t = nt_xent(z1, z2, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            nn.utils.clip_grad_norm_(params, 5.0, foreach=True)
            optimizer.step()
            loss_sum += loss_t.detach().float()
            since += 1
            state.step = step + 1
            if not state.fitted and config.max_seconds is not None and here.size == 1:
                timed = _fit_total(state, config, device, timed, started, resumed_from)
            if state.step % config.report_every == 0 or state.step == state.total:
                loss = mean_over_ranks(loss_sum).item() / since
                loss_sum.zero_()
                since = 0
                if not math.isfinite(loss):
                    raise TrainingFailed(
                        f"self-supervised training diverged: the loss became {loss} at step "
                        f"{state.step}; retry with a smaller learning rate"
                    )
                state.seconds = time.perf_counter() - started
                if on_progress is not None and here.main:
                    on_progress(SSLProgress(state.step, state.total, loss, state.seconds, model))
            if state_path is not None and here.main and time.perf_counter() - last_save >= config.save_every_s:
                state.seconds = time.perf_counter() - started
                _save_state(state_path, config, model, head, optimizer, gen, state)
                last_save = time.perf_counter()
    buffers_from_main(net)  # every rank ends with rank 0's batch-norm statistics, the ones it saves
    state.seconds = time.perf_counter() - started
    if state_path is not None and here.main:
        _save_state(state_path, config, model, head, optimizer, gen, state)
    model.eval()
    return SSLResult(model=model, steps=state.step, seconds=state.seconds, final_loss=loss, resumed_from=resumed_from)


def _agree_on_rank_0(stopper: _Stopper, state: _State) -> None:
    """Inside a torchrun job: rank 0's should_stop (rate-limited) and its fitted schedule length reach every
    rank before each step, so all take the same steps, report at the same steps and stop together."""
    stop = 0
    if world().main:
        try:
            stopper.check()
        except Cancelled:
            stop = 1
    stop, state.total = from_main([stop, state.total])
    if stop:
        raise Cancelled("training cancelled")


def _rank_device(preference: str, here) -> torch.device:
    return torch.device("cpu") if preference == "cpu" else here.device


def _set_lr(optimizer: torch.optim.Optimizer, config: SSLConfig, batch: int, step: int, total: int) -> None:
    """Linear warm-up, then cosine decay to 0, of the peak lr scaled to the batch."""
    peak = config.lr * batch / 256
    warmup = max(1, round(config.warmup * total))
    if step < warmup:
        lr = peak * (step + 1) / warmup
    else:
        lr = peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class _State:
    step: int
    total: int  # schedule length in steps; refitted to a time cap at every report
    seconds: float  # training seconds so far, across resumed runs
    fitted: bool  # whether `total` is final (a fixed step count)


def _fit_total(
    state: _State,
    config: SSLConfig,
    device: torch.device,
    timed: tuple[float, int] | None,
    started: float,
    resumed_from: int,
) -> tuple[float, int] | None:
    """Fit the schedule's length to the time left of max_seconds at every report, from the mean step time
    since TIMED_FROM steps into this run (clock time, step): a machine that gets busier mid-run shortens
    the schedule instead of overrunning the cap, as engine.train's time cap does."""
    if timed is None:
        if state.step - resumed_from < TIMED_FROM:
            return None
        _sync(device)
        return time.perf_counter(), state.step
    since, first = timed
    if state.step % config.report_every or state.step <= first:
        return timed
    _sync(device)
    now = time.perf_counter()
    per_step = (now - since) / (state.step - first)
    left = max(0.0, (config.max_seconds or 0.0) - (now - started))
    state.total = max(state.step, min(config.max_steps, state.step + int(left / max(per_step, 1e-9))))
    return timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _save_state(
    path: Path,
    config: SSLConfig,
    model: nn.Module,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    state: _State,
) -> None:
    payload = {
        "version": STATE_VERSION,
        "config": asdict(config) | {"device": "", "save_every_s": 0},
        "model": model.state_dict(),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": gen.get_state(),
        "state": asdict(state),
    }
    with storage.atomic_write(path) as tmp:
        torch.save(payload, tmp)


def _load_state(
    path: Path,
    config: SSLConfig,
    model: nn.Module,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
) -> _State:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say so, the caller may delete it and start over
        raise ValueError(f"cannot resume self-supervised training from {path}: {exc}") from exc
    wanted = asdict(config) | {"device": "", "save_every_s": 0}
    saved = payload.get("config", {})
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    if payload.get("version") != STATE_VERSION or saved != wanted:
        raise ValueError(f"{path} was saved by a different self-supervised configuration; delete it to start over")
    model.load_state_dict(payload["model"])
    head.load_state_dict(payload["head"])
    optimizer.load_state_dict(payload["optimizer"])
    gen.set_state(payload["generator"])
    return _State(**payload["state"])
