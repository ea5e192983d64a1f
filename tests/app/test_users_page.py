"""Users page (admins only): add a user, change role, access and password, two admins on one user, the
last admin kept, an annotator refused, project members, the audit trail and its CSV.

The signed-in session is faked: `app.state.current_session` returns the user as accounts.db holds it
now (AppTest runs the script in this process); the accounts live in the test's PROXY_LABELER_HOME.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.runtime import context as st_context
from streamlit.testing.v1 import AppTest

from app import auth, state
from storage import accounts
from tests.app.conftest import MAIN

PAGE = "app/page_users.py"  # as the router names it
PASSWORD = "correct horse battery"


@pytest.fixture
def people() -> None:
    """ada (the only admin) and carol (annotator)."""
    accounts.add_user("ada", "admin", PASSWORD, actor="test")
    accounts.add_user("carol", "annotator", PASSWORD, actor="test")


ADDRESS = "10.0.0.7"


def sign_in(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The session of `name`, connected from ADDRESS (AppTest's mock runtime has no real client)."""
    monkeypatch.setattr(state, "current_session", lambda: auth.Session(accounts.get_user(name)))
    monkeypatch.setattr(st_context, "_get_client_context", lambda: SimpleNamespace(remote_ip=ADDRESS))


@pytest.fixture
def as_ada(people, open_app, monkeypatch):
    sign_in(monkeypatch, "ada")
    return open_app(PAGE)


def submit(at: AppTest, form_key: str) -> AppTest:
    next(b for b in at.button if b.proto.form_id == form_key).click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def users_shown(at: AppTest) -> dict[str, dict]:
    table = at.tabs[0].dataframe[0].value
    return {row["name"]: row for row in table.to_dict("records")}


def actions(action: str) -> list[accounts.AuditEntry]:
    return [entry for entry in accounts.audit_entries() if entry.action == action]


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def test_an_admin_adds_a_user_and_sees_it_in_the_table(as_ada):
    at = as_ada
    assert set(users_shown(at)) == {"ada", "carol"}
    assert users_shown(at)["ada"]["projects"] == "every project"
    at.text_input(key="add-name").set_value("dave")
    at.selectbox(key="add-role").set_value("viewer")
    at.text_input(key="add-password").set_value(PASSWORD)
    at.text_input(key="add-password-again").set_value(PASSWORD)
    submit(at, "add-user")
    assert not at.error, errors(at)
    assert any("Added dave" in s.value for s in at.success)
    assert users_shown(at)["dave"]["role"] == "viewer"  # the table drawn in the same run shows it
    user = accounts.get_user("dave")
    assert user is not None and user.role == "viewer"
    assert accounts.authenticate("dave", PASSWORD) is not None
    [added] = [e for e in actions("user.add") if e.target == "dave"]
    assert (added.actor, added.address) == ("ada", ADDRESS)


def test_a_too_short_or_mistyped_password_is_refused_inline_and_nothing_is_added(as_ada):
    at = as_ada
    for first, again, why in (("short", "short", "too short"), (PASSWORD, PASSWORD + "x", "passwords differ")):
        at.text_input(key="add-name").set_value("dave")
        at.text_input(key="add-password").set_value(first)
        at.text_input(key="add-password-again").set_value(again)
        submit(at, "add-user")
        assert why in errors(at) and "Not saved" in errors(at)
        assert accounts.get_user("dave") is None
        assert "dave" not in users_shown(at)
    assert not [e for e in actions("user.add") if e.target == "dave"]


def test_an_admin_changes_a_role_and_the_table_shows_it(as_ada):
    at = as_ada
    at.selectbox(key="edit-user").set_value("carol").run()
    at.selectbox(key="role-carol").set_value("viewer")
    submit(at, "user-role")
    assert not at.error, errors(at)
    assert accounts.get_user("carol").role == "viewer"
    assert users_shown(at)["carol"]["role"] == "viewer"
    [entry] = actions("user.role")
    assert (entry.actor, entry.target, entry.detail) == ("ada", "carol", "annotator -> viewer")


def test_an_admin_disables_a_user_and_sets_a_password(as_ada):
    at = as_ada
    at.selectbox(key="edit-user").set_value("carol").run()
    at.button(key="access-carol").click().run()
    assert not at.error, errors(at)
    assert not accounts.get_user("carol").enabled
    assert users_shown(at)["carol"]["enabled"] is False
    at.text_input(key="new-password").set_value("a new password")
    at.text_input(key="new-password-again").set_value("a new password")
    submit(at, "user-password")  # a second change from the same page: it is based on the table as redrawn
    assert not at.error, errors(at)
    assert accounts.authenticate("carol", "a new password") is not None
    assert [e.actor for e in actions("user.disable") + actions("user.passwd")] == ["ada", "ada"]


