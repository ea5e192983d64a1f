"""Label page: keyboard-mapped buttons commit labels, undo appends, grid tiles save, validation is marked."""
from __future__ import annotations

import storage
from app import labeling


def batch_ids(project):
    return [item_id for item_id, _ in storage.round_items(project, storage.current_round(project).id)]


def focused_name(at) -> str:
    return at.markdown[0].value.split("**")[1].replace("\\", "")


def item_named(project, name: str) -> int:
    return next(i for i in batch_ids(project) if storage.get_item(project, i).path == name)


def test_buttons_show_their_keys_and_the_key_script_is_loaded(open_app):
    at = open_app()
    assert [at.button(key=f"class-{i}").label for i in range(3)] == ["red `1`", "green `2`", "blue `3`"]
    assert [at.button(key=k).label for k in ("skip", "undo", "prev", "next")] == [
        "Skip `S`", "Undo `U`", "Previous `←`", "Next `→`"]
    scripts = [h.proto.body for h in at.get("html") if "__proxyLabelerKeys" in h.proto.body]
    assert len(scripts) == 1 and "backspace" in scripts[0]


def test_label_is_committed_and_shown_saved_then_undone(open_app, project):
    at = open_app()
    first = item_named(project, focused_name(at))
    at.button(key="class-1").click().run()
    assert storage.current_label(project, first) == "green"
    assert any("green" in c.value and "✓" in c.value for c in at.caption)
    assert focused_name(at) != storage.get_item(project, first).path   # moved on to the next image

    at.button(key="undo").click().run()
    assert storage.current_label(project, first) is None
    assert focused_name(at) == storage.get_item(project, first).path    # back on the undone image
    kinds = [e.kind for e in storage.label_history(project, first)]
    assert kinds == ["label", "clear"]                                   # undo appends, never deletes


def test_skip_and_arrow_navigation(open_app, project):
    at = open_app()
    first = item_named(project, focused_name(at))
    at.button(key="skip").click().run()
    assert storage.current_label(project, first) is storage.SKIP
    at.button(key="prev").click().run()
    assert focused_name(at) == storage.get_item(project, first).path
    assert "skipped" in at.markdown[1].value


def test_grid_tiles_save_labels_and_skips(open_app, project):
    at = open_app()
    at.segmented_control(key="view").set_value("Grid").run()
    ids = batch_ids(project)
    assert len(at.pills) == len(ids)
    at.pills[0].set_value(2).run()            # class position 2 = blue
    at.pills[1].set_value(-1).run()           # skip
    assert storage.current_label(project, ids[0]) == "blue"
    assert storage.current_label(project, ids[1]) is storage.SKIP
    assert not at.exception


def test_validation_items_are_labeled_the_same_way_and_marked(open_app, project):
    at = open_app()
    at.segmented_control(key="source").set_value("Validation").run()
    assert "validation" in at.markdown[1].value
    shown = focused_name(at)
    val = next(i for i in storage.validation_ids(project) if storage.get_item(project, i).path == shown)
    at.button(key="class-0").click().run()
    assert storage.validation_labels(project) == {val: 0}
    assert val not in storage.training_labels(project)


def test_other_tab_labels_are_seen_on_next_action(open_app, project):
    first_tab, second_tab = open_app(), open_app()
    item = item_named(project, focused_name(first_tab))
    first_tab.button(key="class-0").click().run()
    second_tab.run()
    assert focused_name(second_tab) != storage.get_item(project, item).path   # it skips what tab 1 labeled
    texts = [bar.proto.text for bar in second_tab.get("progress")]
    assert any("1 of 4 done" in text for text in texts)


def test_why_chosen_captions():
    assert labeling.why_chosen("random", 0.0) == "random pick"
    assert labeling.why_chosen("least_confidence", 0.25) == "proxy 75% sure"
    assert labeling.why_chosen("kcenter", 1.5) == "distance 1.50"
    assert labeling.why_chosen("kcenter", None) == "first pick"
    assert [labeling.class_key(i) for i in (0, 8, 9, 10)] == ["1", "9", "0", None]
