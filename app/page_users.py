"""Users page (admins only, once accounts exist): the users and their roles, a new user, the members
of the open project, and the audit trail.

Every change names who made it (`state.actor()`) and from where (`state.client_address()`), and goes
through storage/accounts.py, which audits it. A change of a user carries the `updated_at` this page
showed for them (`SEEN`, kept in the session from the run that drew the table): when another admin
changed the user since, accounts refuses it in words, changes nothing and audits the refusal. The
members of the open project are saved the same way: against the list this page showed (its widget's
key is made from it), so a list another admin changed meanwhile is not overwritten.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from collections.abc import Callable

import pandas as pd
import streamlit as st

import storage
from app import state, widgets
from storage import accounts

SEEN = "users_seen"  # session key: {user name: updated_at} as the table last showed them
MEMBERS_DRAWN = "members_drawn"  # session key: the members widget's key as the last run drew it
MEMBERS_SAVED = "members_saved"  # session key: what the last save of members did, shown after its rerun
AUDIT_SHOWN = 200


def local_time(at: float) -> str:
    """A time stamp as local ISO time with its offset (2025-06-01 14:03:07+02:00)."""
    return datetime.datetime.fromtimestamp(at).astimezone().isoformat(sep=" ", timespec="seconds")


def change(what: Callable[[], object], done: str) -> None:
    """Run one change of accounts; a refusal is shown inline (its message is a sentence), nothing saved."""
    try:
        what()
    except storage.StorageError as exc:
        st.error(f"Not saved: {widgets.md(exc)}")
    else:
        st.success(done)


# ---------------------------------------------------------------- users


def projects_cell(user: accounts.User) -> str:
    if user.role == "admin":
        return "every project"
    return ", ".join(accounts.projects_of(user.name)) or "none"


def users_table(users: list[accounts.User]) -> None:
    rows = [
        {
            "name": user.name,
            "role": user.role,
            "enabled": user.enabled,
            "changed at": local_time(user.updated_at),
            "projects": projects_cell(user),
        }
        for user in users
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.session_state[SEEN] = {user.name: user.updated_at for user in users}


def editor(users: list[accounts.User], seen: dict[str, float]) -> None:
    """Role, access and password of one user, each saved on its own against the user as last shown."""
    st.subheader("Change a user")
    by_name = {user.name: user for user in users}
    name = st.selectbox("User", list(by_name), key="edit-user")
    if name is None:
        return
    user = by_name[name]
    shown = seen.get(name, user.updated_at)  # what this page showed when the admin chose the change
    who, where = state.actor(), state.client_address()
    role_col, access_col, password_col = st.columns(3)
    with role_col, st.form("user-role"):
        role = st.selectbox("Role", accounts.ROLES, index=accounts.ROLES.index(user.role), key=f"role-{name}")
        save_role = st.form_submit_button("Save role", type="primary")
    if save_role:
        with role_col:
            if role == user.role:
                st.info(f"{widgets.md(name)} is {role} already: nothing to change.")
            else:
                change(
                    lambda: accounts.set_role(name, role, actor=who, address=where, seen=shown),
                    f"{widgets.md(name)} is {role} now; their sessions ended.",
                )
    with access_col:
        st.caption("Access")
        st.write(f"{widgets.md(name)} is {'enabled' if user.enabled else 'disabled'}.")
        label = f"{'Disable' if user.enabled else 'Enable'} {widgets.md(name)}"
        toggle = st.button(label, key=f"access-{name}")
        if toggle:
            enabled = not user.enabled
            change(
                lambda: accounts.set_enabled(name, enabled, actor=who, address=where, seen=shown),
                f"{widgets.md(name)} is {'enabled' if enabled else 'disabled; their sessions ended'}.",
            )
    with password_col, st.form("user-password", clear_on_submit=True):
        first = st.text_input("New password", type="password", key="new-password")
        again = st.text_input("New password again", type="password", key="new-password-again")
        save_password = st.form_submit_button("Set password")
    if save_password:
        with password_col:
            if first != again:
                st.error("Not saved: the two passwords differ.")
            else:
                change(
                    lambda: accounts.set_password(name, first, actor=who, address=where, seen=shown),
                    f"{widgets.md(name)} has a new password; their sessions ended.",
                )


def add_user_form() -> None:
    st.caption(
        f"Passwords have at least {accounts.MIN_PASSWORD} characters; there is no default one. "
        "Annotators label and relabel, viewers read progress, admins do everything."
    )
    with st.form("add-user", clear_on_submit=True):
        name = st.text_input("Name", key="add-name", help="Letters, digits, '.', '_' or '-'.")
        role = st.selectbox("Role", accounts.ROLES, index=accounts.ROLES.index("annotator"), key="add-role")
        first = st.text_input("Password", type="password", key="add-password")
        again = st.text_input("Password again", type="password", key="add-password-again")
        submitted = st.form_submit_button("Add user", type="primary")
    if not submitted:
        return
    if first != again:
        st.error("Not saved: the two passwords differ.")
        return
    name = name.strip()
    change(
        lambda: accounts.add_user(name, role, first, actor=state.actor(), address=state.client_address()),
        f"Added {widgets.md(name)} ({role}).",
    )


# ---------------------------------------------------------------- members


def members_key(project: storage.Project, current: list[str]) -> str:
    """The members widget's key: a new one whenever the members change, so it shows them as they are."""
    text = "\n".join([accounts.project_key(project.root), *current])
    return "members-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def members_section() -> None:
    st.caption("Admins open every project; annotators and viewers only the projects they are members of.")
    project = state.active_project()
    if project is None:
        st.info(state.project_error() or "No project is open: open one on the Project page first.")
        return
    st.caption("Project folder")
    st.code(str(project.root), language=None, wrap_lines=True)
    others = [user for user in accounts.list_users() if user.role != "admin"]
    if not others:
        st.info("There are no annotators or viewers yet: add one under Add a user.")
        return
    names = [user.name for user in others]
    disabled = {user.name for user in others if not user.enabled}
    current = [name for name in accounts.members(project.root) if name in names]
    key, drawn = members_key(project, current), st.session_state.get(MEMBERS_DRAWN)
    with st.form("members"):
        chosen = st.multiselect(
            "Members",
            names,
            default=current,
            key=key,
            format_func=lambda name: f"{name} (disabled)" if name in disabled else name,
        )
        submitted = st.form_submit_button("Save members", type="primary")
    st.session_state[MEMBERS_DRAWN] = key
    if saved := st.session_state.pop(MEMBERS_SAVED, None):
        st.success(saved)
    if not submitted:
        return
    if drawn not in (None, key):  # the list the admin edited is not the one there is now
        st.error(
            "Not saved: the members of this project were changed by someone else since you opened this page; "
            "nothing changed: look at them again (above) and redo the change if it still holds."
        )
        return
    save_members(project, current, chosen)


