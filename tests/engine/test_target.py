"""The target stage: trains on every training label, evaluates on validation, saves a usable checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import storage
from engine.checkpoint import load_checkpoint
from engine.round import run_initial_round
from engine.target import TargetError, classification_metrics, run_target
from engine.train import Cancelled
from tests.support import CLASS_NAMES, label_by_folder, label_queue, make_tiny_project


@pytest.fixture
def validated_project(tmp_path):
    project = make_tiny_project(tmp_path, validation_size=6)
    run_initial_round(project)
    label_queue(project)
    label_by_folder(project, storage.validation_ids(project), annotator="user")
    return project


def test_target_writes_a_checkpoint_that_loads_and_predicts(validated_project, tmp_path, fake_clock):
    import engine.target as target_module

    fake_clock(target_module, 2.5)  # the training is timed by two reads of the clock: 2.5 s
    seen = []
    result = run_target(validated_project, on_progress=lambda f, m: seen.append(f))
    checkpoint = Path(result["checkpoint"])
    assert checkpoint == validated_project.models_dir / "target"
    assert (result["n_labels"], result["n_validation"], result["model"], result["steps"]) == (6, 6, "resnet20", 30)
    assert result["accuracy"] >= 2 / 3  # solid-colour classes: learned, chance is 1/3
    assert len(result["per_class_accuracy"]) == 3
    assert np.array(result["confusion"]).sum() == 6
    assert result["train_s"] == 2.5
    assert seen[-1] == 1.0
    saved = json.loads((checkpoint / "metrics.json").read_text())
    assert saved["confusion"] == result["confusion"]

    loaded = load_checkpoint(checkpoint)
    image_path = next((tmp_path / "images" / "red").iterdir())
    with Image.open(image_path) as image:
        rgb, gray = image.convert("RGB"), image.convert("L")
    predictions = loaded.predict([rgb, gray])
    assert predictions[0][0] == "red"  # solid-colour classes: the red image is red
    # a grayscale image is read as its grey RGB; each answer is the most likely class and its probability
    probs = loaded.predict_proba([rgb, gray.convert("RGB")])
    assert [name for name, _ in predictions] == [CLASS_NAMES[i] for i in probs.argmax(1)]
    np.testing.assert_allclose([prob for _, prob in predictions], probs.max(1), atol=1e-6)


def test_target_without_validation_labels_has_no_accuracy(tmp_path):
    project = make_tiny_project(tmp_path)
    run_initial_round(project)
    label_queue(project)
    result = run_target(project)
    assert (result["accuracy"], result["n_validation"], result["per_class_accuracy"]) == (None, 0, [None] * 3)
    assert Path(result["checkpoint"], "metrics.json").is_file()


def test_target_refuses_with_one_class(tiny_project):
    first = run_initial_round(tiny_project)
    for item_id, _ in storage.round_queue(tiny_project, first.id):
        storage.set_label(tiny_project, item_id, "blue")
    with pytest.raises(TargetError, match="at least 2 classes"):
        run_target(tiny_project)
    assert not (tiny_project.models_dir / "target").exists()


def test_cancelled_target_saves_nothing(validated_project):
    with pytest.raises(Cancelled):
        run_target(validated_project, should_stop=lambda: True)
    assert not (validated_project.models_dir / "target").exists()


def test_classification_metrics_on_known_predictions():
    truth = np.array([0, 0, 1, 1, 1])
    predicted = np.array([0, 1, 1, 1, 0])
    metrics = classification_metrics(truth, predicted, 3)
    assert metrics == {
        "accuracy": 0.6,
        "correct": 3,
        "interval": pytest.approx([0.2307, 0.8824], abs=1e-4),  # Wilson's 95 % for 3 of 5
        "per_class_accuracy": [0.5, 2 / 3, None],
        "confusion": [[1, 1, 0], [1, 2, 0], [0, 0, 0]],
        "n_validation": 5,
    }
    nothing = classification_metrics(np.array([], int), np.array([], int), 2)
    assert (nothing["accuracy"], nothing["interval"], nothing["n_validation"]) == (None, None, 0)


@pytest.fixture
def diverging(monkeypatch):
    """Every training run from the settings diverges: a huge learning rate, no clipping."""
    import dataclasses

    from engine import config

    monkeypatch.setattr(config, "BASE", dataclasses.replace(config.BASE, lr=1e30, clip_norm=0.0))


def test_a_diverging_target_fails_with_a_reason_and_saves_nothing(validated_project, diverging):
    from engine.train import TrainingFailed

    with pytest.raises(TrainingFailed, match="training diverged"):
        run_target(validated_project)
    assert not (validated_project.models_dir / "target").exists()


def test_a_diverging_target_job_fails_readably(validated_project, diverging):
    from engine.worker import run_worker

    job = storage.enqueue_job(validated_project, "target")
    run_worker(validated_project.root, once=True)
    failed = storage.get_job(validated_project, job.id)
    assert failed.state == "failed" and failed.result is None
    assert failed.error.startswith("TrainingFailed: training diverged: the loss became nan at step")
    assert "Traceback" not in failed.error


# ---------------------------------------------------------------- fine-tuning the backbone


def test_the_backbone_classifier_keeps_the_trunk_and_gets_a_fresh_classifier(tmp_path):
    import torch

    from engine.embeddings import backbone_classifier
    from engine.representation import load_ssl_backbone_file
    from tests.support import write_ssl_backbone

    backbone = load_ssl_backbone_file(write_ssl_backbone(tmp_path / "exported"))
    model = backbone_classifier(backbone, 5, seed=0)
    assert model.config.num_classes == 5 and model.config.image_size == backbone.input_size
    own, trained = model.state_dict(), backbone.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in trained.items() if not k.startswith("fc."))
    assert own["fc.weight"].shape == (5, backbone.dim)


def test_the_target_fine_tunes_the_backbone_and_its_checkpoint_takes_the_backbone_input(tmp_path):
    from tests.support import write_ssl_backbone

    weights = write_ssl_backbone(tmp_path / "exported")  # 8 px input; the pool is cached at 32 px
    project = make_tiny_project(tmp_path, backbone=str(weights), target="backbone", validation_size=6)
    run_initial_round(project)
    label_queue(project)
    label_by_folder(project, storage.validation_ids(project), annotator="user")
    result = run_target(project)
    assert result["model"] == "backbone" and result["n_labels"] == 6
    assert result["accuracy"] >= 2 / 3  # three solid colours: learned, not one class
    loaded = load_checkpoint(result["checkpoint"])
    assert loaded.image_size == 8 and loaded.model.config.name == "ssl_backbone"
    image_path = next((tmp_path / "images" / "red").iterdir())
    with Image.open(image_path) as image:
        assert loaded.predict([image.convert("RGB")])[0][0] == "red"


def test_a_backbone_target_without_a_backbone_says_what_to_choose_instead(tmp_path):
    project = make_tiny_project(tmp_path, backbone="ssl", target="backbone")
    run_initial_round(project)
    label_queue(project)
    with pytest.raises(TargetError, match=r"has not finished training.*target model trained from scratch"):
        run_target(project)


def test_the_target_trains_on_a_core_set_runs_kept_items_beside_the_full_one(validated_project):
    from engine.jobs.coreset import curate

    label_queue(validated_project, storage.current_round(validated_project).id)
    label_by_folder(validated_project, [i.id for i in storage.usable_items(validated_project)][:24])
    run = curate(validated_project, method="entropy", keep=0.5)
    kept = set(storage.kept_item_ids(validated_project, run.id))
    storage.set_label(validated_project, sorted(kept)[0], storage.SKIP)  # a kept item skipped since
    subset = run_target(validated_project, coreset_run=run.id)
    assert Path(subset["checkpoint"]) == validated_project.models_dir / "target_subset"
    assert subset["n_labels"] == len(kept) - 1
    assert subset["coreset"] == {"run": run.id, "method": "entropy", "keep": 0.5, "n_labeled": run.n_labeled}
    full = run_target(validated_project)
    assert Path(full["checkpoint"]) == validated_project.models_dir / "target"
    assert full["n_labels"] == run.n_labeled - 1 and "coreset" not in full
    assert full["steps"] == 30 and subset["steps"] == round(30 * subset["n_labels"] / full["n_labels"])  # its share
    assert (validated_project.models_dir / "target_subset" / "metrics.json").is_file()


def test_an_unknown_core_set_run_is_refused(validated_project):
    with pytest.raises(TargetError, match="no core-set run 9"):
        run_target(validated_project, coreset_run=9)
    assert not (validated_project.models_dir / "target_subset").exists()


def test_a_dynamic_target_takes_fewer_steps_and_says_how_many(validated_project):
    label_by_folder(validated_project, [i.id for i in storage.usable_items(validated_project)][:24])
    dynamic = run_target(validated_project, dynamic_keep=0.5)
    done = dynamic["dynamic"]
    assert done["keep"] == 0.5 and done["full_steps"] == 30 and done["steps"] < 30 and done["selections"] == 9
    assert done["step_share"] == pytest.approx(done["steps"] / 30, abs=1e-4)
    assert dynamic["steps"] == done["steps"] and dynamic["accuracy"] is not None


@pytest.mark.parametrize("keep", [1.5, -1, float("nan")])
def test_a_bad_dynamic_keep_is_refused_before_decoding(validated_project, keep):
    with pytest.raises(ValueError, match="keep ratio"):
        run_target(validated_project, dynamic_keep=keep)
    assert not (validated_project.models_dir / "target").exists()


def test_the_target_trains_on_given_items(validated_project):
    from engine.target import fit_target

    labeled = sorted(storage.training_labels(validated_project))
    fit = fit_target(validated_project, items=labeled[:4])
    assert fit.metrics["n_labels"] == 4
