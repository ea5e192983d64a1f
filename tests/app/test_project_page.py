"""Project page: invalid settings show an inline error and save nothing; classes; create with ingest."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

import storage
from app import widgets
from tests.app.conftest import MAIN
from tests.support import write_image_folder


def submit(at, form_key: str):
    next(b for b in at.button if b.proto.form_id == form_key).click().run()
    return at


def test_invalid_settings_show_error_and_save_nothing(open_app, project):
    before = storage.load_settings(project)
    at = open_app("app/page_project.py")
    at.number_input(key="s-initial_size").set_value(50)  # larger than the budget of 12
    submit(at, "settings")
    assert any("initial batch" in e.value and "Not saved" in e.value for e in at.error)
    assert storage.load_settings(project) == before

    at.number_input(key="s-initial_size").set_value(4)
    at.number_input(key="s-budget").set_value(30)  # 30 + 3 validation > 24 usable images
    submit(at, "settings")
    assert any("usable images" in e.value for e in at.error)
    assert storage.load_settings(project) == before


def test_valid_settings_are_saved(open_app, project):
    at = open_app("app/page_project.py")
    at.number_input(key="s-round_size").set_value(6)
    at.selectbox(key="s-strategy").set_value("kcenter")
    submit(at, "settings")
    assert not at.error
    saved = storage.load_settings(project)
    assert (saved.round_size, saved.strategy) == (6, "kcenter")


def test_class_editor_renames_reorders_and_rejects_duplicates(open_app, project):
    at = open_app("app/page_project.py")
    at.text_area[0].set_value("green\nred\nblue\nblue")
    submit(at, "classes")
    assert any("same" in e.value for e in at.error)
    assert storage.class_names(project) == ["red", "green", "blue"]

    at.text_area[0].set_value("lime\nred\nblue\n<b>purple</b>")
    submit(at, "classes")
    assert not at.error
    assert storage.class_names(project) == ["lime", "red", "blue", "<b>purple</b>"]
    legend = at.dataframe[0].value
    assert list(legend["key"]) == ["1", "2", "3", "4"]
    assert list(legend["class"])[-1] == "<b>purple</b>"  # shown as text in a table cell


def test_create_project_ingests_reports_rejects_and_makes_first_batch(tmp_path: Path):
    images = tmp_path / "new_images"
    write_image_folder(images, per_class=4, flat=True)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "empty.png").write_bytes(b"")
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("app/page_project.py").run()
    at.text_input[1].set_value(str(images))
    at.text_input[2].set_value(str(tmp_path / "new_project"))
    at.text_area[-1].set_value("red\ngreen\nblue")
    at.number_input(key="c-budget").set_value(8)
    at.number_input(key="c-initial_size").set_value(4)
    at.number_input(key="c-round_size").set_value(4)
    submit(at, "create")
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    report = " ".join(s.value for s in at.success)
    assert "Added 12 images" in report and "2 rejected" in report and "empty file" in report
    project = storage.open_project(tmp_path / "new_project")
    assert len(storage.round_items(project, storage.current_round(project).id)) == 4
    assert at.session_state["project_dir"] == str(project.root)


def test_create_with_invalid_settings_creates_nothing(tmp_path: Path):
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("app/page_project.py").run()
    at.text_input[1].set_value(str(tmp_path / "missing"))
    at.text_input[2].set_value(str(tmp_path / "p"))
    at.text_area[-1].set_value("a\nb")
    submit(at, "create")
    assert any("does not exist" in e.value for e in at.error)
    assert not (tmp_path / "p").exists()


def test_the_settings_form_refuses_a_backbone_file_outside_the_allowed_roots_alike_whether_it_exists(open_app, project):
    before = storage.load_settings(project)
    messages = []
    for outside in ("/etc/hostname", "/etc/no-such-weights.pth"):  # one exists, one does not
        at = open_app("app/page_project.py")
        at.text_input(key="s-backbone").input(outside)
        submit(at, "settings")
        (error,) = at.error
        assert "Not saved" in error.value and "outside the folders this server may use" in error.value
        messages.append(error.value.replace(widgets.md(outside), "PATH"))  # the path as the page escapes it
    assert messages[0] == messages[1]
    assert storage.load_settings(project) == before


# ---------------------------------------------------------------- import labels


def import_from(at, path: Path, button: str):
    at.selectbox(key="import-source").set_value("a CSV or JSONL file").run()
    at.text_input(key="import-file").set_value(str(path))
    at.button(key=button).click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_import_labels_checks_then_imports_and_the_completed_batch_starts_the_next_round(
    open_app, project, dataset, tmp_path
):
    _, truth = dataset
    paths = {item.id: item.path for item in storage.usable_items(project)}
    batch = [item_id for item_id, _ in storage.round_items(project, storage.current_round(project).id)]
    rows = [f"{paths[i]},{truth[paths[i]]}" for i in batch]  # the open batch, labeled elsewhere
    (tmp_path / "mine.csv").write_text("path,class\n" + "\n".join(rows) + "\n")

    at = import_from(open_app("app/page_project.py"), tmp_path / "mine.csv", "import-check")
    assert any("The check passed" in i.value for i in at.info)
    assert any("Would import 4 labels" in c.value for c in at.code)
    assert storage.current_labels(project) == {} and not storage.active_jobs(project)  # a check changes nothing

    import_from(at, tmp_path / "mine.csv", "import-run")
    assert any("Imported 4 labels" in s.value for s in at.success)
    assert {i: truth[paths[i]] for i in batch} == storage.current_labels(project)
    assert {item.annotator for item in storage.labeled_items(project) if item.class_name} == {"mine.csv"}
    assert storage.round_complete(project, storage.current_round(project).id)
    [job] = storage.active_jobs(project, "round")  # as the batch's last label would have
    assert job.params == {"after_round": 0}


def test_import_labels_with_problems_shows_the_report_and_changes_nothing(open_app, project, dataset, tmp_path):
    _, truth = dataset
    [first, second] = sorted(truth)[:2]
    storage.set_label(project, ids_by_path(project)[first], "blue" if truth[first] != "blue" else "red")
    before = storage.current_labels(project)
    (tmp_path / "bad.jsonl").write_text(
        "\n".join(
            json.dumps(record)
            for record in (
                {"path": first, "class": truth[first]},  # a person labeled it otherwise
                {"path": second, "class": "purple"},
                {"path": "nowhere.png", "class": "red"},
            )
        )
    )
    at = open_app("app/page_project.py")
    for button in ("import-check", "import-run"):
        import_from(at, tmp_path / "bad.jsonl", button)
        assert any("Nothing was imported" in e.value for e in at.error)
        [report] = [c for c in at.code if "Nothing was imported" in c.value]
        for kind in ("Unknown path (1 row)", "Unknown class (1 row)", "Labeled otherwise in the app (1 image)"):
            assert kind in report.value
        assert storage.current_labels(project) == before
    at.selectbox(key="import-source").set_value("class subfolders").run()
    at.button(key="import-run").click().run()  # the images lie in no subfolder
    assert any("no image lies in a subfolder" in e.value for e in at.error)
    assert storage.current_labels(project) == before


def ids_by_path(project: storage.Project) -> dict[str, int]:
    return {item.path: item.id for item in storage.usable_items(project)}


def test_the_processes_setting_is_saved_or_refused_with_its_reason(open_app, project):
    at = open_app("app/page_project.py")
    assert at.text_input(key="s-processes").value == "auto"
    at.text_input(key="s-processes").set_value("two")
    submit(at, "settings")
    assert any("processes 'two' must be auto or a whole number" in e.value and "Not saved" in e.value for e in at.error)
    assert storage.load_settings(project).processes == "auto"
    at.text_input(key="s-processes").set_value("2")
    submit(at, "settings")
    assert not at.error and storage.load_settings(project).processes == "2"


def test_seals_candidates_are_a_setting_of_the_project(open_app, project):
    at = open_app("app/page_project.py")
    assert at.selectbox(key="s-candidates").value == "all"
    at.selectbox(key="s-candidates").set_value("seals")
    at.number_input(key="s-seals_k").set_value(20)
    submit(at, "settings")
    assert not at.error
    saved = storage.load_settings(project)
    assert (saved.candidates, saved.seals_k) == ("seals", 20)
