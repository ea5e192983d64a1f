"""Numeric precision: when the engine computes in bfloat16, and the convolutions it must keep in float32.

Training, batch-norm recalibration and inference (scoring, embedding,
evaluation) all run under `autocast(device)`, so the statistics recalibration
gathers are those of the activations inference computes. bf16 autocast is on
for CUDA and for CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere oneDNN
emulates bf16, slower than float32. `PROXY_LABELER_BF16=0|1` forces the
choice (docs/training.md has the measurements behind the default).

`float32_convs`: oneDNN's bf16 weight gradient of a convolution whose stride
exceeds its input's side (tv_resnet18's layer4.0.conv1 on 16 px images: 3x3,
stride 2, on a 1x1 map) is left mostly uninitialised on CPUs with native bf16:
values up to 1e37 that differ on every call, which clipping turns into NaN at
a random step. Inside `float32_convs` exactly those convolutions run in
float32; they see a map smaller than their stride, so they cost next to
nothing.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["BF16_ENV", "autocast", "float32_convs", "strided_past_input", "use_bf16"]

BF16_ENV = "PROXY_LABELER_BF16"


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast on `device`: PROXY_LABELER_BF16 (0 or 1) when set, else on CUDA and on CPUs with native bf16."""
    forced = os.environ.get(BF16_ENV, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"{BF16_ENV} must be 0 (float32) or 1 (bf16 autocast), got {forced!r}")
        return forced == "1" and device.type in ("cpu", "cuda")
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpu_has_native_bf16()
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device) -> torch.autocast:
    """The autocast context every forward pass of the engine runs in (a no-op when bf16 is off)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(device))


@contextlib.contextmanager
def float32_convs(model: nn.Module, sample: torch.Tensor) -> Iterator[list[nn.Conv2d]]:
    """Within this block, the convolutions of `model` whose stride exceeds their input's side run in float32.

    `sample` is a normalized input batch of the size the model will see (one
    image is enough). Yields the convolutions so treated (none when bf16 is
    off on the sample's device).
    """
    convs = strided_past_input(model, sample) if use_bf16(sample.device) else []
    for conv in convs:
        conv.forward = types.MethodType(_float32_forward, conv)  # type: ignore[method-assign]
    try:
        yield convs
    finally:
        for conv in convs:
            del conv.forward


def strided_past_input(model: nn.Module, sample: torch.Tensor) -> list[nn.Conv2d]:
    """The Conv2d layers whose stride exceeds the height or width of their input, found by one
    no-grad forward pass of one image of `sample` in eval mode (nothing in the model changes)."""
    found: list[nn.Conv2d] = []
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return found

    def check(conv: nn.Module, args: tuple) -> None:
        height, width = args[0].shape[-2:]
        if isinstance(conv, nn.Conv2d) and (conv.stride[0] > height or conv.stride[1] > width):
            found.append(conv)

    handles = [m.register_forward_pre_hook(check) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample[:1])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return found


def _float32_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        return type(conv).forward(conv, x.float())


def _cpu_has_native_bf16() -> bool:
    # mkldnn reports bf16 "supported" on any AVX512 CPU, where it is emulated and slower than float32
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
