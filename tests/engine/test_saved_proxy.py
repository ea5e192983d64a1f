"""The latest round's proxy is kept and the target job measures it again on the target's own validation images."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import storage
from engine import saved_proxy
from engine.checkpoint import load_checkpoint
from engine.intervals import wilson
from engine.round import load_project_pool, run_initial_round, run_round
from engine.target import run_target
from engine.train import evaluate
from tests.support import label_by_folder, label_queue, make_tiny_project, write_ssl_backbone


def _round_on_part_of_the_validation_set(tmp_path, labeled_before: int, **settings):
    """A round trained while `labeled_before` of the 6 validation images were labeled; then all 6 are."""
    project = make_tiny_project(tmp_path, validation_size=6, **settings)
    run_initial_round(project)
    label_queue(project)
    validation = storage.validation_ids(project)
    label_by_folder(project, validation[:labeled_before], annotator="user")
    made = run_round(project)
    label_by_folder(project, validation[labeled_before:], annotator="user")
    return project, made


def test_a_pixel_proxy_is_measured_again_on_exactly_the_targets_images(tmp_path):
    project, made = _round_on_part_of_the_validation_set(tmp_path, 2)
    assert made.proxy_val_n == 2  # the round measured it on the 2 labeled then
    record = json.loads((saved_proxy.proxy_dir(project) / saved_proxy.ROUND_FILE).read_text())
    assert (record["kind"], record["round_id"], record["round"]) == ("pixels", made.id, 1)

    result = run_target(project)
    proxy = result["proxy"]
    assert result["n_validation"] == proxy["n_validation"] == 6  # both on today's six
    # the saved proxy by hand on the six validation images, with the round's test-time augmentation
    validation = storage.validation_labels(project)
    pool = load_project_pool(project)
    images, truth = pool.arrays(validation)
    loaded = load_checkpoint(saved_proxy.proxy_dir(project))
    expected = evaluate(loaded.model, images, truth, pool.normalization, tta=True)
    assert proxy["accuracy"] == pytest.approx(expected)
    assert proxy["correct"] == round(expected * 6)
    assert proxy["interval"] == pytest.approx(list(wilson(proxy["correct"], 6)))
    assert (proxy["round"], proxy["selector"]) == (1, "proxy_tiny")
    assert result["interval"] == pytest.approx(list(wilson(result["correct"], 6)))
    # the images only one of the two got right account for the whole difference
    assert result["correct"] - proxy["correct"] == proxy["target_only"] - proxy["proxy_only"]
    saved = json.loads((project.models_dir / "target" / "metrics.json").read_text())
    assert saved["proxy"] == proxy


def test_on_an_unchanged_validation_set_the_proxy_scores_what_its_round_recorded(tmp_path):
    project, made = _round_on_part_of_the_validation_set(tmp_path, 6)
    proxy = run_target(project)["proxy"]
    assert (proxy["accuracy"], proxy["n_validation"]) == (made.proxy_val_acc, made.proxy_val_n)


def test_a_head_on_the_backbone_is_measured_again_while_the_backbone_is_the_same(tmp_path):
    backbone = write_ssl_backbone(tmp_path / "exported")
    project, made = _round_on_part_of_the_validation_set(tmp_path, 6, backbone=str(backbone), proxy="linear")
    assert made.selector == "linear on ssl"
    record = json.loads((saved_proxy.proxy_dir(project) / saved_proxy.ROUND_FILE).read_text())
    assert (record["kind"], record["head"]) == ("head", "linear")
    assert not saved_proxy.weights_path(project).exists()  # no pixel proxy beside it
    proxy = run_target(project)["proxy"]
    assert (proxy["accuracy"], proxy["n_validation"]) == (made.proxy_val_acc, 6)

    record["fingerprint"] = "not-this-backbone"  # the backbone retrained since: other weights, other fingerprint
    (saved_proxy.proxy_dir(project) / saved_proxy.ROUND_FILE).write_text(json.dumps(record))
    proxy = run_target(project)["proxy"]
    assert "accuracy" not in proxy and proxy["unavailable"].startswith(
        "the backbone changed since the proxy that chose batch 2, a head on it, was saved:"
    )


def test_without_a_saved_proxy_the_target_says_why_there_is_no_comparison(tmp_path):
    project, _ = _round_on_part_of_the_validation_set(tmp_path, 3)
    (saved_proxy.proxy_dir(project) / saved_proxy.ROUND_FILE).unlink()  # a round from before this version
    proxy = run_target(project)["proxy"]
    assert "accuracy" not in proxy and "no proxy is kept yet" in proxy["unavailable"]


def test_a_proxy_whose_classes_were_renamed_is_not_measured_again(tmp_path):
    project, _ = _round_on_part_of_the_validation_set(tmp_path, 3)
    settings = storage.load_settings(project)
    storage.save_settings(project, dataclasses.replace(settings, classes=("crimson", *settings.classes[1:])))
    proxy = run_target(project)["proxy"]
    assert proxy["unavailable"] == "the classes changed since the proxy that chose batch 2 was saved"


def test_weights_of_another_round_than_the_record_names_are_not_used(tmp_path):
    project, made = _round_on_part_of_the_validation_set(tmp_path, 3)
    folder = saved_proxy.proxy_dir(project)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["metrics"]["round_id"] = made.id + 1  # the weights of a round interrupted before its record
    (folder / "metadata.json").write_text(json.dumps(metadata))
    proxy = run_target(project)["proxy"]
    assert proxy["unavailable"] == (
        "the saved proxy's weights are not those of the proxy that chose batch 2 (saving a proxy was interrupted)"
    )


def test_each_round_overwrites_the_one_proxy_kept(tmp_path):
    project = make_tiny_project(tmp_path, validation_size=3)
    run_initial_round(project)
    label_queue(project)
    label_by_folder(project, storage.validation_ids(project))
    first = run_round(project)
    label_queue(project)
    second = run_round(project)
    record = json.loads((saved_proxy.proxy_dir(project) / saved_proxy.ROUND_FILE).read_text())
    assert (record["round_id"], record["accuracy"], record["n"]) == (second.id, second.proxy_val_acc, 3)
    assert first.id != second.id
    assert sorted(p.name for p in saved_proxy.proxy_dir(project).iterdir()) == [
        "metadata.json",
        "model.safetensors",
        "round.json",
    ]
    assert np.isfinite(second.proxy_val_acc)


def test_a_saved_proxy_that_cannot_be_read_is_named_by_the_batch_it_chose(tmp_path):
    project, _ = _round_on_part_of_the_validation_set(tmp_path, 3)
    (saved_proxy.weights_path(project)).write_bytes(b"not safetensors")
    proxy = run_target(project)["proxy"]
    assert proxy["unavailable"].startswith("the saved proxy, the proxy that chose batch 2, cannot be read (")
