"""Curate page: a coreset job through the worker, the run's summary, exports of the kept subset, the target on
it, and the review of possibly mislabeled images."""

from __future__ import annotations

import csv
import io

import storage
from engine import names
from engine.worker import run_worker
from tests.app.test_target_export import deferred, download  # noqa: F401  (a fixture and its reader)

PAGE = "app/page_curate.py"


def label_all(project, truth, wrong: int = 0) -> list[int]:
    """Label every usable item with its true class, except the first `wrong` training items, given the next
    class; returns those."""
    classes = storage.class_names(project)
    validation = set(storage.validation_ids(project))
    mislabeled = []
    for item in storage.usable_items(project):
        name = truth[item.path]
        if item.id not in validation and len(mislabeled) < wrong:
            name = classes[(classes.index(name) + 1) % len(classes)]
            mislabeled.append(item.id)
        storage.set_label(project, item.id, name, annotator="ana")
    return mislabeled


def curate(at, project, **choices):
    for key, value in choices.items():
        at.selectbox(key=key).set_value(value) if key == "curate_method" else at.slider(key=key).set_value(value)
    at.button(key="FormSubmitter:curate-Curate the labeled set").click().run()
    [job] = storage.active_jobs(project, "coreset")
    assert run_worker(project.root, once=True) == 1
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return storage.get_job(project, job.id)


def test_without_two_labeled_classes_the_page_says_what_to_do(open_app):
    at = open_app(PAGE)
    assert any("at least two classes" in i.value for i in at.info)
    assert "Kept" not in [m.label for m in at.metric]


def test_a_run_shows_its_kept_share_and_exports_the_subset(open_app, project, dataset, deferred):  # noqa: F811
    label_all(project, dataset[1])
    at = open_app(PAGE)
    job = curate(at, project, curate_method="margin", curate_keep=50)
    assert job.state == "done", job.error
    run = storage.latest_coreset_run(project)
    assert (run.method, run.keep, run.n_labeled) == ("margin", 0.5, 21)
    kept = {m.label: m.value for m in at.metric}
    assert kept["Kept"] == f"{run.n_kept} of 21" and kept["Method"] == "margin"
    table = at.dataframe[0].value
    assert table["labeled"].sum() == 21 and table["kept"].sum() == run.n_kept
    data, name = download(at, deferred, "dl-subset-csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert name.endswith(f"coreset_{run.id}.csv")
    assert sum(r["kept"] == "1" for r in rows) == run.n_kept and sum(r["kept"] == "0" for r in rows) == 21 - run.n_kept
    assert (project.exports_dir / f"labels_coreset_{run.id}.csv").is_file()


def test_the_target_trains_on_the_kept_subset_and_is_compared_with_the_full_one(open_app, project, dataset):
    label_all(project, dataset[1])
    at = open_app(PAGE)
    curate(at, project, curate_keep=50)
    run = storage.latest_coreset_run(project)
    # k-center (the default) has no score per image: the histogram reads each one's distance to the kept
    assert any(c.value.startswith(f"{names.KEPT_DISTANCE}: 21 images") for c in at.caption)
    at.button(key="train-subset-target").click().run()
    [job] = storage.active_jobs(project, "target")
    assert job.params == {"coreset_run": run.id}
    run_worker(project.root, once=True)
    at.run()
    frame = next(d.value for d in at.dataframe if "training labels" in d.value.columns)
    assert list(frame.index) == ["kept by kcenter (50%)"]
    assert frame.loc["kept by kcenter (50%)", "training labels"] == run.n_kept
    assert frame.loc["kept by kcenter (50%)", "validation images"] == 3
    assert (project.models_dir / "target_subset" / "model.safetensors").is_file()


def test_suspects_are_listed_and_a_confirmation_takes_one_off(open_app, project, dataset, monkeypatch):
    import engine.coreset

    wrong = label_all(project, dataset[1], wrong=2)
    # which labels a tiny run flags depends on its training; the review flow does not: flag the wrong two
    monkeypatch.setattr(
        engine.coreset, "suspects", lambda pool: (pool.probs.argmax(1) == -1) | _rows(pool, project, wrong)
    )
    import engine.jobs.coreset

    monkeypatch.setattr(engine.jobs.coreset, "suspects", engine.coreset.suspects)
    at = open_app(PAGE)
    curate(at, project)
    run = storage.latest_coreset_run(project)
    assert {s.item_id for s in storage.suspects(project, run.id)} == set(wrong)
    assert any("0 reviewed, 0 changed, 2 to review" in m.value for m in at.markdown)
    at.multiselect(key="curate_confirm").set_value([wrong[0]])
    at.text_input(key="curate_name").set_value("ben")
    at.button(key="FormSubmitter:confirm-Mark as right").click().run()
    assert any("1 reviewed, 0 changed, 1 to review" in m.value for m in at.markdown)
    storage.set_label(project, wrong[1], dataset[1][storage.get_item(project, wrong[1]).path], annotator="ben")
    at.run()
    assert any("2 reviewed, 1 changed, 0 to review" in m.value for m in at.markdown)


def _rows(pool, project, wrong):
    import numpy as np

    training = sorted(storage.training_labels(project))
    return np.isin(np.array(training), wrong)


def test_a_failed_run_shows_why_and_offers_a_retry(open_app, project, dataset, monkeypatch):
    import engine.jobs.coreset
    from engine.train import TrainingFailed

    def fail(*args, **kwargs):
        raise TrainingFailed("training diverged at step 3 of 30")

    monkeypatch.setattr(engine.jobs.coreset, "score_labeled_set", fail)
    label_all(project, dataset[1])
    at = open_app(PAGE)
    job = curate(at, project)
    assert job.state == "failed"
    assert any("training diverged" in e.value for e in at.error)
    assert at.button(key=f"retry-{job.id}")
    assert storage.coreset_runs(project) == []
