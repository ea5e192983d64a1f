"""Device choice and the uint8 -> normalized float conversion shared by training and scoring.

Kept apart from `engine.train` so scoring and checkpoints need not import the
trainer. Normalization is `(mean, std)`: per-channel tuples in 0..1 units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Normalization = tuple[Sequence[float], Sequence[float]]


def best_device(preference: str = "auto") -> torch.device:
    """The device to run on: `auto` picks cuda, then mps, then cpu.

    An explicit preference ("cpu", "cuda", "cuda:1", "mps") is honoured, and a
    ValueError says so when that device is not available here.
    """
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {preference!r}; use auto, cpu, cuda or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    if device.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was asked for but it is not available; use 'auto' or 'cpu'")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {preference!r}; use auto, cpu, cuda or mps")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (cpu for a parameterless module)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def normalization_tensors(normalization: Normalization, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as float32 tensors [1, 3, 1, 1] scaled to 0..255 units, ready for uint8 input."""
    mean, std = normalization
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32, device=device)
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32, device=device)
    if mean_t.numel() != 3 or std_t.numel() != 3:
        raise ValueError(f"normalization needs 3 means and 3 stds, got {len(mean)} and {len(std)}")
    if not torch.all(std_t > 0):
        raise ValueError(f"normalization std must be positive, got {tuple(std)}")
    return (mean_t * 255).view(1, 3, 1, 1), (std_t * 255).view(1, 3, 1, 1)


def to_float(
    batch: torch.Tensor, mean255: torch.Tensor, std255: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalized float32 [B, 3, H, W] on the batch's device."""
    x = (batch.float() - mean255) / std255
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def check_images(images: np.ndarray | torch.Tensor) -> None:
    """Raise ValueError unless `images` is uint8 [N, 3, H, W]."""
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got shape {shape}")
    dtype_ok = images.dtype == (torch.uint8 if isinstance(images, torch.Tensor) else np.uint8)
    if not dtype_ok:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got dtype {images.dtype}")


def batch_to_tensor(images: np.ndarray | torch.Tensor, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Rows start:stop of a uint8 array (numpy, memmap or tensor) as a uint8 tensor on `device`.

    Only this slice is copied, so a memory-mapped pool is never read whole.
    """
    if isinstance(images, torch.Tensor):
        return images[start:stop].to(device, non_blocking=True)
    # a copy: memmap slices are read-only views, which torch.from_numpy warns about
    chunk = torch.from_numpy(np.array(images[start:stop], dtype=np.uint8, copy=True))
    if device.type == "cuda":
        chunk = chunk.pin_memory()
    return chunk.to(device, non_blocking=True)
