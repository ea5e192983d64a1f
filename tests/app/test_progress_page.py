"""The Progress page after real trained rounds: headline, learning curve, labels per class, time per round."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest

import storage
from app import jobs
from engine.worker import run_worker
from tests.support import label_by_folder, label_queue, make_app_project, write_image_folder


@pytest.fixture
def project(tmp_path) -> storage.Project:
    """The validation set labeled, then two rounds trained by the worker on 4 and 8 labels, and 2 of the
    last batch's 4 labeled (replaces the conftest's fresh project, so open_app draws this one)."""
    write_image_folder(tmp_path / "images", per_class=8)
    project = make_app_project(tmp_path / "project", tmp_path / "images")
    label_by_folder(project, storage.validation_ids(project))
    for _ in range(2):
        label_queue(project)
        jobs.advance(project)
        assert run_worker(project.root, once=True) == 1
    last = storage.current_round(project)
    label_by_folder(project, [i for i, _ in storage.round_queue(project, last.id)][:2])
    return project


def charts(at) -> dict[str, list[dict]]:
    """Each chart's data rows, keyed by its y axis title (the labels per class chart has none)."""
    found = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        layer = spec["layer"][0] if "layer" in spec else spec
        [dataset] = chart.proto.datasets
        rows = pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()
        found[layer["encoding"]["y"]["title"] or "labels per class"] = rows
    return found


def test_progress_page_shows_the_stored_rounds_after_two_trained_ones(open_app, project):
    zero, one, two = storage.list_rounds(project)
    assert (zero.selector, one.n_labeled, two.n_labeled) == ("random", 4, 8)
    paths = {item.id: item.path for item in storage.usable_items(project)}
    queued = [i for r in (zero, one, two) for i, _ in storage.round_items(project, r.id)]
    labeled = [i for i in queued if storage.current_label(project, i) is not None]
    assert len(labeled) == 10  # 4 + 4 + 2 of the last batch

    at = open_app("app/page_progress.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "Labeled (training)": "10",
        "Budget left to queue": "0",
        "Rounds": "3",
        "Validation labeled": "3 of 3",
    }
    [bar] = at.get("progress")
    assert bar.proto.text == "Budget used: 10 of 12 labels"

    shown = charts(at)
    assert shown["proxy validation accuracy"] == [
        {"labels": 4, "proxy validation accuracy": one.proxy_val_acc},
        {"labels": 8, "proxy validation accuracy": two.proxy_val_acc},
    ]
    per_class = Counter(paths[i].split("/")[0] for i in labeled)  # the truth the items were labeled with
    assert {row["index -- streamlit-generated"]: row["labels"] for row in shown["labels per class"]} == per_class
    seconds = {
        (row["round"], row["color -- streamlit-generated"]): row["value -- streamlit-generated"]
        for row in shown["seconds"]
    }
    assert seconds == {
        (r.index, stage): value
        for r in (one, two)  # round 0 was random: nothing trained, not drawn
        for stage, value in (("train s", r.train_s), ("score s", r.score_s), ("select s", r.select_s))
    }
    assert None not in seconds.values()  # the trained rounds stored every stage's time

    table = at.dataframe[0].value
    assert table["round"].tolist() == [0, 1, 2] and table["labels"].tolist() == [0, 4, 8]
    assert table["proxy validation accuracy"].tolist()[1:] == [one.proxy_val_acc, two.proxy_val_acc]


def test_an_imported_round_zero_is_not_drawn_as_a_trained_round(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import state
    from engine.initial import start_from_labels
    from tests.app.conftest import MAIN
    from tests.support import APP_SETTINGS, tiny_settings

    write_image_folder(tmp_path / "images", per_class=8)
    project = storage.create_project(tmp_path / "p", tiny_settings(tmp_path / "images", **APP_SETTINGS))
    storage.ingest(project)
    label_by_folder(project, [item.id for item in storage.usable_items(project)][:12])
    assert start_from_labels(project).strategy == "imported"
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page("app/page_progress.py").run()
    assert not at.exception
    assert any("the labels the images came with" in c.value for c in at.caption)
