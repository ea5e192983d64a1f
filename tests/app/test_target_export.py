"""Target page trains through the worker and shows metrics; Export page buttons hold the right bytes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import zipfile

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager

import storage
from app import jobs
from engine.worker import run_worker


def label_everything_queued(project, truth):
    """Label the batch and the validation set with the dataset's true classes."""
    ids = [i for i, _ in storage.round_items(project, storage.current_round(project).id)]
    for item_id in ids + storage.validation_ids(project):
        storage.set_label(project, item_id, truth[storage.get_item(project, item_id).path])


@pytest.fixture
def deferred(monkeypatch):
    """file id -> (callable, file name) of every deferred download button rendered."""
    captured = {}
    original = MediaFileManager.add_deferred

    def spy(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        file_id = original(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)
        captured[file_id] = (data_callable, file_name)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    return captured


def download(at, deferred, key):
    button = at.download_button(key=key)
    make, file_name = deferred[button.proto.deferred_file_id]
    return make(), file_name


def test_target_job_runs_and_shows_accuracy_and_confusion(open_app, project, dataset):
    label_everything_queued(project, dataset[1])
    jobs.advance(project)  # what the last label's callback does
    at = open_app("app/page_target.py")
    at.button(key="train-target").click().run()
    [job] = storage.active_jobs(project, "target")
    assert at.get("progress")  # live progress panel
    run_worker(project.root, once=True)  # also runs the round queued when the batch was finished
    at.run()
    assert storage.get_job(project, job.id).state == "done"
    assert [m.label for m in at.metric][:3] == ["Validation accuracy", "Proxy, same images", "Validation images"]
    assert at.metric[2].value == "3"
    result = storage.get_job(project, job.id).result
    proxy = result["proxy"]  # the round's proxy, measured again by the target job on the target's three images
    assert (proxy["round"], proxy["n_validation"]) == (storage.current_round(project).index, 3)
    assert at.metric[1].value == f"{proxy['accuracy']:.1%}"
    assert at.metric[1].help.startswith("The proxy that chose batch 2,")  # round 1's, after the random batch 1
    assert "**The proxy that chose batch 2** (" in _text(at)
    assert at.metric[0].proto.delta == f"{100 * (result['accuracy'] - proxy['accuracy']):+.1f} pts vs proxy"
    confusion = at.dataframe[0].value
    assert list(confusion.columns) == ["red", "green", "blue"]
    assert int(confusion.to_numpy().sum()) == 3


def test_a_diverged_target_shows_its_reason_and_no_result(open_app, project, dataset, monkeypatch):
    import dataclasses

    from engine import config

    monkeypatch.setattr(config, "BASE", dataclasses.replace(config.BASE, lr=1e30, clip_norm=0.0))
    label_everything_queued(project, dataset[1])
    at = open_app("app/page_target.py")
    at.button(key="train-target").click().run()
    run_worker(project.root, once=True)
    at.run()
    assert any("training diverged" in e.value for e in at.error)
    assert "Results" not in [h.value for h in at.subheader]
    assert not [m for m in at.metric if m.label == "Validation accuracy"]


def _finished_target(project, accuracy, n=4, proxy=None):
    """A target job done with `accuracy` on `n` validation images (and `proxy`, what the job found of the
    last round's proxy), recorded the way the worker records one."""
    from engine.intervals import wilson

    correct = round(accuracy * n)
    result = {
        "accuracy": accuracy,
        "correct": correct,
        "interval": list(wilson(correct, n)),
        "per_class_accuracy": [accuracy, None, None],
        "confusion": [[1, 0, 0], [0, 0, 0], [0, 0, 0]],
        "n_validation": n,
        "train_s": 1.0,
        "n_labels": 4,
        "model": "resnet20",
        "steps": 400,
    }
    if proxy is not None:
        result["proxy"] = proxy
    job = storage.enqueue_job(project, "target")
    storage.claim_job(project, "test-worker", ["target"])
    storage.finish_job(project, job.id, result)


def _proxy_round(project, accuracy, n=4):
    free = storage.unlabeled_ids(project)[:1]
    return storage.create_round(
        project,
        strategy="random",
        selector="proxy_tiny",
        item_ids=free,
        scores=[0.0],
        n_labeled=4,
        proxy_val_acc=accuracy,
        proxy_val_n=n,
    )


def _same_images(round_index, accuracy, n=4, target_only=0, proxy_only=0):
    from engine.intervals import wilson

    correct = round(accuracy * n)
    return {
        "round": round_index,
        "selector": "proxy_tiny",
        "accuracy": accuracy,
        "correct": correct,
        "n_validation": n,
        "interval": list(wilson(correct, n)),
        "target_only": target_only,
        "proxy_only": proxy_only,
    }


def _text(at) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.mark.parametrize("target, proxy, warned", [(0.5, 0.75, True), (0.75, 0.5, False), (0.5, 0.5, False)])
def test_the_target_is_compared_with_the_proxy_on_the_same_images(open_app, project, dataset, target, proxy, warned):
    label_everything_queued(project, dataset[1])
    made = _proxy_round(project, 0.6, n=5)  # what the round measured, on the five labeled then
    _finished_target(project, target, proxy=_same_images(made.index, proxy, target_only=1, proxy_only=2))
    at = open_app("app/page_target.py")
    metrics = {m.label: m for m in at.metric}
    assert metrics["Validation accuracy"].value == f"{target:.1%}"
    assert metrics["Validation accuracy"].proto.delta == f"{100 * (target - proxy):+.1f} pts vs proxy"
    assert metrics["Proxy, same images"].value == f"{proxy:.1%}"
    assert any("less accurate than the proxy" in w.value for w in at.warning) == warned
    text = _text(at)
    assert f"{target:.1%} ({round(4 * target)} of 4 validation images; 95% interval" in text
    assert f"measured again on the same 4 images: {proxy:.1%} ({round(4 * proxy)} of 4" in text
    assert "Only the target was right on 1 of them, only the proxy on 2." in text
    assert f"**The proxy that chose batch {made.index + 1}** (" in text  # batch 1 was the random one
    named = [f"the proxy that chose batch {made.index + 1} (" in w.value for w in at.warning]
    assert named == ([True] if warned else [])
    assert "60.0%" not in text  # the round's own measurement, on other images, is not the one compared


@pytest.mark.parametrize(
    "proxy, why",
    [
        ({"round": None, "selector": None, "unavailable": "no round has saved its proxy yet"}, "no round has saved"),
        (None, "this target was trained before the app kept the last proxy"),
    ],
)
def test_on_different_images_the_two_are_shown_with_their_n_and_no_difference(open_app, project, dataset, proxy, why):
    label_everything_queued(project, dataset[1])
    made = _proxy_round(project, 0.6, n=5)
    _finished_target(project, 0.5, proxy=proxy)
    at = open_app("app/page_target.py")
    metrics = {m.label: m for m in at.metric}
    assert metrics["Validation accuracy"].value == "50.0%" and not metrics["Validation accuracy"].proto.delta
    assert metrics["Proxy, last batch"].value == "60.0%"
    assert metrics["Proxy, last batch"].help.startswith(f"The proxy that chose batch {made.index + 1},")
    assert not at.warning  # the proxy's 60 % is on other images: no "less accurate" claim
    text = _text(at)
    assert "50.0% (2 of 4 validation images; 95% interval 15–85%)" in text
    assert "60.0% (3 of 5 validation images; 95% interval 23–88%)" in text
    assert "on different images, so no difference is shown" in text
    assert f"**The proxy that chose batch {made.index + 1}**: 60.0%" in text
    assert why in text.replace("\\", "")


def test_after_imported_labels_the_proxy_is_named_by_the_batch_the_label_page_gives(tmp_path, monkeypatch):
    """Round 0 is the imported labels (no batch), so round 1's proxy chose batch 1, as the Label page counts."""
    from streamlit.testing.v1 import AppTest

    from app import state
    from app.page_label import batch_number
    from engine.initial import start_from_labels
    from tests.app.conftest import MAIN
    from tests.support import APP_SETTINGS, label_by_folder, tiny_settings, write_image_folder

    write_image_folder(tmp_path / "images", per_class=8)
    project = storage.create_project(tmp_path / "imported", tiny_settings(tmp_path / "images", **APP_SETTINGS))
    storage.ingest(project)
    label_by_folder(project, [item.id for item in storage.usable_items(project)][:12])
    assert start_from_labels(project).strategy == "imported"
    made = _proxy_round(project, 0.6, n=5)
    assert batch_number(project, jobs.RoundState("labeling", made)) == 1
    _finished_target(project, 0.5, proxy=_same_images(made.index, 0.75))
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page("app/page_target.py").run()
    assert not at.exception
    assert {m.label: m for m in at.metric}["Proxy, same images"].help.startswith("The proxy that chose batch 1,")
    assert "**The proxy that chose batch 1** (" in _text(at)
    [warning] = at.warning
    assert "less accurate than the proxy that chose batch 1 (" in warning.value
    shown = "\n".join([_text(at), warning.value, *(m.help for m in at.metric)]).lower()
    assert "batch 0" not in shown and "round" not in shown


def test_an_auto_target_is_named_by_the_model_it_stands_for(open_app, project, tmp_path):
    import dataclasses

    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), target="auto"))
    at = open_app("app/page_target.py")
    assert r"Target model **resnet20 \(auto\)** (30 training steps)" in at.markdown[0].value


