"""The Target page names the model it will train without asking torch for the device."""

from __future__ import annotations

import pytest

import storage
from app.page_target import model_name


@pytest.mark.parametrize(
    ("target", "device", "backbone", "shown"),
    [
        ("auto", "auto", "none", "resnet18 on a CUDA GPU, else resnet20 (auto)"),
        ("auto", "cpu", "none", "resnet20 (auto)"),
        ("auto", "cuda", "none", "resnet18 (auto)"),
        ("auto", "auto", "ssl", "backbone (auto)"),
        ("resnet56", "auto", "none", "resnet56"),
        ("no_such_model", "cpu", "none", "no_such_model"),
    ],
)
def test_the_target_model_is_named_for_the_settings_device(target, device, backbone, shown):
    settings = storage.Settings(image_root="/", classes=("a", "b"), target=target, device=device, backbone=backbone)
    assert model_name(settings) == shown
