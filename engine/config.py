"""Project settings -> model name and TrainConfig for the proxy and target stages.

Proxy and target are two configurations of one training mechanism. Each
stage has a model (`auto` picks one for the device) and a training level a
person understands - fast, balanced or thorough - that sets how many
optimizer steps a run plans and how many seconds it may take; an explicit
step count overrides the plan (tests, studies).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine import names
from engine.backbone_files import BACKBONE_TARGET as BACKBONE_TARGET  # re-exported: engine.simulate, engine.target
from engine.device import best_device
from engine.names import AUTO
from engine.names import check_model_name as check_model_name  # re-exported: engine.simulate
from engine.train import TrainConfig, plan

# stage -> (settings field of the model, of the training level, of the fixed step count)
STAGES = {"proxy": ("proxy", "proxy_training", "proxy_steps"), "target": ("target", "target_training", "target_steps")}


@dataclass(frozen=True)
class Level:
    """One training level: the step plan (engine.train.plan) and a wall-clock cap."""

    passes: float  # the plan sees each labeled image about this many times
    min_steps: int  # never fewer steps (small sets need many)
    max_steps: int
    max_seconds: float  # the run is cut to fit this many seconds (never below 50 steps)


# Chosen on CIFAR-10 and checked on other data (docs/training.md): "balanced" keeps a
# 1,000-label proxy round near 30 s on a 2-core CPU and the target within 5 minutes.
LEVELS: dict[str, dict[str, Level]] = {
    "proxy": {
        "fast": Level(15, 100, 1000, 10.0),
        "balanced": Level(30, 200, 3000, 20.0),
        "thorough": Level(60, 400, 8000, 90.0),
    },
    "target": {
        "fast": Level(20, 200, 3000, 60.0),
        "balanced": Level(60, 400, 12000, 300.0),
        "thorough": Level(120, 800, 30000, 1200.0),
    },
}
TRAINING_LEVELS = tuple(LEVELS["proxy"])
BASE = TrainConfig(lr=0.4)


@dataclass(frozen=True)
class StageConfig:
    """What one training stage runs: a registered model and how to train it."""

    model_name: str
    train: TrainConfig


def stage_config(
    settings,
    stage: str,
    *,
    model_name: str | None = None,
    steps: int | None = None,
    level: str | None = None,
    seed_offset: int = 0,
) -> StageConfig:
    """The model and TrainConfig of `stage` ("proxy" or "target") for project `settings`.

    `model_name`, `steps` and `level` override the settings (the SVP baseline
    selects with the target's model and level); `seed_offset` varies the seed
    per round so rounds do not share shuffles, while staying reproducible.
    ValueError names the bad stage, model, level or step count.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; use one of {sorted(STAGES)}")
    name_field, level_field, steps_field = STAGES[stage]
    name = resolve_model_name(
        model_name or getattr(settings, name_field), stage, settings.device, getattr(settings, "backbone", "none")
    )
    level = level or getattr(settings, level_field, "balanced")
    if level not in LEVELS[stage]:
        raise ValueError(f"unknown training level {level!r}; choose one of {', '.join(TRAINING_LEVELS)}")
    steps = getattr(settings, steps_field, 0) if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0 (0 = planned), got {steps!r}")
    plan = LEVELS[stage][level]
    config = replace(
        BASE,
        steps=steps,
        passes=plan.passes,
        min_steps=plan.min_steps,
        max_steps=plan.max_steps,
        max_seconds=None if steps else plan.max_seconds,
        seed=settings.seed + seed_offset,
        device=settings.device,
    )
    return StageConfig(model_name=name, train=config)


def resolve_model_name(name: str, stage: str, device: str = AUTO, backbone: str = "none") -> str:
    """`name`, or for `auto` the stage's model on the device `device` resolves to here
    (`engine.names.resolve_model_name`, which the app reads without torch); ValueError if unknown."""
    device_type = best_device(device).type if names.auto_needs_device(name, backbone) else "cpu"
    return names.resolve_model_name(name, stage, device_type, backbone)


def use_tta(device: str) -> bool:
    """Score the pool with flip test-time augmentation? Only where it is cheap: on a GPU.

    It adds ~0.5 points of proxy accuracy on CIFAR-10 (docs/training.md) but
    doubles the scoring time, the second-largest part of a CPU round.
    """
    return best_device(device).type == "cuda"


def scaled_to_subset(config: TrainConfig, n_full: int, n_subset: int) -> TrainConfig:
    """`config` for training on `n_subset` of a set of `n_full`: the steps the whole set would be planned
    (engine.train.plan: passes, floor, ceiling, or fixed steps) and its time cap, both times the share kept.
    Planned on the subset alone, a step floor or a time cap would train half the data as long as all of it and
    save nothing (docs/coreset.md)."""
    if not 0 < n_subset <= n_full:
        raise ValueError(f"a subset of {n_subset} of {n_full} examples")
    share = n_subset / n_full
    _, full_steps = plan(n_full, config)
    cap = None if config.max_seconds is None else config.max_seconds * share
    return replace(config, steps=max(1, round(full_steps * share)), max_seconds=cap)
