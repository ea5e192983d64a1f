"""Accounts of a shared server (storage/accounts.py) and the `proxy-labeler users` command."""

from __future__ import annotations

import io
import sqlite3
import stat

import pytest

from storage import accounts
from storage.accounts import AccountError

PASSWORD = "correct horse battery"


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv(accounts.ENV_HOME, str(folder))
    return folder


def test_no_file_means_no_accounts_and_asking_creates_nothing(home):
    assert not accounts.has_accounts()
    assert not home.exists()


def test_a_user_signs_in_with_their_password_only(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="test")
    assert accounts.has_accounts()
    user = accounts.authenticate("alice", PASSWORD)
    assert user is not None and user.role == "admin" and user.enabled
    assert accounts.authenticate("alice", PASSWORD + "x") is None
    assert accounts.authenticate("nobody", PASSWORD) is None
    assert accounts.authenticate("bad name", PASSWORD) is None


def test_passwords_are_argon2_hashes_in_a_file_only_the_owner_reads(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="test")
    path = accounts.accounts_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        [stored] = conn.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


@pytest.mark.parametrize(
    "name", ["", "bob smith", "../etc", "a/b", "a\x00b", "<script>", "é", "-dash", "x" * 65, "tab\tname", "a;b"]
)
def test_odd_user_names_are_refused_with_a_readable_reason(home, name):
    with pytest.raises(AccountError, match=r"user name .* is refused: use 1 to 64 letters"):
        accounts.add_user(name, "annotator", PASSWORD, actor="test")
    assert not accounts.has_accounts()


def test_names_are_unique_ignoring_case_and_roles_and_passwords_are_checked(home):
    accounts.add_user("Alice", "admin", PASSWORD, actor="test")
    with pytest.raises(AccountError, match="exists already"):
        accounts.add_user("alice", "viewer", PASSWORD, actor="test")
    with pytest.raises(AccountError, match="role 'root' is unknown"):
        accounts.add_user("bob", "root", PASSWORD, actor="test")
    with pytest.raises(AccountError, match="too short"):
        accounts.add_user("bob", "viewer", "short", actor="test")
    assert [u.name for u in accounts.list_users()] == ["Alice"]


def test_password_role_and_disable_end_the_users_sessions(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="test")
    accounts.add_user("bob", "annotator", PASSWORD, actor="alice")
    epoch = accounts.get_user("bob").session_epoch
    accounts.set_password("bob", "another password", actor="alice")
    assert accounts.authenticate("bob", PASSWORD) is None
    assert accounts.authenticate("bob", "another password") is not None
    accounts.set_role("bob", "viewer", actor="alice")
    accounts.set_enabled("bob", False, actor="alice")
    bob = accounts.get_user("bob")
    assert bob.role == "viewer" and not bob.enabled and bob.session_epoch == epoch + 3
    assert not accounts.authenticate("bob", "another password").enabled  # the caller refuses, saying why


def test_the_last_enabled_admin_cannot_be_disabled_or_demoted(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="test")
    with pytest.raises(AccountError, match="only enabled admin"):
        accounts.set_enabled("alice", False, actor="test")
    with pytest.raises(AccountError, match="only enabled admin"):
        accounts.set_role("alice", "viewer", actor="test")
    assert accounts.get_user("alice").enabled and accounts.get_user("alice").role == "admin"


def test_changing_a_user_that_does_not_exist_says_so(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="test")
    with pytest.raises(AccountError, match="there is no user 'bob'"):
        accounts.set_enabled("bob", False, actor="alice")


def test_the_audit_trail_records_user_changes_and_is_append_only(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="cli:root")
    accounts.audit("alice", "signin", address="127.0.0.1")
    entries = accounts.audit_entries()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("alice", "signin", ""),
        ("cli:root", "user.add", "alice"),
    ]
    with accounts.opened() as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'mallory'")
    with accounts.opened() as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")
    assert len(accounts.audit_entries()) == 2


# ---------------------------------------------------------------- the command line


def _cli(monkeypatch, argv: list[str], stdin: str = "") -> int:
    from engine.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["users", *argv])


def test_users_command_adds_lists_and_disables(home, monkeypatch, capsys):
    assert _cli(monkeypatch, ["add", "alice", "--role", "admin", "--password-stdin"], PASSWORD + "\n") == 0
    assert _cli(monkeypatch, ["add", "bob", "--role", "annotator", "--password-stdin"], PASSWORD + "\n") == 0
    assert _cli(monkeypatch, ["passwd", "bob", "--password-stdin"], "new password here\n") == 0
    assert _cli(monkeypatch, ["disable", "bob"]) == 0
    capsys.readouterr()
    assert _cli(monkeypatch, ["list"]) == 0
    out = capsys.readouterr().out
    assert "alice\tadmin\tenabled" in out and "bob\tannotator\tdisabled" in out
    actions = [(e.actor.startswith("cli:"), e.action, e.target) for e in accounts.audit_entries()]
    assert actions == [
        (True, "user.disable", "bob"),
        (True, "user.passwd", "bob"),
        (True, "user.add", "bob"),
        (True, "user.add", "alice"),
    ]


