"""Annotators on one batch are kept apart (app/claims.py): each holds the next open images from where
they are, and the labeling view is told which images others hold. The view's side (moving past them):
tests/app/test_labeler_browser.py."""

from __future__ import annotations

import json

import pytest

from app import claims, labeler, labeling
from tests.support import make_app_project, write_image_folder

ORDER = list(range(1, 21))
ROOT = "/projects/a"


def hold(holds, holder, after=None, open_ids=None, now=0.0, **kw):
    return holds.hold(ROOT, holder, holder, ORDER, set(ORDER) if open_ids is None else open_ids, after, now=now, **kw)


def test_two_annotators_hold_different_images_and_each_is_told_the_others():
    holds = claims.Holds()
    assert hold(holds, "ana", count=5) == {}
    assert hold(holds, "bob", count=5) == dict.fromkeys(range(1, 6), "ana")
    assert hold(holds, "ana", count=5) == dict.fromkeys(range(6, 11), "bob")  # ana keeps 1-5


def test_a_hold_moves_on_with_the_annotator_and_skips_labeled_and_held_images():
    holds = claims.Holds()
    hold(holds, "bob", after=5, count=3)  # bob holds 6, 7, 8
    # ana labeled 1-4 and was last at 4: she holds 5, then 9 and 10 (6-8 are bob's)
    others = hold(holds, "ana", after=4, open_ids=set(ORDER) - {1, 2, 3, 4}, count=3)
    assert others == dict.fromkeys([6, 7, 8], "bob")
    assert hold(holds, "bob", after=8, count=5) == dict.fromkeys([5, 9, 10], "ana")  # bob: 11-15 now


def test_a_hold_wraps_around_and_releases_what_it_no_longer_needs():
    holds = claims.Holds()
    hold(holds, "ana", after=18, count=4)  # 19, 20, then 1, 2
    assert hold(holds, "bob", count=3) == dict.fromkeys([19, 20, 1, 2], "ana")
    hold(holds, "ana", after=5, count=2)  # ana jumped to 6 and 7: 19, 20, 1 and 2 are free again
    assert hold(holds, "bob", count=3) == {6: "ana", 7: "ana"}


def test_a_hold_lapses_when_its_annotator_is_gone():
    holds = claims.Holds()
    hold(holds, "ana", count=3, now=0.0)
    assert hold(holds, "bob", count=3, now=claims.TTL_S - 1) == dict.fromkeys([1, 2, 3], "ana")
    assert hold(holds, "bob", count=3, now=claims.TTL_S + 1) == {}  # ana's tab closed two minutes ago


def test_a_named_session_gives_up_what_it_held_before_it_had_a_name():
    holds = claims.Holds()
    holds.hold(ROOT, "tab:x", "another annotator", ORDER, set(ORDER), count=3, now=0)
    assert hold(holds, "bob", count=2) == dict.fromkeys([1, 2, 3], "another annotator")
    holds.hold(ROOT, claims.annotator_key("Ana"), "Ana", ORDER, set(ORDER), count=2, release="tab:x", now=0)
    assert hold(holds, "bob", count=2) == {1: "Ana", 2: "Ana"}  # 3 is free again


def test_one_name_in_two_tabs_is_one_annotator():
    assert claims.annotator_key(" Ana ") == claims.annotator_key("ana")


def test_everything_held_leaves_nothing_to_hold_and_other_projects_are_apart():
    holds = claims.Holds()
    hold(holds, "ana", count=20)
    assert len(hold(holds, "bob", count=5)) == 20  # bob's view then goes to ana's images: nothing else is open
    assert holds.hold("/projects/b", "bob", "bob", ORDER, set(ORDER), now=0.0) == {}


# ---------------------------------------------------------------- the Label page, two sessions


@pytest.fixture
def big_batch(tmp_path, monkeypatch):
    from app import state

    folder = tmp_path / "images"
    write_image_folder(folder, per_class=12, flat=True)
    project = make_app_project(tmp_path / "project", folder, initial_size=30, budget=30)
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    return project