def test_two_admins_editing_the_same_user_the_second_is_refused_and_nothing_changes(as_ada):
    at = as_ada
    at.selectbox(key="edit-user").set_value("carol").run()
    at.selectbox(key="role-carol").set_value("admin")
    accounts.set_role("carol", "viewer", actor="bob")  # bob, in his own browser, meanwhile
    submit(at, "user-role")
    assert "changed by someone else since you opened this page" in errors(at)
    assert "Not saved" in errors(at)
    assert accounts.get_user("carol").role == "viewer"  # bob's change stands
    assert users_shown(at)["carol"]["role"] == "viewer"  # and the redrawn table shows it
    [refused] = actions("user.role.refused")
    assert (refused.actor, refused.target) == ("ada", "carol")

    submit(at, "user-role")  # ada looked again and redoes it: now it holds
    assert not at.error, errors(at)
    assert accounts.get_user("carol").role == "admin"


def test_demoting_or_disabling_the_last_admin_is_refused_inline(as_ada):
    at = as_ada
    at.selectbox(key="edit-user").set_value("ada").run()
    at.selectbox(key="role-ada").set_value("annotator")
    submit(at, "user-role")
    assert "only enabled admin" in errors(at) and "Not saved" in errors(at)
    at.button(key="access-ada").click().run()
    assert "only enabled admin" in errors(at)
    ada = accounts.get_user("ada")
    assert ada.role == "admin" and ada.enabled
    assert not actions("user.role") and not actions("user.disable")


def test_an_annotator_opening_the_page_is_refused_sees_no_users_and_it_is_audited(people, project, monkeypatch):
    monkeypatch.setenv(state.ENV_PROJECT, str(project.root))
    sign_in(monkeypatch, "carol")
    # the page itself, not through the router (which leaves it out of an annotator's pages)
    at = AppTest.from_file(str(Path(MAIN).parent / PAGE), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "carol is an annotator; only admins may do this" in errors(at)
    assert not at.dataframe and not at.tabs
    [refused] = actions("refused")
    assert (refused.actor, refused.target) == ("carol", "page users")


def members(at: AppTest):
    return at.tabs[2].multiselect[0]


def test_members_of_the_open_project_are_saved_and_audited(as_ada, project):
    at = as_ada
    assert members(at).options == ["carol"]  # admins open every project: they are not offered
    members(at).set_value(["carol"])
    submit(at, "members")
    assert not at.error, errors(at)
    assert any("Members saved: added carol" in s.value for s in at.success)
    assert accounts.members(project.root) == ["carol"]
    assert users_shown(at)["carol"]["projects"] == accounts.project_key(project.root)
    [added] = actions("member.add")
    assert (added.actor, added.target, added.detail) == ("ada", "carol", accounts.project_key(project.root))

    assert members(at).value == ["carol"]
    members(at).set_value([])  # a second change from the same page, on the list as saved
    submit(at, "members")
    assert not at.error, errors(at)
    assert accounts.members(project.root) == []
    assert [e.actor for e in actions("member.remove")] == ["ada"]


def test_members_changed_by_another_admin_meanwhile_are_not_overwritten(as_ada, project):
    accounts.add_user("dave", "viewer", PASSWORD, actor="test")
    at = as_ada
    at.run()
    members(at).set_value(["carol"])
    accounts.set_member(project.root, "dave", True, actor="bob")  # bob, in his own browser, meanwhile
    submit(at, "members")
    assert "changed by someone else since you opened this page" in errors(at)
    assert accounts.members(project.root) == ["dave"]  # ada's list (without dave) did not remove him
    assert members(at).value == ["dave"]  # and the page shows the list as it is now

    members(at).set_value(["carol", "dave"])  # redone on the list as it is
    submit(at, "members")
    assert not at.error, errors(at)
    assert accounts.members(project.root) == ["carol", "dave"]


def test_the_audit_tab_shows_filters_and_downloads_the_trail(as_ada):
    at = as_ada
    shown = at.tabs[3].dataframe[0].value
    assert {"user.add"} <= set(shown["action"])
    assert list(shown.columns) == ["time", "actor", "action", "target", "detail", "address"]
    at.text_input(key="audit-filter").set_value("carol").run()
    assert set(at.tabs[3].dataframe[0].value["target"]) == {"carol"}

    [download] = at.tabs[3].get("download_button")
    assert download.label == "Audit trail as CSV"
    download.click().run()  # the click is recorded through the button's on_click
    assert not at.exception, [e.message for e in at.exception]
    [export] = actions("export.audit")
    assert export.actor == "ada"

    from app.page_users import audit_csv

    rows = list(csv.reader(io.StringIO(audit_csv())))
    assert rows[0] == list(accounts.AUDIT_COLUMNS)
    assert {row[2] for row in rows[1:]} >= {"user.add", "export.audit"}
