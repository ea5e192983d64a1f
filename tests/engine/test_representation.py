"""Backbones, SSL pretraining, pool embeddings, frozen-feature proxies and cold-start rounds."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import engine.embeddings as embeddings_module
import storage
from engine.embeddings import (
    Backbone,
    BackboneError,
    check_backbone_setting,
    embed_images,
    load_backbone_file,
    pool_embeddings,
    weights_path,
)
from engine.frozen import Features, HeadConfig, accuracy, accuracy_on, knn_predict, train_head
from engine.models import model_from_config
from engine.pool_cache import channel_stats
from engine.representation import require_backbone, train_ssl_backbone
from engine.round import RoundError, run_first_round, run_round
from engine.simulate import SimulateConfig, check_config
from engine.ssl import SSLConfig, backbone_config, pretrain
from engine.train import Cancelled
from tests.support import RGB, label_by_folder, label_queue, make_tiny_project, write_ssl_backbone

REPO = Path(__file__).resolve().parents[2]
TINY_SSL = dataclasses.replace(
    SSLConfig(), depth=8, width=8, batch_size=32, max_seconds=None, crop_scale=(0.5, 1.0), device="cpu"
)


def stripes(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart only by stripe orientation; every image has its own random colours."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        coord = yy if labels[i] == 0 else xx
        on = (np.sin(2 * np.pi * coord / rng.uniform(3, 5) + rng.uniform(0, 6.3)) > 0).astype(float)[None]
        fg, bg = rng.integers(0, 256, (2, 3, 1, 1))
        out[i] = np.clip(on * fg + (1 - on) * bg + rng.normal(0, 10, (3, size, size)), 0, 255)
    return out, labels


def leave_one_out_knn(model, images, labels) -> float:
    backbone = Backbone("test", model.eval(), images.shape[-1], channel_stats(images), "test")
    rows = embed_images(backbone, images, "cpu")
    return float((knn_predict(rows, labels, rows, 2, exclude_self=True) == labels).mean())


# ---------------------------------------------------------------- SSL


class _ManualTime:
    """Stands in for a module's `time`: `perf_counter()` is `now`, which the test advances."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_ssl_time_cap_holds_when_the_machine_gets_busier_mid_run(monkeypatch):
    """Steps that become ten times slower after the first half second (another job took the cores) shorten
    the schedule at the next report instead of overrunning the cap, as a step count fixed early would.
    On a fake clock: a step takes 1/64 s, then 10/64 s (exact in binary)."""
    import engine.ssl as ssl_module

    clock = _ManualTime()
    monkeypatch.setattr(ssl_module, "time", clock)
    real_loss = ssl_module.nt_xent

    def loss_of_one_step(*args, **kwargs):  # computed once per step
        clock.now += 1 / 64 if clock.now < 1000.5 else 10 / 64
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(ssl_module, "nt_xent", loss_of_one_step)
    images, _ = stripes(64, size=8)
    config = dataclasses.replace(TINY_SSL, batch_size=8, max_seconds=3.0, report_every=5)
    result = pretrain(images, channel_stats(images), config)
    # at most one report interval of slow steps over the cap; a count fixed at the first report
    # (3 s / (1/64 s) = 192 steps: 32 fast, 160 slow) would take 25.5 s
    assert result.seconds == clock.now - 1000.0
    assert abs(result.seconds - config.max_seconds) <= config.report_every * 10 / 64
    assert 32 < result.steps < 192


def test_ssl_learns_what_random_features_miss():
    images, labels = stripes(300)
    config = dataclasses.replace(TINY_SSL, steps=200)
    random_model = model_from_config(backbone_config(config, 16), seed=0)
    before = leave_one_out_knn(random_model, images, labels)
    result = pretrain(images, channel_stats(images), config)
    after = leave_one_out_knn(result.model, images, labels)
    assert result.steps == 200 and np.isfinite(result.final_loss)
    assert after >= 0.9 and after >= before + 0.1, (before, after)


def test_ssl_cancel_saves_its_state_and_the_next_run_resumes(tmp_path):
    images, _ = stripes(64, size=8)
    config = dataclasses.replace(TINY_SSL, steps=30, batch_size=8, report_every=1)
    state = tmp_path / "state.pt"
    seen = []
    with pytest.raises(Cancelled):
        pretrain(
            images,
            channel_stats(images),
            config,
            state,
            on_progress=lambda p: seen.append(p.step),
            should_stop=lambda: len(seen) >= 10,
        )
    assert state.is_file()
    result = pretrain(images, channel_stats(images), config, state)
    assert 10 <= result.resumed_from < 30 and result.steps == 30


