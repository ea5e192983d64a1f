"""Settings -> training configuration: levels, fixed steps, `auto` models, errors."""

import dataclasses

import pytest

import storage
from engine import config
from engine.config import LEVELS, TRAINING_LEVELS, resolve_model_name, stage_config
from engine.train import TrainConfig, plan


def settings(**overrides) -> storage.Settings:
    return storage.Settings(image_root="/", classes=("a", "b"), device="cpu", **overrides)


def test_levels_match_the_settings_choices():
    assert TRAINING_LEVELS == storage.TRAINING_LEVELS
    assert set(LEVELS["proxy"]) == set(LEVELS["target"]) == set(TRAINING_LEVELS)


@pytest.mark.parametrize("stage", ["proxy", "target"])
def test_levels_train_longer_from_fast_to_thorough(stage):
    runs = [stage_config(settings(**{f"{stage}_training": level}), stage).train for level in TRAINING_LEVELS]
    for n in (20, 1000, 20000):
        steps = [plan(n, run)[1] for run in runs]
        assert steps == sorted(steps) and steps[0] < steps[-1], (n, steps)
    assert [run.max_seconds for run in runs] == sorted(run.max_seconds for run in runs)


def test_fixed_steps_override_the_plan_and_lift_the_time_cap():
    run = stage_config(settings(proxy_steps=70), "proxy").train
    assert (plan(1000, run)[1], run.max_seconds) == (70, None)
    assert stage_config(settings(), "proxy", steps=5).train.steps == 5
    assert (
        stage_config(settings(proxy_training="fast"), "proxy", level="thorough").train.max_seconds
        == LEVELS["proxy"]["thorough"].max_seconds
    )


def test_seed_offset_and_device_reach_the_train_config():
    run = stage_config(settings(seed=4), "target", seed_offset=3).train
    assert (run.seed, run.device) == (7, "cpu")


def test_auto_models_fit_the_device(monkeypatch):
    assert stage_config(settings(), "proxy").model_name == "proxy_tiny"
    assert stage_config(settings(), "target").model_name == "resnet20"
    assert resolve_model_name("resnet56", "proxy", "cpu") == "resnet56"
    monkeypatch.setattr(config, "best_device", lambda device: __import__("torch").device("cuda"))
    assert (resolve_model_name("auto", "proxy"), resolve_model_name("auto", "target")) == ("resnet20", "resnet18")


def test_with_a_backbone_auto_is_the_linear_proxy_and_the_fine_tuned_target():
    assert stage_config(settings(backbone="ssl"), "proxy").model_name == "linear"
    assert stage_config(settings(backbone="ssl"), "target").model_name == "backbone"
    assert stage_config(settings(backbone="ssl", target="resnet20"), "target").model_name == "resnet20"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stage="middle"), "unknown stage"),
        (dict(stage="proxy", model_name="vgg"), "unknown model 'vgg'; choose auto or one of"),
        (dict(stage="proxy", level="slow"), "unknown training level 'slow'"),
        (dict(stage="proxy", steps=-2), "steps must be a whole number >= 0"),
    ],
)
def test_bad_stage_settings_are_named(kwargs, message):
    stage = kwargs.pop("stage")
    with pytest.raises(ValueError, match=message):
        stage_config(settings(), stage, **kwargs)


def test_storage_rejects_unknown_levels_and_negative_steps(tmp_path):
    good = dataclasses.replace(settings(), image_root=str(tmp_path))
    storage.validate_settings(good)
    with pytest.raises(storage.SettingsError, match="proxy_training 'slow' must be one of fast, balanced, thorough"):
        storage.validate_settings(dataclasses.replace(good, proxy_training="slow"))
    with pytest.raises(storage.SettingsError, match="target_steps is -1"):
        storage.validate_settings(dataclasses.replace(good, target_steps=-1))


@pytest.mark.parametrize(
    ("config", "n_full", "n_subset", "steps", "cap"),
    [
        (TrainConfig(passes=30, min_steps=200, max_steps=3000, max_seconds=20.0), 1000, 500, 120, 10.0),
        # a small set: all of it trains 210 steps, half of it 105 (planned alone: 200, the step floor)
        (TrainConfig(passes=30, min_steps=200, max_steps=3000, max_seconds=None), 100, 50, 105, None),
        (TrainConfig(steps=30), 24, 12, 15, None),
        (TrainConfig(steps=30), 24, 24, 30, None),
    ],
)
def test_a_subset_trains_its_share_of_the_full_plan(config, n_full, n_subset, steps, cap):
    from engine.config import scaled_to_subset
    from engine.train import plan

    scaled = scaled_to_subset(config, n_full, n_subset)
    assert (scaled.steps, scaled.max_seconds) == (steps, cap)
    assert plan(n_subset, scaled)[1] == steps


@pytest.mark.parametrize(("n_full", "n_subset"), [(10, 0), (10, 11)])
def test_a_subset_must_be_part_of_the_set(n_full, n_subset):
    from engine.config import scaled_to_subset

    with pytest.raises(ValueError, match="subset"):
        scaled_to_subset(TrainConfig(), n_full, n_subset)
