"""Project settings -> model name and TrainConfig for the proxy and target stages.

Proxy and target are two configurations of one training mechanism; they
differ only in the model name and the number of epochs the project sets.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.models import MODELS
from engine.train import TrainConfig

# stage -> (settings field of the model name, settings field of its epochs)
STAGES = {"proxy": ("proxy", "proxy_epochs"), "target": ("target", "target_epochs")}


@dataclass(frozen=True)
class StageConfig:
    """What one training stage runs: a registered model and how to train it."""

    model_name: str
    train: TrainConfig


def stage_config(settings, stage: str, *, model_name: str | None = None, epochs: int | None = None,
                 seed_offset: int = 0) -> StageConfig:
    """The model and TrainConfig of `stage` ("proxy" or "target") for project `settings`.

    `model_name` / `epochs` override the settings (the SVP baseline selects
    with the target model); `seed_offset` varies the seed per round so rounds
    do not share shuffles, while staying reproducible. ValueError names the
    bad stage, model or epoch count.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {sorted(STAGES)}")
    name_field, epochs_field = STAGES[stage]
    name = model_name or getattr(settings, name_field)
    check_model_name(name)
    epochs = getattr(settings, epochs_field) if epochs is None else epochs
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")
    config = TrainConfig(epochs=epochs, seed=settings.seed + seed_offset, device=settings.device)
    return StageConfig(model_name=name, train=config)


def check_model_name(name: str) -> None:
    """ValueError with the known names unless `name` is a registered model."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