@pytest.mark.slow
def test_ssl_resumes_after_its_process_is_killed(tmp_path):
    images, _ = stripes(64, size=8)
    np.save(tmp_path / "images.npy", images)
    state = tmp_path / "state.pt"
    child = textwrap.dedent(f"""
        import dataclasses, time, numpy as np
        from engine.pool_cache import channel_stats
        from engine.ssl import pretrain
        from tests.engine.test_representation import TINY_SSL
        images = np.load({str(tmp_path / "images.npy")!r})
        config = dataclasses.replace(TINY_SSL, steps=300, batch_size=8, report_every=1, save_every_s=0.0)
        pretrain(images, channel_stats(images), config, {str(state)!r}, on_progress=lambda p: time.sleep(0.05))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 300  # torch's import alone takes a minute on a loaded machine
        while time.monotonic() < deadline and _saved_step(state) < 5:
            assert process.poll() is None, "the training process ended before it could be killed"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = _saved_step(state)
    assert killed_at >= 5
    config = dataclasses.replace(TINY_SSL, steps=300, batch_size=8, report_every=1, save_every_s=0.0)
    result = pretrain(images, channel_stats(images), config, state)
    assert result.resumed_from == killed_at and result.steps == 300


def _saved_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["state"]["step"]
    except Exception:  # not written yet, or being replaced
        return 0


def test_ssl_refuses_a_state_saved_by_another_configuration(tmp_path):
    images, _ = stripes(32, size=8)
    config = dataclasses.replace(TINY_SSL, steps=3, batch_size=8)
    pretrain(images, channel_stats(images), config, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="different self-supervised configuration"):
        pretrain(images, channel_stats(images), dataclasses.replace(config, temperature=0.5), tmp_path / "state.pt")


# ---------------------------------------------------------------- backbone files


def _resnet18_file(path: Path, **changes) -> Path:
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    state.update(changes)
    torch.save(state, path)
    return path


def test_a_local_resnet18_file_is_a_backbone(tmp_path):
    path = _resnet18_file(tmp_path / "weights.pth")
    backbone = load_backbone_file(path, 32)
    assert backbone.dim == 512 and backbone.input_size == 96 and backbone.name == "weights.pth"
    rows = embed_images(backbone, np.zeros((3, 3, 32, 32), np.uint8), "cpu")
    assert rows.shape == (3, 512) and np.isfinite(rows).all()


def test_an_architecture_name_is_found_in_the_torch_cache_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BackboneError, match="never downloaded"):
        check_backbone_setting("resnet18")
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    path = _resnet18_file(folder / "resnet18-f37072fd.pth")
    assert check_backbone_setting("resnet18") == "resnet18" and weights_path("resnet18") == path


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a weights file", "cannot read"),
        ({"conv.weight": torch.zeros(2)}, "does not look like a torchvision ResNet"),
        ({"layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)}, "wrong shape"),
    ],
)
def test_a_mismatched_weights_file_is_refused_with_a_readable_error(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif "conv.weight" in content:
        torch.save(content, path)
    else:
        _resnet18_file(path, **content)
    with pytest.raises(BackboneError, match=message) as error:
        load_backbone_file(path, 32)
    assert str(path) in str(error.value)


def test_a_missing_file_is_a_readable_error(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        check_backbone_setting(str(tmp_path / "nothing.pth"))


# ---------------------------------------------------------------- embeddings cache


def _tiny_backbone() -> Backbone:
    model = model_from_config(backbone_config(TINY_SSL, 8), seed=0)
    return Backbone("ssl", model.eval(), 8, ((0.5,) * 3, (0.25,) * 3), "f00d")


def test_pool_embeddings_embed_only_new_items(tmp_path, monkeypatch):
    backbone = _tiny_backbone()
    images = np.random.default_rng(0).integers(0, 256, (15, 3, 8, 8), dtype=np.uint8)
    ids = np.arange(1, 16, dtype=np.int64) * 10
    first = pool_embeddings(tmp_path, backbone, ids[:10], images[:10], "cpu")
    embedded = []
    real = embeddings_module.embed_images
    monkeypatch.setattr(embeddings_module, "embed_images", lambda b, x, *a: embedded.append(len(x)) or real(b, x, *a))
    both = pool_embeddings(tmp_path, backbone, ids, images, "cpu")
    again = pool_embeddings(tmp_path, backbone, ids[5:], images[5:], "cpu")
    assert embedded == [5]  # the 5 new items, once; the third call read the cache
    assert both.dtype == np.float16 and both.shape == (15, backbone.dim)
    np.testing.assert_array_equal(both[:10], first)
    np.testing.assert_array_equal(again, both[5:])


def test_a_damaged_embeddings_cache_is_embedded_again(tmp_path):
    backbone = _tiny_backbone()
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    ids = np.arange(6, dtype=np.int64)
    first = pool_embeddings(tmp_path, backbone, ids, images, "cpu")
    _rows_path, ids_path = embeddings_module.embedding_paths(tmp_path, backbone)
    np.save(ids_path, ids[:3])  # as if the writer died between its two files
    np.testing.assert_array_equal(pool_embeddings(tmp_path, backbone, ids, images, "cpu"), first)


# ---------------------------------------------------------------- frozen heads


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_frozen_head_learns_separable_embeddings(kind):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 32)) * 3
    labels = np.arange(300) % 3
    rows = (centres[labels] + rng.standard_normal((300, 32))).astype(np.float32)
    features = Features(rows[:200])
    head = train_head(features, np.arange(30), labels[:30], 3, HeadConfig(kind=kind))
    assert accuracy(head, features, np.arange(30, 200), labels[30:200]) > 0.95
    assert accuracy_on(head, features, rows[200:], labels[200:]) > 0.95


def test_a_frozen_head_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match="labels must lie"):
        train_head(Features(np.ones((4, 3), np.float32)), np.arange(2), np.array([0, 5]), 3)


# ---------------------------------------------------------------- rounds with a backbone


@pytest.mark.parametrize("initial_size, expected", [(3, "typiclust"), (4, "random")])
def test_auto_picks_typical_images_only_for_a_first_batch_small_against_the_pool(tmp_path, initial_size, expected):
    backbone = write_ssl_backbone(tmp_path / "exported")
    project = make_tiny_project(tmp_path, backbone=str(backbone), initial_size=initial_size)
    first = run_first_round(project)  # 30 images: 3 is 10 % of them, 4 is more
    assert first.strategy == expected
    assert expected == "typiclust" or "gains nothing from typical picks" in first.selector


def test_a_project_with_a_backbone_starts_with_typiclust_then_a_linear_proxy(tmp_path):
    project = make_tiny_project(
        tmp_path, backbone=str(write_ssl_backbone(tmp_path / "exported")), proxy="auto", initial_strategy="typiclust"
    )
    first = run_first_round(project)
    assert first.strategy == "typiclust" and first.selector == "typiclust on ssl embeddings"
    assert len(storage.round_queue(project, first.id)) == 6
    label_queue(project)
    made = run_round(project)
    assert made.selector == "linear on ssl" and made.strategy == "least_confidence"
    assert len(storage.round_queue(project, made.id)) == 4
    assert list((project.cache_dir / "embeddings").glob("*_ids.npy"))


def test_kcenter_with_a_pixel_proxy_measures_distances_on_the_backbone(tmp_path):
    project = make_tiny_project(
        tmp_path, backbone=str(write_ssl_backbone(tmp_path / "exported")), strategy="kcenter", initial_strategy="random"
    )
    first = run_first_round(project)
    assert first.strategy == "random"
    label_queue(project)
    made = run_round(project)
    assert made.selector == "proxy_tiny" and made.strategy == "kcenter"
    assert list((project.cache_dir / "embeddings").glob("*_ids.npy"))


def _leave_one_out_knn_in_numpy(rows: np.ndarray, truth: np.ndarray, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted cosine k-NN (Wu et al. 2018), each row voted on by its k nearest others, in plain numpy."""
    x = rows.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(x) - 1)
    right = 0
    for i, row in enumerate(similarity):
        nearest = np.argsort(-row, kind="stable")[:k]
        votes = np.zeros(truth.max() + 1)
        np.add.at(votes, truth[nearest], np.exp(row[nearest] / temperature))
        right += int(votes.argmax() == truth[i])
    return right / len(x)