def save_members(project: storage.Project, current: list[str], chosen: list[str]) -> None:
    """Add and remove the differences; on success the page is drawn again with the list as it is now."""
    changes = [(name, True) for name in chosen if name not in current]
    changes += [(name, False) for name in current if name not in chosen]
    if not changes:
        st.info("Nothing to change.")
        return
    done = []
    try:
        for name, member in changes:
            accounts.set_member(project.root, name, member, actor=state.actor(), address=state.client_address())
            done.append(f"{'added' if member else 'removed'} {widgets.md(name)}")
    except storage.StorageError as exc:
        st.error(f"Not saved: {widgets.md(exc)}" + (f" (saved before that: {', '.join(done)})" if done else ""))
        return
    st.session_state[MEMBERS_SAVED] = f"Members saved: {', '.join(done)}."
    st.rerun()


# ---------------------------------------------------------------- audit


def audit_csv() -> str:
    """The whole audit trail as CSV (times in UTC), made when the download is clicked."""
    out = io.StringIO()
    accounts.write_audit_csv(accounts.audit_entries(), out)
    return out.getvalue()


def record_audit_download() -> None:
    state.audit_action("export.audit", "audit trail", "csv")


def audit_section() -> None:
    entries = accounts.audit_entries(limit=AUDIT_SHOWN)
    st.caption(
        f"The newest {len(entries)} entries, newest first (times local); the download holds the whole trail "
        "(times in UTC). The trail is append-only."
    )
    needle = st.text_input("Filter by actor, action or target", key="audit-filter").strip().lower()
    if needle:
        entries = [e for e in entries if any(needle in part.lower() for part in (e.actor, e.action, e.target))]
    rows = [
        {
            "time": local_time(e.at),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
            "address": e.address,
        }
        for e in entries
    ]
    columns = ["time", "actor", "action", "target", "detail", "address"]
    st.dataframe(pd.DataFrame(rows, columns=columns), hide_index=True)
    st.download_button(
        "Audit trail as CSV",
        audit_csv,
        "audit_trail.csv",
        "text/csv",
        key="dl-audit",
        on_click=record_audit_download,
        icon=":material/table:",
    )


def main() -> None:
    state.require("manage", "page users")
    st.title("Users")
    seen = dict(st.session_state.get(SEEN, {}))  # as the last run showed them: the base of every change
    users_tab, add_tab, members_tab, audit_tab = st.tabs(["Users", "Add a user", "Members", "Audit"])
    with add_tab:
        add_user_form()
    with users_tab:
        table = st.container()
        editor(accounts.list_users(), seen)
    with members_tab:
        members_section()
    with table:  # drawn after every change of this run, so it shows them
        users_table(accounts.list_users())
    with audit_tab:
        audit_section()


if __name__ == "__main__":
    main()
