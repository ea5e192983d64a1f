"""The engine on a CUDA GPU: device `auto` picks it for rounds, SSL, embeddings, frozen heads and checkpoints.

Every other round, worker and target test forces device "cpu". These run only where a GPU is lent
(marker `gpu`; skipped without CUDA) and take seconds on one. Where a GPU answer is compared with a
CPU answer, TF32 is off (float32 matmuls and convolutions on both); bf16 autocast stays as the engine
sets it, and each comparison states its tolerance for it.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

import storage
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import resolve_model_name, use_tta
from engine.device import best_device
from engine.embeddings import embed_images
from engine.frozen import head_probs
from engine.models import build_model
from engine.names import AUTO_MODELS
from engine.pool_cache import channel_stats, image_to_array
from engine.precision import BF16_ENV
from engine.representation import load_ssl_backbone_file, train_ssl_backbone
from engine.round import run_first_round, run_initial_round, select_next_batch
from engine.score import predict_logits, score_pool
from engine.ssl import SSLConfig, pretrain
from engine.train import TrainConfig, train
from tests.support import PALETTE, RGB, label_by_folder, label_queue, make_tiny_project, write_ssl_backbone

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

AUTO = "auto"  # the device setting under test
GPU = "cuda"  # what it must resolve to here
NORM = ((0.5,) * 3, (0.25,) * 3)


@pytest.fixture(autouse=True)
def _float32_without_tf32(monkeypatch):
    """float32 on the GPU means float32, as on the CPU: TF32 (10-bit mantissas) off for the test."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _colour_images(n_per_class: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [3n, 3, size, size] of the three RGB palette colours plus noise, and their int64 classes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    colours = np.array([PALETTE[name] for name in RGB], np.float64)
    images = colours[labels][:, :, None, None] + rng.normal(0, 20, (len(labels), 3, size, size))
    order = rng.permutation(len(labels))
    return np.clip(images, 0, 255).astype(np.uint8)[order], labels[order].astype(np.int64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def _on(model: torch.nn.Module) -> str:
    return next(model.parameters()).device.type


def test_device_auto_trains_and_scores_a_round_on_the_gpu(tmp_path):
    assert best_device(AUTO).type == GPU and use_tta(AUTO)  # a GPU round scores with the flip TTA
    assert resolve_model_name("auto", "proxy", AUTO) == AUTO_MODELS["proxy"][GPU]
    project = make_tiny_project(tmp_path, device=AUTO, proxy="auto", validation_size=4)
    run_initial_round(project)
    label_queue(project)
    label_by_folder(project, storage.validation_ids(project), annotator="user")
    outcome = select_next_batch(project)
    made = outcome.round
    assert (made.index, made.strategy, made.selector) == (1, "least_confidence", AUTO_MODELS["proxy"][GPU])
    assert _on(outcome.model) == GPU  # trained there, and it stays there
    # learned: solid colours, so every validation image of a class with training labels is right
    trained = set(storage.training_labels(project).values())
    validation = storage.validation_labels(project)
    assert made.proxy_val_acc == pytest.approx(sum(c in trained for c in validation.values()) / len(validation))
    # the stored guesses are the GPU proxy's answers: the same pass again on the GPU gives them exactly ...
    ids = [item_id for item_id, _ in storage.round_queue(project, made.id)]
    positions = outcome.pool.positions(ids)
    tta = use_tta(AUTO)
    again = score_pool(outcome.model, outcome.pool.images, outcome.pool.normalization, tta=tta).probs[positions]
    guesses = storage.round_guesses(project, made.id)
    classes = storage.load_settings(project).classes
    assert [guesses[i][0] for i in ids] == [classes[c] for c in again.argmax(1)]
    np.testing.assert_allclose([guesses[i][1] for i in ids], again.max(1), atol=1e-5)
    # ... and the same model in float32 on the CPU agrees within bf16's precision (autocast on the GPU)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BF16_ENV, "0")
        on_cpu = score_pool(
            copy.deepcopy(outcome.model), outcome.pool.images, outcome.pool.normalization, device="cpu", tta=tta
        ).probs[positions]
    np.testing.assert_allclose(on_cpu, again, atol=3e-2)


def test_ssl_pretraining_runs_on_the_gpu():
    images, _ = _colour_images(16, 16)
    config = dataclasses.replace(
        SSLConfig(), depth=8, width=8, batch_size=32, steps=10, max_seconds=None, report_every=5, device=AUTO
    )
    reports = []
    result = pretrain(images, channel_stats(images), config, on_progress=reports.append)
    assert (result.steps, [p.step for p in reports]) == (10, [5, 10])
    assert _on(result.model) == GPU and math.isfinite(result.final_loss)


def test_the_ssl_job_on_the_gpu_feeds_a_linear_head_its_embeddings(tmp_path):
    """The SSL job learns the backbone and embeds the pool on the GPU; the next round's linear head (trained on
    the CPU, by design) reads those cached rows, which match the same backbone's embeddings on the CPU."""
    project = make_tiny_project(tmp_path, device=AUTO, backbone="ssl", proxy="auto", initial_strategy="random")
    run_first_round(project)
    label_queue(project)
    meta = train_ssl_backbone(project, steps=5)
    assert meta["steps"] == 5 and math.isfinite(meta["final_loss"]) and meta["knn_accuracy"] is not None
    outcome = select_next_batch(project)
    assert outcome.round.selector == "linear on ssl" and outcome.backbone is not None and outcome.features is not None
    assert outcome.backbone.fingerprint == meta["fingerprint"]  # the rows the job cached, not new ones
    # cached float16 rows from the GPU (under bf16 autocast there) against float32 on the CPU
    cached = np.asarray(outcome.features.raw, np.float32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BF16_ENV, "0")
        on_cpu = embed_images(outcome.backbone, outcome.pool.images, "cpu")
    np.testing.assert_allclose(cached, on_cpu, rtol=3e-2, atol=3e-2 * float(np.abs(on_cpu).max()))
    # the stored guesses are the head's answers on those rows
    ids = [item_id for item_id, _ in storage.round_queue(project, outcome.round.id)]
    probs = head_probs(outcome.model, outcome.features, outcome.pool.positions(ids))
    guesses = storage.round_guesses(project, outcome.round.id)
    assert [guesses[i][0] for i in ids] == [RGB[c] for c in probs.argmax(1)]
    np.testing.assert_allclose([guesses[i][1] for i in ids], probs.max(1), atol=1e-6)


def test_embeddings_on_the_gpu_match_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv(BF16_ENV, "0")  # float32 on both devices: the same numbers to float32's precision
    backbone = load_ssl_backbone_file(write_ssl_backbone(tmp_path / "exported"))
    images, _ = _colour_images(8, 12)  # resized to the backbone's 8 px input on the way
    on_gpu = embed_images(backbone, images, AUTO)
    assert _on(backbone.model) == GPU
    on_cpu = embed_images(backbone, images, "cpu")
    assert on_gpu.shape == on_cpu.shape == (24, backbone.dim)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-4 * float(np.abs(on_cpu).max()))


