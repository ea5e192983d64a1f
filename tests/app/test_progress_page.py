"""The Progress page after real trained rounds: headline, learning curve, labels per class, time per batch; its
batches numbered as on the Label page."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pyarrow as pa
import pytest

import storage
from app import jobs
from app.page_progress import ACCURACY, curve_frame
from engine.intervals import describe, span, wilson
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
        "Batches": "3",
        "Validation labeled": "3 of 3",
    }
    [bar] = at.get("progress")
    assert bar.proto.text == "Budget used: 10 of 12 labels"

    shown = charts(at)
    points = [
        (p["batch"], p["labels"], p["accuracy"], p["n"], p["measured on"], p["other set"]) for p in shown[ACCURACY]
    ]
    assert points == [  # round r's proxy chose batch r + 1 (batch 1 was random)
        (2, 4, one.proxy_val_acc, 3, "fewer than 20", False),
        (3, 8, two.proxy_val_acc, 3, "fewer than 20", False),
    ]
    for point, made in zip(shown[ACCURACY], (one, two), strict=True):
        assert (point["low"], point["high"]) == pytest.approx(wilson(round(3 * made.proxy_val_acc), 3))
    [note] = [c.value for c in at.caption if "Each point" in c.value]
    assert "Today 3 validation images are labeled" in note
    assert f"Latest, the proxy that chose batch 3: {describe(two.proxy_val_acc, 3)}" in note
    assert "Grey points are on fewer than 20 images" in note and "Hollow" not in note
    per_class = Counter(paths[i].split("/")[0] for i in labeled)  # the truth the items were labeled with
    assert {row["index -- streamlit-generated"]: row["labels"] for row in shown["labels per class"]} == per_class
    seconds = {
        (row["batch"], row["color -- streamlit-generated"]): row["value -- streamlit-generated"]
        for row in shown["seconds"]
    }
    assert seconds == {
        (r.index + 1, stage): value
        for r in (one, two)  # batch 1 was random: nothing trained, not drawn
        for stage, value in (("train s", r.train_s), ("score s", r.score_s), ("select s", r.select_s))
    }
    assert None not in seconds.values()  # the trained rounds stored every stage's time

    [table] = [d.value for d in at.dataframe if "batch" in d.value.columns]  # the Batches table
    assert table["batch"].tolist() == [1, 2, 3] and table["labels"].tolist() == [0, 4, 8]
    assert table["proxy validation accuracy"].tolist()[1:] == [one.proxy_val_acc, two.proxy_val_acc]
    assert table["validation images"].tolist()[1:] == [3, 3] and pd.isna(table["validation images"][0])
    assert table["95% interval"].tolist()[1:] == [span(*wilson(round(3 * r.proxy_val_acc), 3)) for r in (one, two)]


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
    assert any("the imported labels are no batch" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Batches"] == "0"


@pytest.fixture
def fresh(tmp_path, monkeypatch) -> storage.Project:
    """A project with its random round 0 labeled and none of its 3 validation images yet; the app opens it."""
    from app import state

    write_image_folder(tmp_path / "fresh_images", per_class=8)
    project = make_app_project(tmp_path / "fresh", tmp_path / "fresh_images")
    label_queue(project)
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    return project


def _progress_page(project):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import MAIN

    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page("app/page_progress.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_a_round_measured_on_a_smaller_validation_set_is_marked_and_the_target_measures_its_proxy_again(fresh):
    """One of the three validation images labeled when round 1 trained, all three after."""
    validation = storage.validation_ids(fresh)
    label_by_folder(fresh, validation[:1])
    jobs.advance(fresh)
    assert run_worker(fresh.root, once=True) == 1
    [_, one] = storage.list_rounds(fresh)
    assert one.proxy_val_n == 1
    label_by_folder(fresh, validation[1:])

    at = _progress_page(fresh)
    [point] = charts(at)[ACCURACY]
    assert (point["batch"], point["n"], point["measured on"]) == (2, 1, "fewer than 20")
    assert point["other set"]
    [note] = [c.value for c in at.caption if "Each point" in c.value]
    assert (
        "Hollow points (the proxies that chose batch 2) were measured on another number of validation images "
        "than today's 3" in note
    )
    assert "earlier ones cannot be measured again on today's set" in note
    assert "Training the target (Target page) measures the latest proxy again" in note

    jobs.start_target(fresh)
    assert run_worker(fresh.root, once=True) == 1
    at.run()
    points = charts(at)[ACCURACY]
    proxy = jobs.last_target_result(fresh)["proxy"]
    assert [(p["batch"], p["n"], p["kind"]) for p in points] == [
        (2, 1, "when it trained"),
        (2, 3, "measured again for the target"),  # round 1's saved proxy on today's three
    ]
    assert points[1]["accuracy"] == proxy["accuracy"]
    [note] = [c.value for c in at.caption if "Each point" in c.value]
    assert (
        "The black diamond is the proxy that chose batch 2, measured again when the target trained: "
        f"{describe(proxy['accuracy'], 3)}" in note
    )


def test_the_curve_tells_many_images_from_few_and_from_unrecorded():
    frame = pd.DataFrame(
        {
            "batch": [2, 3, 4],
            "labels": [4, 8, 12],
            ACCURACY: [0.5, 0.75, 0.5],
            "validation images": pd.array([24, pd.NA, 4], dtype="Int64"),
        }
    )
    points = curve_frame(frame, today=24, offset=1)
    assert points["measured on"].tolist() == ["20 or more", "not recorded", "fewer than 20"]
    assert points["other set"].tolist() == [False, False, True]
    assert points["interval"].tolist() == [span(*wilson(12, 24)), "", span(*wilson(2, 4))]
    assert [p is None or p != p for p in points["n"].tolist()] == [False, True, False]


def _imported_project(tmp_path) -> storage.Project:
    """Round 0 stands for 12 labels brought with the images (no batch); its validation set labeled."""
    from engine.initial import start_from_labels
    from tests.support import APP_SETTINGS, tiny_settings

    write_image_folder(tmp_path / "images", per_class=8)
    project = storage.create_project(tmp_path / "imported", tiny_settings(tmp_path / "images", **APP_SETTINGS))
    storage.ingest(project)
    label_by_folder(project, [item.id for item in storage.usable_items(project)][:12])
    assert start_from_labels(project).strategy == "imported"
    label_by_folder(project, storage.validation_ids(project))
    return project


def _random_first_project(tmp_path) -> storage.Project:
    """A random round 0 (batch 1), labeled with the validation set."""
    write_image_folder(tmp_path / "images", per_class=8)
    project = make_app_project(tmp_path / "random", tmp_path / "images")
    label_by_folder(project, storage.validation_ids(project))
    label_queue(project)
    return project


@pytest.mark.parametrize("start", [_random_first_project, _imported_project], ids=["random first", "imported"])
def test_progress_numbers_batches_as_the_label_page_does(start, tmp_path, monkeypatch):
    """The batch a round's proxy chose is the number the Label page gives that round (page_label.batch_number),
    in the table, on the curve, in its note and on the time chart; imported labels are no batch."""
    from app import state
    from app.page_label import batch_number

    project = start(tmp_path)
    jobs.advance(project)
    assert run_worker(project.root, once=True) == 1
    rounds = storage.list_rounds(project)
    imported = rounds[0].strategy == "imported"
    batches = rounds[1:] if imported else rounds
    numbers = [batch_number(project, jobs.RoundState("labeling", r)) for r in batches]
    assert numbers == ([1] if imported else [1, 2])  # the Label page's count: the trained proxy chose the last
    chosen = numbers[-1]

    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    at = _progress_page(project)
    [table] = [d.value for d in at.dataframe if "batch" in d.value.columns]  # the Batches table
    assert table["batch"].tolist()[int(imported) :] == numbers
    assert not imported or pd.isna(table["batch"][0])  # the imported labels: no batch number at all
    assert {m.label: m.value for m in at.metric}["Batches"] == str(chosen)
    shown = charts(at)
    assert [p["batch"] for p in shown[ACCURACY]] == [chosen]
    assert {row["batch"] for row in shown["seconds"]} == {chosen}
    [note] = [c.value for c in at.caption if "Each point" in c.value]
    assert f"Latest, the proxy that chose batch {chosen}:" in note
    text = "\n".join(e.value for e in [*at.caption, *at.markdown, *at.subheader] if isinstance(e.value, str))
    assert "batch 0" not in text.lower() and "round" not in text.lower()


def test_progress_shows_what_each_annotator_labeled(open_app, project):
    first, second, third = [i for i, _ in storage.round_items(project, storage.current_round(project).id)][:3]
    storage.set_label(project, first, "red", annotator="ana")
    storage.set_label(project, second, "blue", annotator="ana")
    storage.set_label(project, third, storage.SKIP, annotator="bo")
    at = open_app("app/page_progress.py")
    assert "Labels per annotator" in [h.value for h in at.subheader]
    [table] = [d.value for d in at.dataframe if "annotator" in d.value.columns]
    rows = table[["annotator", "labels", "skips"]].values.tolist()
    assert ["ana", 2, 0] in rows and ["bo", 0, 1] in rows
    assert rows.index(["ana", 2, 0]) < rows.index(["bo", 0, 1])  # most labels first


def test_progress_says_who_is_labeling_now(open_app, project):
    from app import claims

    order = [i for i, _ in storage.round_items(project, storage.current_round(project).id)]
    storage.set_label(project, order[0], "red", annotator="ana")
    claims.HOLDS.hold(str(project.root), claims.annotator_key("ana"), "ana", order, set(order[1:]), count=2)
    claims.HOLDS.hold(str(project.root), claims.annotator_key("cy"), "cy", order, set(order[1:]), count=1)
    at = open_app("app/page_progress.py")
    [table] = [d.value for d in at.dataframe if "annotator" in d.value.columns]
    rows = table[["annotator", "labels", "labeling now"]].values.tolist()
    assert ["ana", 1, 2] in rows and ["cy", 0, 1] in rows  # cy has labeled nothing yet: her view is open