def view_items(at) -> list[dict]:
    [view] = at.get("bidi_component")
    return json.loads(view.proto.json)["items"]


def session(acks=None):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import MAIN

    at = AppTest.from_file(MAIN, default_timeout=60)
    if acks is not None:
        at.session_state[labeler.ACKS] = acks
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_two_sessions_opening_the_batch_at_once_are_given_different_images(big_batch):
    first_tab = session()
    assert not any(i["heldBy"] for i in view_items(first_tab))  # nobody else was there
    second = view_items(session())
    first = view_items(first_tab.run())
    held_from_first = [i["id"] for i in first if i["heldBy"]]
    held_from_second = [i["id"] for i in second if i["heldBy"]]
    order = [i["id"] for i in first]
    assert held_from_first == order[claims.HOLD : 2 * claims.HOLD]  # the second's
    assert held_from_second == order[: claims.HOLD]
    assert {i["heldBy"] for i in first + second if i["heldBy"]} == {"another annotator"}


def test_an_annotator_holds_the_images_after_the_last_one_labeled(big_batch):
    project = big_batch
    ana = session()
    order = [i["id"] for i in view_items(ana)]
    acks: dict = {}
    label = {"seq": 1, "action": "label", "items": [order[4]], "value": "red", "how": "typed", "annotator": "ana"}
    assert labeling.apply_events(project, {"client": "tab-ana", "events": [label]}, acks) == 1
    assert acks["tab-ana"]["annotator"] == "ana" and acks["tab-ana"]["last_item"] == order[4]
    ana.session_state[labeler.ACKS] = acks  # what the view's label event leaves in her session
    ana.run()
    bob = view_items(session())
    held = {i["id"]: i["heldBy"] for i in bob if i["heldBy"]}
    # her session dropped what it held unnamed (the first ten) for the ten open ones after her label
    assert held == dict.fromkeys(order[5 : 5 + claims.HOLD], "ana")
    assert not any(i["heldBy"] for i in view_items(ana.run()) if i["id"] in held)  # hers are not marked to her


def test_a_session_that_may_not_label_holds_nothing_and_is_told_the_others():
    holds = claims.Holds()
    hold(holds, "ana", count=3)
    assert hold(holds, "viewer", open_ids=set()) == dict.fromkeys([1, 2, 3], "ana")
    assert hold(holds, "bob", count=3) == dict.fromkeys([1, 2, 3], "ana")  # the viewer held none


def test_the_label_browser_is_no_shared_worklist():
    entries = [labeling.Entry(i, f"{i}.png", None, False, None, False) for i in ORDER]
    assert labeler.held_by_others(ROOT, "Browser", entries, "ana") == {}


def test_signed_in_annotators_hold_as_themselves_from_their_first_render(big_batch, monkeypatch):
    from app import auth, state
    from storage import accounts

    users = {name: accounts.add_user(name, "admin", "a long enough password", actor="test") for name in ("amy", "cy")}

    def as_user(name):
        monkeypatch.setattr(state, "current_session", lambda: auth.Session(users[name]))

    as_user("amy")
    amy = session()
    order = [i["id"] for i in view_items(amy)]
    as_user("cy")
    cy = view_items(session())
    assert {i["id"]: i["heldBy"] for i in cy if i["heldBy"]} == dict.fromkeys(order[: claims.HOLD], "amy")
    as_user("amy")
    assert {i["id"]: i["heldBy"] for i in view_items(amy.run()) if i["heldBy"]} == dict.fromkeys(
        order[claims.HOLD : 2 * claims.HOLD], "cy"
    )
    assert not any(i["heldBy"] == "amy" for i in view_items(session()))  # amy's second tab: the same hold


def test_holders_are_who_holds_images_now():
    holds = claims.Holds()
    hold(holds, "ana", count=3, now=0.0)
    hold(holds, "bob", count=2, now=100.0)
    assert holds.holders(ROOT, now=100.0) == {"ana": 3, "bob": 2}
    assert holds.holders(ROOT, now=claims.TTL_S + 50) == {"bob": 2}  # ana's lapsed
    assert holds.holders("/projects/b", now=0.0) == {}
