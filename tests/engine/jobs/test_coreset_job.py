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
from tests.support import CLASS_NAMES, label_by_folder, make_tiny_project


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