def test_a_checkpoint_saved_from_a_gpu_model_predicts_the_same_on_the_cpu(tmp_path, monkeypatch):
    images, labels = _colour_images(16, 16)
    model = build_model("resnet20", 3, 16, seed=0)
    train(model, images, labels, TrainConfig(steps=40, batch_size=32, device=AUTO), NORM)  # bf16 autocast
    assert _on(model) == GPU
    monkeypatch.setenv(BF16_ENV, "0")  # compare in float32 on both devices
    pil = [Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))) for image in images]
    arrays = np.stack([image_to_array(image, 16) for image in pil])
    assert np.array_equal(arrays, images)  # 16 px images go through the checkpoint's resize rule unchanged
    on_gpu = _softmax(predict_logits(model, images, NORM))
    assert (on_gpu.argmax(1) == labels).mean() >= 0.9  # it learned the colours
    save_checkpoint(
        model, tmp_path / "ckpt", class_names=list(RGB), image_size=16, normalization=NORM, metrics={}, n_labels=48
    )
    loaded = load_checkpoint(tmp_path / "ckpt")  # on the CPU by default
    assert _on(loaded.model) == "cpu"
    np.testing.assert_allclose(loaded.predict_proba(pil), on_gpu, atol=1e-4)
    assert [name for name, _ in loaded.predict(pil)] == [RGB[c] for c in on_gpu.argmax(1)]
    back_on_gpu = load_checkpoint(tmp_path / "ckpt", device=GPU)
    assert _on(back_on_gpu.model) == GPU
    np.testing.assert_allclose(back_on_gpu.predict_proba(pil), on_gpu, atol=1e-5)
