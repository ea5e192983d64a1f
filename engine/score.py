"""One no-grad pass of a model over the pool: softmax probabilities and embeddings.

`PoolScores` is what every selection strategy reads (see `engine.selection.strategies`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.device import Normalization, batch_to_tensor, check_images, model_device, normalization_tensors, to_float
from engine.precision import autocast

CPU_MAX_BATCH = 256  # larger CPU batches run slower per image (they fall out of cache)


@dataclass
class PoolScores:
    """Scores of every pool position from one pass of the proxy.

    A labeled set scored for a core-set (`engine.selection.coreset.labeled_pool`) also carries its
    labels and the statistics its proxy gathered while training (`engine.example_stats`).
    """

    probs: np.ndarray  # float32 [N, C], softmax, rows sum to 1
    embeddings: np.ndarray  # float32 [N, D], penultimate features after global pooling
    labels: np.ndarray | None = None  # int [N], the given labels; None for an unlabeled pool
    per_example: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float [N], e.g. "forgetting"

    def subset(self, positions: np.ndarray) -> PoolScores:
        """The scores of `positions` only, in that order."""
        return PoolScores(
            probs=self.probs[positions],
            embeddings=self.embeddings[positions],
            labels=None if self.labels is None else self.labels[positions],
            per_example={name: values[positions] for name, values in self.per_example.items()},
        )


def score_pool(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    normalization: Normalization,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    *,
    tta: bool = False,
) -> PoolScores:
    """Softmax probabilities and embeddings of uint8 `images` [N, 3, H, W].

    `images` may be a numpy memmap: each batch is copied and converted on its
    own, so no float copy of the whole pool is ever made. The model is put in
    eval mode (and moved to `device` when one is given; default: where the
    model already is); its train/eval mode is restored afterwards. On CPU
    batches are capped at CPU_MAX_BATCH images. `tta`: each image and its
    mirror image; their logits and embeddings are averaged.
    """
    check_images(images)
    device = _prepare(model, device)
    batch_size = batch_size_on(batch_size, device)
    n = images.shape[0]
    probs: np.ndarray | None = None
    embeds: np.ndarray | None = None
    with eval_mode(model), torch.inference_mode(), autocast(device):
        mean, std = normalization_tensors(normalization, device)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = to_float(batch_to_tensor(images, start, stop, device), mean, std, channels_last=True)
            logits, emb = logits_and_embedding(model, x)
            if tta:
                flipped_logits, flipped_emb = logits_and_embedding(model, x.flip(3))
                logits, emb = (logits + flipped_logits) / 2, (emb + flipped_emb) / 2
            if probs is None or embeds is None:
                probs = np.empty((n, logits.shape[1]), np.float32)
                embeds = np.empty((n, emb.shape[1]), np.float32)
            probs[start:stop] = torch.softmax(logits.float(), dim=1).cpu().numpy()
            embeds[start:stop] = emb.float().cpu().numpy()
    if probs is None or embeds is None:
        c, d = _output_dims(model)
        probs, embeds = np.empty((0, c), np.float32), np.empty((0, d), np.float32)
    return PoolScores(probs=probs, embeddings=embeds)


def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    normalization: Normalization,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    *,
    tta: bool = False,
) -> np.ndarray:
    """float32 logits [N, C] of uint8 `images` [N, 3, H, W], batched, no grad.

    `tta`: the mean of the logits of each image and of its mirror image.
    """
    check_images(images)
    device = _prepare(model, device)
    batch_size = batch_size_on(batch_size, device)
    out = []
    with eval_mode(model), torch.inference_mode(), autocast(device):
        mean, std = normalization_tensors(normalization, device)
        for start in range(0, images.shape[0], batch_size):
            stop = min(start + batch_size, images.shape[0])
            x = to_float(batch_to_tensor(images, start, stop, device), mean, std, channels_last=True)
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
            out.append(logits.cpu())
    if not out:
        return np.empty((0, _output_dims(model)[0]), np.float32)
    return torch.cat(out).numpy()


def _prepare(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Move the model to `device` (default: where it is) in channels_last, faster on CPU and CUDA."""
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    return device


def batch_size_on(batch_size: int, device: torch.device) -> int:
    """The batch `score_pool` and `predict_logits` use on `device`: capped at CPU_MAX_BATCH on a CPU."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return min(batch_size, CPU_MAX_BATCH) if device.type == "cpu" else batch_size


def logits_and_embedding(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, C], embedding [B, D]) in one pass when the model has `classify`, else two."""
    emb = model.embed(x)  # type: ignore[operator]  # nn.Module types its attributes as Tensor | Module
    if hasattr(model, "classify"):
        return model.classify(emb), emb  # type: ignore[operator]
    return model(x), emb


def _output_dims(model: nn.Module) -> tuple[int, int]:
    config = getattr(model, "config", None)
    classes = config.num_classes if config is not None else 0
    return classes, int(getattr(model, "embed_dim", 0))


class eval_mode:
    """Context manager: the model in eval mode inside, its previous mode restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)