def test_export_buttons_hold_csv_jsonl_zip_and_checkpoint(open_app, project, dataset, deferred, tmp_path):
    label_everything_queued(project, dataset[1])
    at = open_app("app/page_export.py")
    assert at.download_button(key="dl-checkpoint").proto.disabled  # no target yet

    data, name = download(at, deferred, "dl-csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert name.endswith(".csv") and len(rows) == 7  # 4 batch + 3 validation
    assert {r["class"] for r in rows} <= {"red", "green", "blue"}
    assert all(dataset[1][r["path"]] == r["class"] for r in rows)

    data, _ = download(at, deferred, "dl-jsonl")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert {r["path"] for r in records} == {r["path"] for r in rows}

    data, _ = download(at, deferred, "dl-zip")
    members = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(members) == sorted(["classes.json", *(f"{r['split']}/{r['class']}/{r['path']}" for r in rows)])
    assert sorted(r["split"] for r in rows) == ["train"] * 4 + ["validation"] * 3

    storage.enqueue_job(project, "target")
    run_worker(project.root, once=True)
    deferred.clear()
    at.run()
    data, name = download(at, deferred, "dl-checkpoint")
    bundle = zipfile.ZipFile(io.BytesIO(data))
    assert {"target/model.safetensors", "target/metadata.json", "target/README.md"} <= set(bundle.namelist())
    assert json.loads(bundle.read("target/metadata.json"))["class_names"] == ["red", "green", "blue"]
    assert "load_checkpoint" in bundle.read("target/README.md").decode()
    assert_readme_commands_classify_an_image(data, name, bundle.read("target/README.md").decode(), tmp_path, dataset)
    assert (project.exports_dir / name).read_bytes() == data  # kept in the exports folder, as the page says


def assert_readme_commands_classify_an_image(data: bytes, name: str, readme: str, tmp_path, dataset) -> None:
    """The bundle's README commands, run as written in a fresh folder and a separate process, print a class."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / name).write_bytes(data)
    image = next(dataset[0].glob("*.png"))
    assert "IMAGE=your_image.jpg  # a placeholder" in readme  # the README says what to replace
    (folder / "your_image.jpg").write_bytes(image.read_bytes())
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", "-euc", commands], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path, predicted, probability = done.stdout.strip().split("\t")
    assert path == "your_image.jpg" and predicted in {"red", "green", "blue"} and 0 < float(probability) <= 1
