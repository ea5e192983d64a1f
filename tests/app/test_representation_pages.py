"""The Project page's representation section and the Progress page's map of the pool."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

import storage
from app import pool_map
from engine.backbone_files import SSL_META


def _use_ssl(project: storage.Project) -> None:
    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), backbone="ssl"))


def test_project_page_offers_to_learn_the_representation_and_queues_one_job(project, open_app):
    _use_ssl(project)
    at = open_app("app/page_project.py")
    assert not at.exception
    at.button(key="start-backbone").click().run()
    job = storage.latest_job(project, "backbone")
    assert job is not None and job.state == "queued"
    assert at.button(key="cancel-backbone")            # now it shows the job's progress and a stop button
    at.button(key="cancel-backbone").click().run()
    assert storage.latest_job(project, "backbone").state == "cancelled"


def test_project_page_shows_the_finished_representation_readout(project, open_app):
    _use_ssl(project)
    project.models_dir.mkdir(parents=True, exist_ok=True)
    (project.models_dir / SSL_META).write_text(json.dumps({"steps": 1234, "seconds": 600.0, "knn_accuracy": 0.625}))
    at = open_app("app/page_project.py")
    values = {m.label: m.value for m in at.metric}
    assert values["k-NN accuracy on your labels"] == "62%" and values["Steps"] == "1234"


def test_settings_refuse_a_backbone_file_that_does_not_exist(project, open_app, tmp_path):
    at = open_app("app/page_project.py")
    at.text_input(key="s-backbone").input(str(tmp_path / "missing.pth"))
    at.button[[b.label for b in at.button].index("Save settings")].click().run()
    assert any("not found" in e.value for e in at.error)
    assert storage.load_settings(project).backbone == "none"


def _write_embeddings(project: storage.Project) -> list[int]:
    ids = np.array(sorted(item.id for item in storage.usable_items(project)), dtype=np.int64)
    folder = project.cache_dir / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    rows = np.random.default_rng(0).standard_normal((len(ids), 16)).astype(np.float16)
    np.save(folder / "abc_32.npy", rows)
    np.save(folder / "abc_32_ids.npy", ids)
    return ids.tolist()


def test_the_map_colours_labels_and_marks_the_open_batch(project):
    ids = _write_embeddings(project)
    made = storage.current_round(project)          # the fixture's project has its first batch
    queued = [item_id for item_id, _ in storage.round_queue(project, made.id)]
    storage.set_label(project, queued[0], storage.class_names(project)[1], annotator="t")
    frame = pool_map.map_frame(project)
    assert sorted(frame["item"]) == ids
    row = frame.set_index("item")
    assert row.loc[queued[0], "label"] == storage.class_names(project)[1] and not row.loc[queued[0], "batch"]
    assert row.loc[queued[1:], "batch"].all() and (row.loc[queued[1:], "label"] == pool_map.UNLABELED).all()


def test_progress_page_draws_the_map_or_says_when_it_appears(project, open_app):
    at = open_app("app/page_progress.py")
    assert any("Appears once a backbone" in c.value for c in at.caption)
    _write_embeddings(project)
    at = open_app("app/page_progress.py")
    assert not at.exception
    assert any("principal components" in c.value for c in at.caption)


def test_pca_puts_the_widest_direction_first():
    rng = np.random.default_rng(0)
    rows = np.c_[rng.normal(0, 10, 500), rng.normal(0, 1, 500), rng.normal(0, 0.1, 500)]
    xy = pool_map.pca_2d(rows)
    assert xy[:, 0].std() > 5 * xy[:, 1].std()
