"""engine.names, the torch-free names the app offers, agrees with the engine's registries and resolves
`auto` as the engine does."""

from __future__ import annotations

import dataclasses

import pytest

import storage
from engine import names
from engine.backbone_files import BACKBONE_TARGET
from engine.models import MODELS


def test_the_model_names_are_the_registered_models():
    assert tuple(MODELS) == names.MODEL_NAMES


@pytest.mark.parametrize("stage", ["proxy", "target"])
def test_auto_resolves_per_device_type_and_backbone(stage):
    picks = names.AUTO_MODELS[stage]
    assert names.resolve_model_name("auto", stage, "cuda") == picks["cuda"]
    assert names.resolve_model_name("auto", stage, "cpu") == picks["cpu"]
    assert names.resolve_model_name("auto", stage, "mps") == picks["cpu"]
    with_backbone = names.resolve_model_name("auto", stage, "cuda", "ssl")
    assert with_backbone == ("linear" if stage == "proxy" else BACKBONE_TARGET)


def test_unknown_names_are_refused_with_the_known_ones():
    assert names.resolve_model_name("resnet56", "target", "cuda") == "resnet56"
    with pytest.raises(ValueError, match=r"choose auto or one of .*tv_resnet50"):
        names.check_model_name("resnet99", "target")
    with pytest.raises(ValueError, match="unknown model 'mlp'"):  # a head is a proxy, never a target
        names.check_model_name("mlp", "target")
    names.check_model_name("mlp", "proxy")


def test_batches_count_from_one_and_imported_labels_are_no_batch(tmp_path):
    """The one rule the pages (app.labeling.batch_offset) and the engine's messages number batches by."""
    from engine.initial import IMPORTED
    from tests.support import make_tiny_project

    project = make_tiny_project(tmp_path)
    assert names.batch_offset([]) == 1  # the first round made will be batch 1
    made = storage.create_round(project, strategy="random", selector="random", item_ids=[], scores=[], n_labeled=0)
    assert names.batch_offset([made]) == 1  # round 0 is batch 1
    imported = dataclasses.replace(made, strategy=IMPORTED)
    assert names.batch_offset([imported]) == 0  # round 1, the first batch labeled, is batch 1