def test_users_command_refuses_odd_names_and_asks_for_no_password_without_a_terminal(home, monkeypatch, capsys):
    assert _cli(monkeypatch, ["add", "bob smith", "--role", "admin", "--password-stdin"], PASSWORD) == 2
    assert "user name 'bob smith' is refused" in capsys.readouterr().err
    assert _cli(monkeypatch, ["add", "bob", "--role", "admin"]) == 2
    assert "pass --password-stdin" in capsys.readouterr().err
    assert _cli(monkeypatch, ["add", "bob", "--role", "admin", "--password-stdin"], "") == 2
    assert "too short" in capsys.readouterr().err
    assert not accounts.has_accounts()


# ---------------------------------------------------------------- members, concurrent edits, the audit's CSV


def test_admins_open_every_project_and_others_only_their_own(home, tmp_path):
    alice = accounts.add_user("alice", "admin", PASSWORD, actor="test")
    bob = accounts.add_user("bob", "annotator", PASSWORD, actor="test")
    one, two = tmp_path / "one", tmp_path / "two"
    assert accounts.may_open(alice, one) and not accounts.may_open(bob, one)
    assert accounts.set_member(one, "BOB", True, actor="alice")  # names ignore case
    assert not accounts.set_member(one, "bob", True, actor="alice")  # already a member: nothing changes
    assert accounts.may_open(bob, one) and accounts.may_open(bob, tmp_path / "x" / ".." / "one")
    assert not accounts.may_open(bob, two)
    assert accounts.projects_of("bob") == [str(one.resolve())] and accounts.members(one) == ["bob"]
    assert accounts.set_member(one, "bob", False, actor="alice")
    assert not accounts.may_open(bob, one) and accounts.members(one) == []
    with pytest.raises(AccountError, match="there is no user 'carol'"):
        accounts.set_member(one, "carol", True, actor="alice")
    actions = [(e.action, e.target, e.detail) for e in accounts.audit_entries()][:2]
    assert actions == [("member.remove", "bob", str(one.resolve())), ("member.add", "bob", str(one.resolve()))]


def test_two_admins_editing_the_same_user_the_second_is_refused_and_audited(home):
    accounts.add_user("alice", "admin", PASSWORD, actor="test")
    accounts.add_user("root2", "admin", PASSWORD, actor="test")
    bob = accounts.add_user("bob", "annotator", PASSWORD, actor="test")
    accounts.set_role("bob", "viewer", actor="alice", seen=bob.updated_at)  # alice saw bob as he was
    for change in (
        lambda: accounts.set_enabled("bob", False, actor="root2", seen=bob.updated_at),
        lambda: accounts.set_role("bob", "admin", actor="root2", seen=bob.updated_at),
        lambda: accounts.set_password("bob", "another password", actor="root2", seen=bob.updated_at),
    ):
        with pytest.raises(AccountError, match="bob was changed by someone else since you opened this page"):
            change()
    now = accounts.get_user("bob")
    assert now is not None and now.role == "viewer" and now.enabled and now.session_epoch == 1
    assert accounts.authenticate("bob", PASSWORD) is not None  # the refused password change did nothing
    refused = [(e.actor, e.action) for e in accounts.audit_entries() if e.action.endswith(".refused")]
    assert refused == [
        ("root2", "user.passwd.refused"),
        ("root2", "user.role.refused"),
        ("root2", "user.disable.refused"),
    ]


def test_the_audit_trail_as_csv_neutralizes_formulas(home):
    import csv

    accounts.audit("alice", "export.csv", "/p", '=HYPERLINK("http://x")', address="10.0.0.1")
    out = io.StringIO()
    accounts.write_audit_csv(accounts.audit_entries(), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["at", "actor", "action", "target", "detail", "address"]
    assert rows[1][1:] == ["alice", "export.csv", "/p", '\'=HYPERLINK("http://x")', "10.0.0.1"]
    assert rows[1][0].endswith("+00:00")


def test_users_command_grants_and_revokes_projects_and_writes_the_audit(home, monkeypatch, capsys, tmp_path):
    import storage

    project = storage.create_project(tmp_path / "p", storage.Settings(str(tmp_path), ("cat", "dog")))
    assert _cli(monkeypatch, ["add", "bob", "--role", "annotator", "--password-stdin"], PASSWORD + "\n") == 0
    assert _cli(monkeypatch, ["grant", "bob", str(tmp_path / "nothing")]) == 2
    assert "holds no project" in capsys.readouterr().err
    assert _cli(monkeypatch, ["grant", "bob", str(project.root)]) == 0
    assert _cli(monkeypatch, ["list"]) == 0
    assert "bob\tannotator\tenabled" in capsys.readouterr().out and accounts.projects_of("bob")
    assert _cli(monkeypatch, ["revoke", "bob", str(project.root)]) == 0
    assert accounts.projects_of("bob") == []
    capsys.readouterr()
    assert _cli(monkeypatch, ["audit", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "at,actor,action,target,detail,address" and len(lines) == 3 and ",member.remove,bob," in lines[1]
