"""Checkpoints usable on their own: weights in safetensors plus JSON metadata.

`dir/model.safetensors` holds the state dict; `dir/metadata.json` holds the
model config (enough to rebuild the architecture), class names in order, the
image size and normalization, metrics, the number of labels, the creation
time and the torch version. `load_checkpoint(dir).predict(pil_images)` needs
nothing else: images go through the pool cache's resize rule.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.device import Normalization
from engine.models import ModelConfig, model_from_config
from engine.pool_cache import image_to_array
from engine.score import predict_logits
from storage.files import atomic_write

WEIGHTS = "model.safetensors"
METADATA = "metadata.json"
FORMAT = "al-labeler-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit its metadata."""


def save_checkpoint(
    model: nn.Module,
    path_dir: str | Path,
    *,
    class_names: Sequence[str],
    image_size: int,
    normalization: Normalization,
    metrics: dict,
    n_labels: int,
) -> Path:
    """Write `model` (it needs a `.config` ModelConfig) and its metadata into `path_dir`; return the dir.

    Each file is written under a temporary name and moved into place, the
    metadata last, so a crash never leaves a checkpoint that looks complete.
    """
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise CheckpointError("only models built by engine.models (with a .config) can be checkpointed")
    if len(class_names) != config.num_classes:
        raise CheckpointError(f"{len(class_names)} class names for a model with {config.num_classes} outputs")
    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    mean, std = normalization
    metadata = {
        "format": FORMAT,
        "model": dataclasses.asdict(config),
        "class_names": [str(c) for c in class_names],
        "image_size": int(image_size),
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "metrics": metrics,
        "n_labels": int(n_labels),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    with atomic_write(path_dir / METADATA) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, default=_plain))
    return path_dir


def _plain(value):
    """JSON fallback for metric values such as numpy scalars."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass
class LoadedModel:
    """A rebuilt model (eval mode, on CPU unless moved) and its metadata."""

    model: nn.Module
    metadata: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        norm = self.metadata["normalization"]
        return tuple(norm["mean"]), tuple(norm["std"])

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """uint8 [N, 3, S, S] of PIL images, with the pool cache's resize rule."""
        if isinstance(images, Image.Image):
            images = [images]
        size = self.image_size
        if len(images) == 0:
            return np.empty((0, 3, size, size), np.uint8)
        return np.stack([image_to_array(img, size) for img in images])

    def predict_proba(self, images: Sequence[Image.Image], batch_size: int = 256) -> np.ndarray:
        """float32 [N, C] class probabilities of PIL images (columns in `class_names` order)."""
        logits = predict_logits(self.model, self.preprocess(images), self.normalization, batch_size=batch_size)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict(self, images: Sequence[Image.Image]) -> list[tuple[str, float]]:
        """(class name, probability) of the most likely class for each PIL image."""
        probs = self.predict_proba(images)
        names = self.class_names
        return [(names[int(i)], float(p[i])) for i, p in zip(probs.argmax(1), probs, strict=True)]


def load_checkpoint(path_dir: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model saved in `path_dir` from its metadata alone; CheckpointError says what is wrong."""
    path_dir = Path(path_dir)
    if not path_dir.is_dir():
        raise CheckpointError(f"no checkpoint at {path_dir}: not a directory")
    metadata = _read_metadata(path_dir)
    try:
        model = model_from_config(ModelConfig(**metadata["model"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path_dir / METADATA}: bad model settings: {exc}") from exc
    if len(metadata["class_names"]) != model.config.num_classes:
        raise CheckpointError(
            f"{path_dir / METADATA}: {len(metadata['class_names'])} class names "
            f"for a model with {model.config.num_classes} outputs"
        )
    state = _read_weights(path_dir)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path_dir / WEIGHTS} does not fit {metadata['model']['name']}: {exc}") from exc
    return LoadedModel(model.to(device).eval(), metadata)


def _read_metadata(path_dir: Path) -> dict:
    meta_path = path_dir / METADATA
    if not meta_path.is_file():
        raise CheckpointError(f"incomplete checkpoint: {meta_path} is missing")
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint: {meta_path} is not valid JSON ({exc})") from exc
    required = ("model", "class_names", "image_size", "normalization")
    missing = [k for k in required if not isinstance(metadata, dict) or k not in metadata]
    if missing:
        raise CheckpointError(f"corrupt checkpoint: {meta_path} lacks {missing}")
    return metadata


def _read_weights(path_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = path_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"incomplete checkpoint: {weights} is missing")
    try:
        return load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"corrupt checkpoint: cannot read {weights} ({exc})") from exc
