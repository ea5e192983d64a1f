"""The Project page's representation section and the Progress page's map of the pool."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest

import storage
from app import jobs, pool_map
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
    assert at.button(key="cancel-backbone")  # now it shows the job's progress and a stop button
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
    made = storage.current_round(project)  # the fixture's project has its first batch
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


# ---------------------------------------------------------------- the first batch on the backbone


def _half_made(tmp_path, dataset, **overrides) -> storage.Project:
    """Created and not yet scanned, as a tab closed during Create leaves it (the Label page finishes it)."""
    from tests.support import APP_SETTINGS, tiny_settings

    return storage.create_project(
        tmp_path / "p",
        tiny_settings(dataset[0], **{**APP_SETTINGS, "initial_strategy": "typiclust", "proxy": "auto", **overrides}),
    )


def _finish_from_label_page(project: storage.Project, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import state
    from tests.app.conftest import MAIN

    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.button(key="finish-setup").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_a_backbone_first_batch_is_chosen_by_the_worker_while_the_validation_set_can_be_labeled(
    tmp_path, dataset, monkeypatch
):
    from engine.worker import run_worker
    from tests.support import write_ssl_backbone

    project = _half_made(tmp_path, dataset, backbone=str(write_ssl_backbone(tmp_path / "exported")))
    at = _finish_from_label_page(project, monkeypatch)
    assert storage.current_round(project) is None  # the server made no random batch
    job = storage.latest_job(project, "round")
    assert job.state == "queued" and job.params == {"after_round": -1}
    at.run()
    assert any("Choosing the first batch" in i.value for i in at.info)
    assert any("Meanwhile: validation images" in c.value for c in at.caption)  # reserved: labelable now
    run_worker(project.root, once=True)
    first = storage.current_round(project)
    assert first.index == 0 and first.strategy == "typiclust" and first.selector == "typiclust on ssl embeddings"
    assert not set(storage.round_items(project, first.id)) & set(storage.validation_ids(project))
    at.run()
    assert not at.exception and not any("Choosing the first batch" in i.value for i in at.info)


def test_a_random_first_batch_is_one_click_away_and_the_queued_job_then_makes_nothing(tmp_path, dataset, monkeypatch):
    from engine.worker import run_worker
    from tests.support import write_ssl_backbone

    project = _half_made(tmp_path, dataset, backbone=str(write_ssl_backbone(tmp_path / "exported")))
    at = _finish_from_label_page(project, monkeypatch)
    at.run()
    at.button(key="random-first").click().run()
    assert not at.exception
    first = storage.current_round(project)
    assert first.strategy == "random" and "before the representation was ready" in first.selector
    assert storage.latest_job(project, "round").state == "cancelled"
    run_worker(project.root, once=True)
    assert storage.current_round(project).id == first.id  # still one round


def test_with_the_ssl_backbone_the_first_batch_waits_behind_the_representation(tmp_path, dataset, monkeypatch):
    """Queued after the backbone job; if that is stopped, the first batch is random and says why."""
    from engine.worker import run_worker

    project = _half_made(tmp_path, dataset, backbone="ssl")
    at = _finish_from_label_page(project, monkeypatch)
    backbone, first_job = storage.latest_job(project, "backbone"), storage.latest_job(project, "round")
    assert backbone.state == first_job.state == "queued" and backbone.id < first_job.id  # the worker's order
    at.run()
    assert any("still being learned" in i.value for i in at.info)
    assert at.button(key="random-first")
    storage.cancel_job(project, backbone.id)  # the user stops the representation
    run_worker(project.root, once=True)
    first = storage.current_round(project)
    assert first.strategy == "random" and "self-supervised backbone has not finished" in first.selector


def test_a_failed_first_batch_job_offers_retry_and_a_random_batch(tmp_path, dataset, monkeypatch):
    import engine.round
    from engine.worker import run_worker
    from tests.support import write_ssl_backbone

    def broken(project, on_progress=None):
        raise OSError("No space left on device")

    project = _half_made(tmp_path, dataset, backbone=str(write_ssl_backbone(tmp_path / "exported")))
    at = _finish_from_label_page(project, monkeypatch)
    monkeypatch.setattr(engine.round, "run_first_round", broken)
    run_worker(project.root, once=True)
    rs = jobs.round_state(project)
    assert rs.kind == "failed" and rs.round is None
    at.run()
    assert any("No space left on device" in e.value for e in at.error)
    assert at.button(key="random-first")
    at.button(key=f"retry-{rs.job.id}").click().run()
    assert jobs.round_state(project).kind == "first"  # queued again
    monkeypatch.undo()
    run_worker(project.root, once=True)
    assert storage.current_round(project).strategy == "typiclust"


def _gate_round_zero(monkeypatch, first: str | None = None) -> None:
    """Hold every storage.create_round until two threads have reached it, so both makers have read a
    project with no round and passed their own checks before either writes; `first` (a thread name)
    then writes before the other, None lets them race for the write lock."""
    real, both, written = storage.create_round, threading.Barrier(2, timeout=60), threading.Event()

    def gated(*args, **kwargs):
        both.wait()
        if first is not None and threading.current_thread().name != first:
            assert written.wait(60)
        try:
            return real(*args, **kwargs)
        finally:
            written.set()

    monkeypatch.setattr(storage, "create_round", gated)


def _race(**makers) -> dict:
    """Run each maker in its own thread (named by its keyword), all at once; name -> result or exception."""
    outcomes: dict = {}

    def run(name, make):
        try:
            outcomes[name] = make()
        except BaseException as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in makers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_two_tabs_asking_for_a_random_first_batch_at_once_make_one_and_both_get_it(tmp_path, dataset, monkeypatch):
    from tests.support import APP_SETTINGS, tiny_settings

    project = storage.create_project(tmp_path / "p", tiny_settings(dataset[0], **APP_SETTINGS))
    storage.ingest(project)
    create_round = storage.create_round
    _gate_round_zero(monkeypatch)
    outcomes = _race(**{tab: lambda: jobs.random_first_round(project, "chosen in a tab") for tab in ("t1", "t2")})
    [made] = storage.list_rounds(project)
    assert made.index == 0 and made.strategy == "random"
    assert outcomes == {"t1": made, "t2": made}  # the tab that lost the write shows the batch the other made
    with pytest.raises(storage.StorageError, match="this batch was already chosen"):  # a third, later: refused
        create_round(project, strategy="random", selector="r", item_ids=[], scores=[], n_labeled=0, index=0)


@pytest.mark.parametrize("first", ["page", "worker"])
def test_the_page_and_the_worker_making_round_zero_at_once_make_one(tmp_path, dataset, monkeypatch, first):
    """The user presses "random first batch" while the worker's job, past its checks, writes its typiclust
    batch: one round 0; the page shows it whoever wrote first; the job ends done, or cancelled (the page
    asked it to stop) when the page's batch is the one made, never failed."""
    from engine.worker import run_job
    from tests.support import write_ssl_backbone

    project = _half_made(tmp_path, dataset, backbone=str(write_ssl_backbone(tmp_path / "exported")))
    storage.ingest(project)
    jobs.start_first_round(project)
    job = storage.claim_job(project, "worker")
    assert job.params == {"after_round": jobs.FIRST_ROUND}
    _gate_round_zero(monkeypatch, first)
    outcomes = _race(
        page=lambda: jobs.random_first_round(project, "chosen by the user"),
        worker=lambda: run_job(project, job, "worker"),
    )
    [made] = storage.list_rounds(project)
    assert made.index == 0 and made.strategy == {"page": "random", "worker": "typiclust"}[first]
    assert outcomes == {"page": made, "worker": None}  # nothing escaped either
    ended = storage.get_job(project, job.id)
    if first == "worker":
        assert ended.state == "done" and ended.result["round_id"] == made.id
    else:
        assert ended.state == "cancelled", ended.error


def test_settings_refuse_a_backbone_target_without_a_backbone(project, open_app):
    at = open_app("app/page_project.py")
    at.selectbox(key="s-target").select("backbone")
    at.button[[b.label for b in at.button].index("Save settings")].click().run()
    assert any("tunes the project's backbone" in e.value for e in at.error), [e.value for e in at.error]
    assert storage.load_settings(project).target != "backbone"


def test_a_round_queued_behind_the_representation_shows_its_progress(project, open_app):
    _use_ssl(project)
    made = storage.current_round(project)
    for item_id, _ in storage.round_queue(project, made.id):
        storage.set_label(project, item_id, storage.class_names(project)[0], annotator="t")
    backbone = jobs.start_backbone(project)
    jobs.advance(project)  # the batch is done: the round queues behind it
    at = open_app()
    assert any("once the representation of your images is learned" in i.value for i in at.info)
    assert at.button(key=f"cancel-{backbone.id}")  # the backbone job's progress is what is shown
