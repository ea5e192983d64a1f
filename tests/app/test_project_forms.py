"""No dead ends: a project that cannot be opened shows why and the Open/Create forms on every page;
creating is one idempotent step confined to the allowed roots."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import storage
from app import state
from tests.app.conftest import MAIN
from tests.support import write_image_folder

PAGES = [
    "app/page_label.py",
    "app/page_labels.py",
    "app/page_project.py",
    "app/page_progress.py",
    "app/page_target.py",
    "app/page_export.py",
]


def submit(at, form_key: str):
    next(b for b in at.button if b.proto.form_id == form_key).click().run()
    return at


def fresh_app() -> AppTest:
    return AppTest.from_file(MAIN, default_timeout=60).run()


def has_forms(at) -> bool:
    forms = {b.proto.form_id for b in at.button if b.proto.form_id}
    return {"open", "create"} <= forms


def fill_create(at, images: Path, folder: Path, classes: str = "red\ngreen\nblue", **numbers) -> AppTest:
    inputs = [t for t in at.text_input if t.label.startswith(("Image folder", "Project folder"))]
    image_input = next(t for t in inputs if t.label.startswith("Image folder"))
    folder_input = next(t for t in inputs if t.label == "Project folder")
    image_input.set_value(str(images))
    folder_input.set_value(str(folder))
    next(t for t in at.text_area if t.label.startswith("Classes, one per line")).set_value(classes)
    for name, value in numbers.items():
        at.number_input(key=f"c-{name}").set_value(value)
    return submit(at, "create")


@pytest.mark.parametrize("page", PAGES)
def test_a_broken_remembered_project_shows_why_and_the_forms_on_every_page(tmp_path, page):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "project.db").write_bytes(b"")
    state.remember_project(broken)
    at = fresh_app()
    if page != "app/page_label.py":
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("cannot be opened" in e.value and "is empty \\(0 bytes\\)" in e.value for e in at.error)
    assert has_forms(at)
    assert (broken / "project.db").read_bytes() == b""  # never written


def test_a_project_broken_under_an_open_session_is_reported_not_replaced(open_app, project):
    at = open_app("app/page_progress.py")
    project.db_path.write_bytes(b"garbage " * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{project.db_path}{suffix}").unlink(missing_ok=True)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("not a SQLite file" in e.value for e in at.error)
    assert has_forms(at)
    assert at.session_state["project_dir"] == str(project.root)  # not silently swapped for the demo


def test_an_error_raised_under_a_page_ends_in_the_forms(open_app, project, monkeypatch):
    at = open_app("app/page_progress.py")

    def full(*_args, **_kwargs):
        raise storage.UnavailableError("the disk holding the project is full; free some space and try again")

    monkeypatch.setattr(storage, "list_rounds", full)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("is full" in e.value for e in at.error)
    assert has_forms(at)


def test_folders_outside_the_allowed_roots_are_refused(tmp_path, monkeypatch):
    inside = tmp_path / "inside"
    outside = tmp_path / "outside"
    write_image_folder(outside / "images", per_class=2, flat=True)
    monkeypatch.setenv(state.ENV_ROOTS, str(inside))
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    at.text_input[0].set_value(str(outside))
    submit(at, "open")
    assert any("outside the folders this server may use" in e.value for e in at.error)
    fill_create(at, outside / "images", inside / "p")
    assert any("image folder" in e.value and "outside the folders" in e.value for e in at.error)
    assert not (inside / "p").exists()
    link = inside / "link"
    inside.mkdir(exist_ok=True)
    link.symlink_to(outside / "images")  # a link inside that leads outside is outside
    fill_create(at, link, inside / "p")
    assert any("outside the folders" in e.value for e in at.error)
    assert not (inside / "p").exists()


def test_an_empty_folder_is_refused_before_anything_is_created(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    fill_create(at, tmp_path / "empty", tmp_path / "p")
    assert any("no images in" in e.value for e in at.error)
    assert not (tmp_path / "p").exists()


def test_settings_left_empty_are_fitted_to_the_folder(tmp_path):
    write_image_folder(tmp_path / "images", per_class=4, flat=True)  # 12 images
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    fill_create(at, tmp_path / "images", tmp_path / "p", round_size=4)
    assert not at.error, [e.value for e in at.error]
    settings = storage.load_settings(storage.open_project(tmp_path / "p"))
    # storage.fit_to_pool: the budget leaves images for the last round to choose from; the typed round size kept
    assert (settings.validation_size, settings.budget, settings.initial_size, settings.round_size) == (2, 5, 4, 4)
    assert any("fitted to the 12 usable images" in c.value for c in at.caption)


def test_the_round_size_left_empty_is_fitted_too(tmp_path):
    write_image_folder(tmp_path / "images", per_class=34, flat=True)  # 102 images
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    assert at.number_input(key="c-round_size").value is None  # "fit to the folder"
    fill_create(at, tmp_path / "images", tmp_path / "p")
    assert not at.error, [e.value for e in at.error]
    settings = storage.load_settings(storage.open_project(tmp_path / "p"))
    assert (settings.validation_size, settings.budget, settings.round_size, settings.initial_size) == (21, 48, 5, 5)


def test_creating_again_finishes_a_half_made_project(tmp_path):
    """A tab closed during Create left a project with no first batch; creating again finishes it."""
    write_image_folder(tmp_path / "images", per_class=4, flat=True)
    half = storage.create_project(
        tmp_path / "p",
        storage.Settings(image_root=str(tmp_path / "images"), classes=("red", "green", "blue"), budget=500),
    )  # does not fit 12
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    fill_create(at, tmp_path / "images", tmp_path / "p")
    assert not at.error, [e.value for e in at.error]
    assert any("half made: finishing it" in i.value for i in at.info)
    assert storage.item_counts(half)["ok"] == 12
    assert storage.current_round(half) is not None
    assert storage.load_settings(half).budget <= 12
    assert at.session_state["project_dir"] == str(half.root)
    fill_create(at, tmp_path / "images", tmp_path / "p")  # a finished project is not made twice
    assert any("already holds this project; open it instead" in e.value for e in at.error)


def test_a_half_made_project_opened_is_finished_from_the_label_page(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "images", per_class=4, flat=True)
    half = storage.create_project(
        tmp_path / "p",
        storage.Settings(
            image_root=str(tmp_path / "images"),
            classes=("red", "green", "blue"),
            budget=6,
            initial_size=3,
            round_size=3,
        ),
    )
    monkeypatch.setenv(state.ENV_PROJECT, str(half.root))
    at = fresh_app()
    at.button(key="finish-setup").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(storage.round_items(half, storage.current_round(half).id)) == 3  # the typed settings kept
    assert storage.load_settings(half).budget == 6


# ---------------------------------------------------------------- images that carry labels


def labeled_folder(root: Path, unlabeled: int = 0) -> dict[str, str]:
    """red/ green/ blue/ with 4 images each, and `unlabeled` more directly in `root` (distinct pixels)."""
    truth = write_image_folder(root, per_class=4)
    if unlabeled:
        write_image_folder(root, classes=1, per_class=unlabeled, flat=True, seed=9)
    return truth


def create_with_labels(at, images: Path, folder: Path, source: str, label_file: str = "", classes: str = ""):
    at.selectbox(key="c-labels").set_value(source)
    at.text_input(key="c-label-file").set_value(label_file)
    return fill_create(at, images, folder, classes, proxy_steps=30)


def test_class_subfolders_give_the_classes_and_the_first_batch_comes_from_a_proxy_trained_on_them(tmp_path):
    from engine.worker import run_worker

    truth = labeled_folder(tmp_path / "images", unlabeled=12)
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    create_with_labels(at, tmp_path / "images", tmp_path / "p", "class subfolders")
    assert not at.exception and not at.error, [e.value for e in at.error]
    project = storage.open_project(tmp_path / "p")
    assert storage.class_names(project) == ["blue", "green", "red"]  # the subfolder names
    assert any("Imported 12 labels: blue 4, green 4, red 4." in c.value for c in at.code)
    labeled = storage.current_labels(project)
    paths = {item.id: item.path for item in storage.usable_items(project)}
    assert {paths[i]: name for i, name in labeled.items()} == truth
    assert {item.source for item in storage.labeled_items(project) if item.class_name} == {"imported"}
    # round 0 stands for the imported labels; the first batch to label is queued from a proxy trained on them
    training = storage.training_labels(project)  # the imported labels less any on the validation sample
    [start] = storage.list_rounds(project)
    assert (start.strategy, start.n_labeled, storage.round_items(project, start.id)) == ("imported", len(training), [])
    assert any(f"proxy trained on the {len(training)} labels" in s.value for s in at.success)
    [job] = storage.active_jobs(project, "round")
    assert run_worker(project.root, once=True) == 1
    assert storage.get_job(project, job.id).state == "done", storage.get_job(project, job.id).error
    first = storage.current_round(project)
    assert first.index == 1 and first.strategy == storage.load_settings(project).strategy
    assert first.train_s is not None and first.n_labeled == len(training)  # trained on the imported labels
    batch = {item_id for item_id, _ in storage.round_items(project, first.id)}
    assert batch and not batch & set(labeled)  # only unlabeled images are asked
    for page in ("app/page_label.py", "app/page_labels.py", "app/page_progress.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.message for e in at.exception])


def test_a_project_whose_every_image_is_labeled_says_nothing_is_left_to_label(tmp_path):
    labeled_folder(tmp_path / "images")
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    create_with_labels(at, tmp_path / "images", tmp_path / "p", "class subfolders", classes="red\ngreen\nblue")
    assert not at.exception and not at.error, [e.value for e in at.error]
    project = storage.open_project(tmp_path / "p")
    assert storage.class_names(project) == ["red", "green", "blue"]  # typed classes win
    assert len(storage.current_labels(project)) == 12
    assert storage.validation_labels(project)  # drawn from every image first: labeled at once
    assert any("nothing is left to label" in s.value for s in at.success)
    assert not storage.active_jobs(project, "round")
    at.switch_page("app/page_label.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("nothing left to choose from" in s.value for s in at.success)


def test_a_label_file_with_problems_creates_the_project_without_labels_and_without_a_batch(tmp_path):
    truth = labeled_folder(tmp_path / "images", unlabeled=4)
    rows = [f"{path},{name}" for path, name in truth.items()]
    (tmp_path / "labels.csv").write_text("path,class\n" + "\n".join([*rows, "red/img_0000.png,green", ""]))
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    create_with_labels(
        at, tmp_path / "images", tmp_path / "p", "a CSV or JSONL file", str(tmp_path / "labels.csv"), "red\ngreen\nblue"
    )
    assert not at.exception, [e.message for e in at.exception]
    assert any("The labels were not imported (nothing was)" in e.value for e in at.error)
    [report] = [c for c in at.code if "Nothing was imported" in c.value]
    assert "Conflicting rows (1 image)" in report.value and "red/img_0000.png is 'red' and 'green'" in report.value
    project = storage.open_project(tmp_path / "p")
    assert storage.current_labels(project) == {} and storage.current_round(project) is None


def test_a_label_file_that_is_not_one_creates_nothing(tmp_path):
    labeled_folder(tmp_path / "images")
    (tmp_path / "labels.csv").write_bytes(b"path;class\nred/img_0000.png;red\n")  # not comma-separated
    at = fresh_app()
    at.switch_page("app/page_project.py").run()
    create_with_labels(at, tmp_path / "images", tmp_path / "p", "a CSV or JSONL file", str(tmp_path / "labels.csv"))
    assert any("Not created" in e.value and "no 'path' column" in e.value for e in at.error)
    assert not (tmp_path / "p").exists()
    create_with_labels(at, tmp_path / "images", tmp_path / "p", "a CSV or JSONL file", "/etc/hostname")
    assert any("label file" in e.value and "outside the folders" in e.value for e in at.error)
    (tmp_path / "flat").mkdir()
    write_image_folder(tmp_path / "flat", per_class=2, flat=True)
    create_with_labels(at, tmp_path / "flat", tmp_path / "p", "class subfolders")
    assert any("class subfolders need one folder per class" in e.value for e in at.error)
    assert not (tmp_path / "p").exists()