def test_the_ssl_job_trains_saves_and_reads_out_knn_on_the_labels(tmp_path):
    project = make_tiny_project(
        tmp_path, backbone="ssl", proxy="linear", initial_strategy="typiclust", validation_size=6
    )
    with pytest.raises(RoundError, match="not finished training"):
        require_backbone(project, storage.load_settings(project), 8)
    first = run_first_round(project)  # the backbone is not ready: a random batch, saying why
    assert first.strategy == "random" and first.selector.startswith("random: the self-supervised backbone")
    queued = label_queue(project)
    label_by_folder(project, storage.validation_ids(project), annotator="user")  # the readout counts these too
    # one wrong label: its neighbours disagree, so leave-one-out misses it (a readout where each label
    # voted for itself would not)
    truth = storage.current_labels(project)[queued[0]]
    storage.set_label(project, queued[0], next(name for name in RGB if name != truth))
    meta = train_ssl_backbone(project, steps=5)
    assert meta["steps"] == 5
    # the readout, recomputed from the cached pool embeddings and every label
    ids = np.load(project.cache_dir / "embeddings" / f"{meta['fingerprint']}_8_ids.npy")
    rows = np.load(project.cache_dir / "embeddings" / f"{meta['fingerprint']}_8.npy")
    labels = {**storage.training_labels(project), **storage.validation_labels(project)}
    assert len(labels) == 12
    row_of = {item_id: row for row, item_id in enumerate(ids.tolist())}
    labeled = sorted(labels)
    expected = _leave_one_out_knn_in_numpy(rows[[row_of[i] for i in labeled]], np.array([labels[i] for i in labeled]))
    assert meta["knn_accuracy"] == pytest.approx(expected)
    assert not (project.models_dir / embeddings_module.SSL_STATE).exists()
    # the pool was embedded before saving, under the fingerprint the saved file has: rounds reuse those rows
    assert meta["fingerprint"] == embeddings_module.file_fingerprint(project.models_dir / embeddings_module.SSL_WEIGHTS)
    assert [p.name for p in (project.cache_dir / "embeddings").glob("*_ids.npy")] == [
        f"{meta['fingerprint']}_8_ids.npy"
    ]
    made = run_round(project)
    assert made.selector == "linear on ssl"
    assert made.proxy_val_n == 6 and made.proxy_val_acc is not None  # the head's accuracy, with its n


