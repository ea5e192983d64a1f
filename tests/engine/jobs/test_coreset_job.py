"""The coreset job: one selector run on a project's training labels, the kept share, the suspects, its bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import storage
from engine.jobs.coreset import CoresetError, _selector_stage, curate
from engine.selection.balance import class_shares
from engine.train import Cancelled
from engine.worker import JOBS
from tests.support import CLASS_NAMES, label_by_folder, make_tiny_project, tiny_settings


@pytest.fixture
def curated_project(tmp_path):
    """60 solid-colour images in 3 classes, 6 for validation (labeled), the other 54 labeled by folder
    except three given a wrong class; the proxy trains 60 steps."""
    project = make_tiny_project(tmp_path, per_class=20, validation_size=6, proxy_steps=60)
    validation = storage.reserve_validation(project)
    label_by_folder(project, validation)
    training = [item.id for item in storage.usable_items(project) if item.id not in validation]
    label_by_folder(project, training)
    paths = {item.id: item.path for item in storage.usable_items(project)}
    wrong = training[:3]
    for item_id in wrong:
        right = paths[item_id].split("/")[0]
        storage.set_label(project, item_id, next(c for c in CLASS_NAMES[:3] if c != right), annotator="typo")
    return project, training, wrong


def test_a_run_keeps_its_share_per_class_and_flags_the_wrong_labels(curated_project, precision):
    project, training, wrong = curated_project
    seen = []
    run = curate(project, method="forgetting", keep=0.5, on_progress=lambda f, m: seen.append(f))
    assert (run.n_labeled, run.n_kept, run.selector_model, run.n_val) == (54, 27, "proxy_tiny", 6)
    assert run.val_acc == 1.0  # solid colours: learned despite three wrong labels
    items = storage.coreset_items(project, run.id)
    assert sorted(i.item_id for i in items) == sorted(training)
    kept = [i for i in items if i.kept]
    assert [i.rank for i in kept] == list(range(27))
    counts = [sum(i.label == c for i in items) for c in CLASS_NAMES[:3]]
    assert [sum(i.label == c for i in kept) for c in CLASS_NAMES[:3]] == class_shares(np.array(counts), 27).tolist()
    flagged = {s.item_id for s in storage.suspects(project, run.id)}
    assert set(wrong) <= flagged and len(flagged) <= 5
    paths = {item.id: item.path for item in storage.usable_items(project)}
    for suspect in storage.suspects(project, run.id):  # what the selector would call them instead
        if suspect.item_id in wrong:
            assert suspect.alternative == paths[suspect.item_id].split("/")[0]
    assert all(i.forgetting is not None for i in items)
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_picking_order_methods_store_the_distance_to_the_nearest_kept(curated_project):
    project, _, _ = curated_project
    run = curate(project, method="kcenter", keep=0.25)
    items = storage.coreset_items(project, run.id)
    assert run.n_kept == 14 and all(i.score is not None and i.score >= 0 for i in items)
    for name in CLASS_NAMES[:3]:  # k-center: every kept one at least as far from the other kept as any dropped
        kept = [i.score for i in items if i.label == name and i.kept]
        dropped = [i.score for i in items if i.label == name and not i.kept]
        assert min(kept) >= max(dropped) - 1e-6
    run = curate(project, method="random", keep=0.25)
    assert all(i.score is None for i in storage.coreset_items(project, run.id))
    run = curate(project, method="margin", keep=0.25)
    assert all(i.score is not None for i in storage.coreset_items(project, run.id))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(keep=0), "keep must lie in"),
        (dict(keep=1.5), "keep must lie in"),
        (dict(keep=True), "keep must lie in"),
        (dict(method="typiclust"), "unknown core-set method"),
        (dict(selector="oracle"), "selector must be proxy or target"),
        (dict(keep=0.02), "leaves no image of"),
    ],
)
def test_bad_settings_are_refused_before_training_and_save_nothing(curated_project, change, message):
    project, _, _ = curated_project
    with pytest.raises(CoresetError, match=message):
        curate(project, **{"method": "forgetting", "keep": 0.5, **change}, should_stop=_must_not_train)
    assert storage.coreset_runs(project) == []


def _must_not_train() -> bool:
    raise AssertionError("training started")


def test_no_labels_and_one_class_are_refused(tmp_path):
    project = make_tiny_project(tmp_path)
    with pytest.raises(CoresetError, match="no training labels yet"):
        curate(project, method="forgetting", keep=0.5)
    red = [item.id for item in storage.usable_items(project) if item.path.startswith(CLASS_NAMES[0])]
    label_by_folder(project, red)
    with pytest.raises(CoresetError, match="one class"):
        curate(project, method="forgetting", keep=0.5)
    assert storage.coreset_runs(project) == []


def test_a_stopped_run_saves_nothing(curated_project):
    project, _, _ = curated_project
    with pytest.raises(Cancelled):
        curate(project, method="forgetting", keep=0.5, should_stop=lambda: True)
    assert storage.coreset_runs(project) == []


def test_the_worker_runs_it_as_a_job(curated_project):
    project, _, _ = curated_project
    result = JOBS["coreset"](project, {"method": "entropy", "keep": 0.5, "balance": False}, None, None)
    run = storage.latest_coreset_run(project)
    assert result["run_id"] == run.id and (result["n_kept"], result["n_labeled"], result["n_val"]) == (27, 54, 6)
    assert not run.balance and run.method == "entropy"
    with pytest.raises(ValueError, match="unknown parameter"):
        JOBS["coreset"](project, {"method": "entropy", "ratio": 0.5}, None, None)


def test_a_head_on_the_backbone_selects_through_a_model_trained_on_pixels(curated_project):
    project, _, _ = curated_project
    settings = dataclasses.replace(storage.load_settings(project), proxy="linear", backbone="ssl")
    assert _selector_stage(settings, "proxy", None).model_name == "proxy_tiny"
    assert _selector_stage(settings, "proxy", 7).train.seed == 7
    assert np.isfinite(_selector_stage(settings, "target", None).train.lr)


def test_a_run_made_by_the_worker_names_its_job(curated_project):
    from engine import worker

    project, _, _ = curated_project
    job = storage.enqueue_job(project, "coreset", {"method": "entropy", "keep": 0.5})
    worker.run_job(project, storage.claim_job(project, "w"), "w")
    done = storage.get_job(project, job.id)
    assert done.state == "done", done.error
    run = storage.latest_coreset_run(project)
    assert (run.id, run.job_id) == (done.result["run_id"], job.id)


def test_a_curation_whose_worker_died_is_taken_up_again_and_saved_once(curated_project, monkeypatch):
    import storage.jobs
    from engine.worker import run_worker
    from tests.engine.test_worker import _StorageClock

    project, _, _ = curated_project
    clock = _StorageClock(1000.0)
    monkeypatch.setattr(storage.jobs, "time", clock)
    job = storage.enqueue_job(project, "coreset", {"method": "kcenter", "keep": 0.5})
    storage.claim_job(project, "killed-worker")  # claimed, then its process died without a word
    clock.now += 30
    assert run_worker(project.root, once=True, stale_after_s=60) == 0  # still within its heartbeat
    assert storage.coreset_runs(project) == []
    clock.now += 31
    assert run_worker(project.root, once=True, stale_after_s=60) == 1
    done = storage.get_job(project, job.id)
    assert (done.state, done.attempts) == ("done", 2) and done.worker != "killed-worker"
    [run] = storage.coreset_runs(project)
    assert run.job_id == job.id and run.n_kept == 27


def test_photos_of_mixed_sizes_and_modes_imported_by_subfolder_are_curated(tmp_path):
    """Not CIFAR-shaped: JPEG, grayscale PNG and RGBA PNG from 37 x 90 to 300 x 200 px, labeled by importing
    their class folders, then curated with the defaults' method."""
    import io

    from PIL import Image

    shapes = [(37, 90), (120, 80), (64, 64), (300, 200), (90, 41), (200, 150)]
    colours = {"ant": (200, 60, 40), "bee": (40, 60, 220)}
    rng = np.random.default_rng(0)
    for name, colour in colours.items():
        for k in range(12):
            width, height = shapes[k % len(shapes)]
            pixels = np.clip(np.array(colour) + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            fmt, image = [("JPEG", image), ("PNG", image.convert("L")), ("PNG", image.convert("RGBA"))][k % 3]
            buffer = io.BytesIO()
            image.save(buffer, fmt)
            (tmp_path / "photos" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "photos" / name / f"{k:02d}.{fmt.lower()}").write_bytes(buffer.getvalue())
    settings = dataclasses.replace(
        tiny_settings(tmp_path / "photos", ("ant", "bee")), image_size=0, validation_size=4, proxy_steps=40
    )
    project = storage.create_project(tmp_path / "project", settings)
    storage.ingest(project, workers=1)
    storage.reserve_validation(project)
    plan = storage.import_labels(project, storage.SUBFOLDERS)
    assert plan.imported and len(storage.training_labels(project)) == 20
    run = curate(project, method="kcenter", keep=0.5)
    assert (run.n_labeled, run.n_kept, run.n_val) == (20, 10, 4)
    items = storage.coreset_items(project, run.id)
    assert sorted(sum(i.kept for i in items if i.label == c) for c in colours) == [5, 5]
    assert all(i.score is not None for i in items)
    from engine.round import load_project_pool

    assert load_project_pool(project).image_size == 64  # picked from the photos: median shorter side 72 px
