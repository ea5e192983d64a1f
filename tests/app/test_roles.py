"""Roles, members and the audit on the server side (app/state.py, app/images.py), without a browser:
the signed-in session is set the way app.auth finds it (state.current_session); the whole server,
websocket included, is tested in test_auth_server.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import storage
from app import auth, images, labeling, state
from storage import accounts
from tests.app.conftest import MAIN

PASSWORD = "a long enough password"


@pytest.fixture
def people(tmp_path):
    """alice admin, bob annotator (a member of the project), vera viewer (a member), dave annotator."""
    made = {}
    for name, role in (("alice", "admin"), ("bob", "annotator"), ("vera", "viewer"), ("dave", "annotator")):
        made[name] = accounts.add_user(name, role, PASSWORD, actor="test")
    return made


def signed_in(monkeypatch, user):
    monkeypatch.setattr(state, "current_session", lambda: auth.Session(user))


def test_without_accounts_everything_is_allowed_and_the_typed_name_is_kept(project):
    assert state.current_session() is None
    assert state.can("manage") and state.refusal("manage") is None
    assert state.annotator_for(" ana ") == "ana"
    assert state.may_open(project.root) and state.member_projects() == []


def test_each_role_may_do_only_its_own(monkeypatch, people):
    expected = {
        "alice": {"read", "label", "manage"},
        "bob": {"read", "label"},
        "vera": {"read"},
    }
    for name, allowed in expected.items():
        signed_in(monkeypatch, people[name])
        assert {capability for capability in state.CAN if state.can(capability)} == allowed, name
    signed_in(monkeypatch, people["vera"])
    assert state.refusal("label") == "not done: vera is a viewer; only admins or annotators may do this"


def test_a_label_is_saved_under_the_session_user_whatever_name_the_browser_sends(monkeypatch, project, people):
    [first, second] = [item_id for item_id, _ in storage.round_items(project, storage.current_round(project).id)][:2]
    signed_in(monkeypatch, people["bob"])
    acks: dict = {}
    outbox = {"client": "tab", "events": [{"seq": 1, "action": "label", "items": [first], "value": "red",
                                           "how": "typed", "annotator": "mallory"}]}  # fmt: skip
    assert labeling.apply_events(project, outbox, acks) == 1
    assert storage.label_history(project, first)[-1].annotator == "bob"
    signed_in(monkeypatch, people["vera"])  # a viewer's events are refused, and say why
    outbox = {"client": "tab2", "events": [{"seq": 1, "action": "label", "items": [second], "value": "red",
                                            "how": "typed", "annotator": "vera"}]}  # fmt: skip
    assert labeling.apply_events(project, outbox, acks) == 0
    assert storage.current_label(project, second) is None
    assert "not saved: vera is a viewer" in acks["tab2"]["errors"][0]["message"]


def test_members_open_their_projects_only(monkeypatch, project, people, tmp_path):
    accounts.set_member(project.root, "bob", True, actor="alice")
    signed_in(monkeypatch, people["bob"])
    assert state.may_open(project.root) and not state.may_open(tmp_path / "elsewhere")
    assert state.member_projects() == [str(project.root.resolve())]
    signed_in(monkeypatch, people["alice"])
    assert state.may_open(tmp_path / "elsewhere") and state.member_projects() == []  # admins open every one


def test_an_image_token_serves_only_its_user_while_they_may_open_the_project(project, people):
    root = str(project.root)
    accounts.set_member(root, "bob", True, actor="alice")
    bobs = images.token_for(root, people["bob"])
    assert bobs != images.token_for(root, people["alice"]) != images.token_for(root)
    assert images.token_for(root, people["bob"]) == bobs  # one per user and project
    grant = images._tokens[bobs]
    assert images.refused(grant, people["bob"]) is None
    for other in (people["alice"], people["dave"], None):
        assert images.refused(grant, other) == "this image link belongs to another session: reload the page"
    assert images.refused(images._tokens[images.token_for(root)], people["bob"]) is not None  # made before sign-in
    accounts.set_member(root, "bob", False, actor="alice")
    assert images.refused(grant, people["bob"]) == "bob is not a member of this project"
    response = images.answer(bobs, 1, "grid", people["bob"])
    assert response.status_code == 403 and b"not a member" in response.body


def test_a_refused_page_action_stops_the_page_and_is_audited(monkeypatch, project, people):
    signed_in(monkeypatch, people["bob"])
    at = AppTest.from_file(str(Path(MAIN).parent / "app" / "page_export.py"), default_timeout=60).run()
    assert [e.value for e in at.error] == ["Not done: bob is an annotator; only admins may do this."]
    assert not at.get("download_button")
    [entry] = [e for e in accounts.audit_entries() if e.action == "refused"]
    assert (entry.actor, entry.target) == ("bob", "page export")


def test_settings_classes_and_downloads_go_to_the_audit_trail(monkeypatch, open_app, project, people):
    signed_in(monkeypatch, people["alice"])
    at = open_app("app/page_project.py")
    at.number_input(key="s-round_size").set_value(6)
    next(b for b in at.button if b.proto.form_id == "settings").click().run()
    assert not at.error, [e.value for e in at.error]
    at.text_area[0].set_value("red\ngreen\nblue\nyellow")
    next(b for b in at.button if b.proto.form_id == "classes").click().run()
    entries = {e.action: e for e in accounts.audit_entries()}
    assert entries["settings.save"].actor == "alice" and "round_size: 4 -> 6" in entries["settings.save"].detail
    assert "'yellow'" in entries["classes.save"].detail
    csv_bytes = state.audited(lambda: b"x", "export.labels_csv", str(project.root))()
    assert csv_bytes == b"x" and accounts.audit_entries()[0].action == "export.labels_csv"