def test_settings_and_simulate_check_the_new_options(tmp_path):
    with pytest.raises(storage.SettingsError, match="initial strategy"):
        storage.validate_settings(
            storage.Settings(image_root=str(tmp_path), classes=("a", "b"), initial_strategy="kcenter")
        )
    with pytest.raises(storage.SettingsError, match="ssl_minutes"):
        storage.validate_settings(storage.Settings(image_root=str(tmp_path), classes=("a", "b"), ssl_minutes=0))
    for folder in ("train", "test"):
        (tmp_path / folder).mkdir()
    with pytest.raises(ValueError, match="linear proxy is a head on a backbone"):
        check_config(SimulateConfig(data=tmp_path, out=tmp_path / "o.json", proxy="linear"))
    with pytest.raises(ValueError, match="target 'backbone' fine-tunes the project's backbone"):
        check_config(SimulateConfig(data=tmp_path, out=tmp_path / "o.json", target="backbone"))
    with pytest.raises(ValueError, match="selects with a target trained on pixels"):
        check_config(
            SimulateConfig(data=tmp_path, out=tmp_path / "o.json", backbone="ssl", target="backbone", selector="target")
        )
    with pytest.raises(ValueError, match="not found"):
        check_config(SimulateConfig(data=tmp_path, out=tmp_path / "o.json", backbone=str(tmp_path / "no.pth")))


def test_the_worker_runs_a_backbone_job_and_refuses_unknown_parameters(tmp_path):
    from engine.worker import run_worker

    project = make_tiny_project(tmp_path, backbone="ssl")
    good = storage.enqueue_job(project, "backbone", {"steps": 3})
    bad = storage.enqueue_job(project, "backbone", {"minutes": 3})
    assert run_worker(project.root, once=True) == 2
    done = storage.get_job(project, good.id)
    assert done.state == "done" and done.result["steps"] == 3
    assert storage.get_job(project, bad.id).error.startswith("ValueError: unknown parameter(s) minutes")
    assert (project.models_dir / embeddings_module.SSL_META).is_file()
