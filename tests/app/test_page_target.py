"""The Target page names the model it will train without asking torch for the device."""

from __future__ import annotations

import pytest

import storage
from app.page_target import model_name


@pytest.mark.parametrize(
    ("target", "device", "backbone", "shown"),
    [
        ("auto", "auto", "none", "resnet18 on a CUDA GPU, else resnet20 (auto)"),
        ("auto", "cpu", "none", "resnet20 (auto)"),
        ("auto", "cuda", "none", "resnet18 (auto)"),
        ("auto", "auto", "ssl", "backbone (auto)"),
        ("resnet56", "auto", "none", "resnet56"),
        ("no_such_model", "cpu", "none", "no_such_model"),
    ],
)
def test_the_target_model_is_named_for_the_settings_device(target, device, backbone, shown):
    settings = storage.Settings(image_root="/", classes=("a", "b"), target=target, device=device, backbone=backbone)
    assert model_name(settings) == shown


def label_all(project, truth):
    for item in storage.usable_items(project):
        storage.set_label(project, item.id, truth[item.path])


def test_dynams_is_a_training_option_and_its_steps_are_reported(open_app, project, dataset):
    from engine.worker import run_worker

    label_all(project, dataset[1])
    at = open_app("app/page_target.py")
    at.toggle(key="dynamic-on").set_value(True).run()
    at.slider(key="dynamic-keep").set_value(50).run()
    at.button(key="train-target").click().run()
    [job] = storage.active_jobs(project, "target")
    assert job.params == {"dynamic_keep": 0.5}
    run_worker(project.root, once=True)
    at.run()
    [note] = [c.value for c in at.caption if "DynaMS" in c.value]
    result = storage.get_job(project, job.id).result
    assert f"{result['dynamic']['steps']} steps where training on every label plans 30" in note


def test_the_subset_target_is_compared_with_the_full_one(open_app, project, dataset):
    from app import jobs
    from engine.jobs.coreset import curate
    from engine.worker import run_worker

    label_all(project, dataset[1])
    run = curate(project, method="margin", keep=0.5)
    jobs.start_target(project, coreset_run=run.id)
    run_worker(project.root, once=True)
    at = open_app("app/page_target.py")
    [table] = [d.value for d in at.dataframe if "training labels" in d.value.columns]
    assert list(table.index) == ["kept by margin (50%)"] and table["training labels"].iloc[0] == run.n_kept
    jobs.start_target(project)
    run_worker(project.root, once=True)
    at.run()
    [table] = [d.value for d in at.dataframe if "training labels" in d.value.columns]
    assert list(table.index) == ["kept by margin (50%)", "every training label"]
    assert table.loc["every training label", "training labels"] == run.n_labeled
    assert table["validation images"].tolist() == [3, 3]
    from engine.intervals import span, wilson

    stored = [jobs.last_target_result(project, subset=True), jobs.last_target_result(project)]
    assert table["95% interval"].tolist() == [span(*wilson(r["correct"], 3)) for r in stored]


def test_a_dynams_target_is_named_so_in_comparisons():
    from app.page_target import full_target_name

    assert full_target_name({"n_labels": 9}) == "every training label"
    assert full_target_name({"dynamic": {"keep": 0.6}}) == "every training label (DynaMS, 60% on average)"
