"""Which project this browser session works on, and where the user is in it.

The project is chosen, in order: the one this session opened, the one named
on the command line (`streamlit run streamlit_app.py -- --project DIR`) or in
PROXY_LABELER_PROJECT, the last project opened on this machine (remembered in
PROXY_LABELER_HOME, default ~/.proxy_labeler, so a server restart reopens it),
and finally the bundled demo. A project that cannot be opened is never
replaced silently by another: its error is kept in the session and every
page shows it with the Open/Create forms. Projects and image folders are
confined to the allowed roots (PROXY_LABELER_ROOTS or `--roots`, default the
user's home and this repository), so whoever reaches the page cannot point
it at any folder the server account can read. `st.session_state` holds only the position of
the user (project, worklist shown, the labeling view's acknowledgements);
the labeling view keeps its cursor and undo stack in the browser; everything
else lives in SQLite.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import streamlit as st

import storage
from storage import accounts

T = TypeVar("T")
ENV_PROJECT = "PROXY_LABELER_PROJECT"
ENV_HOME = "PROXY_LABELER_HOME"
ENV_ROOTS = "PROXY_LABELER_ROOTS"
ERROR = "project_error"  # session key: why the session's project could not be opened
LAST_PROJECT_FILE = "last_project"

DEFAULTS = {
    "project_dir": None,  # str: the project this session works on
    "source": "Batch",  # Batch | Validation
    "labeler_acks": {},  # labeling view client id -> last committed event and refused ones
}


def init_session() -> None:
    """Give every session key its default once per browser session."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, (dict, list)) else value


def home_dir() -> Path:
    return accounts.home_dir()


# ---------------------------------------------------------------- who is signed in (app/auth.py)


def current_session():
    """This browser session's sign-in (an app.auth.Session), checked on the server from the signed cookie
    the websocket was opened with; None when the server has no accounts (the local tool, nobody signs in)."""
    from app import auth

    if not accounts.has_accounts():
        return None
    return auth.check_token(st.context.cookies.get(auth.COOKIE))


def session_user() -> accounts.User | None:
    """The signed-in user, None without accounts. With accounts and no valid session (expired, disabled,
    password changed since) the page says why, links to the sign-in page and stops: nothing else runs."""
    from app import auth

    session = current_session()
    if session is None:
        return None
    if session.user is None:
        auth.audit_refused(session, client_address(), "websocket session")
        st.error(f"Signed out: {session.reason}.")
        st.markdown(f'<a href="{auth.SIGNIN}" target="_self">Sign in</a>', unsafe_allow_html=True)
        st.stop()
    return session.user


# What each role may do, checked on the server in every action (not only by leaving pages out).
CAN = {
    "read": ("admin", "annotator", "viewer"),  # progress, the labels as they are
    "label": ("admin", "annotator"),  # label, relabel, skip, start the next round of the loop
    "manage": ("admin",),  # projects, settings, classes, target, curation, exports, users, the audit
}


def can(capability: str) -> bool:
    """Whether this session may do `capability` (a key of CAN); everything without accounts."""
    session = current_session()
    if session is None:
        return True
    return session.user is not None and session.user.role in CAN[capability]


def refusal(capability: str) -> str | None:
    """Why this session may not do `capability` (a sentence), or None when it may."""
    session = current_session()
    if session is None:
        return None
    if session.user is None:
        return f"not done: {session.reason}"
    if session.user.role in CAN[capability]:
        return None
    roles = " or ".join(f"{role}s" for role in CAN[capability])
    return f"not done: {session.user.name} is {_a(session.user.role)}; only {roles} may do this"


def _a(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def require(capability: str, what: str) -> None:
    """Stop the run, saying why and writing the refusal to the audit trail, when this session may not do
    `capability`; `what` names the action for the audit ("page project", "export csv")."""
    why = refusal(capability)
    if why is None:
        return
    audit_action("refused", what, why)
    st.error(why[0].upper() + why[1:] + ".")
    st.stop()


def actor() -> str:
    """Who the audit trail records: the signed-in user's name ("local" without accounts)."""
    session = current_session()
    if session is None or session.user is None:
        return "local"
    return session.user.name


def audit_action(action: str, target: str = "", detail: str = "") -> None:
    """One entry in the audit trail (storage/accounts.py) for this session's user and address, once
    accounts exist (the local tool keeps none)."""
    if current_session() is not None:
        _write_audit(actor(), action, target, detail, client_address())


def audited(make: Callable[[], T], action: str, target: str) -> Callable[[], T]:
    """`make`, writing `action` on `target` to the audit trail each time it runs: a download button's
    deferred data runs outside the script run, so who asked and from where are read now."""
    if current_session() is None:
        return make
    who, address = actor(), client_address()

    def run() -> T:
        data = make()
        _write_audit(who, action, target, "", address)
        return data

    return run


def client_address() -> str:
    """The browser's address as the server saw it ("" where there is none, as in AppTest)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else ""


def _write_audit(who: str, action: str, target: str, detail: str, address: str) -> None:
    """An audit entry that cannot be written never undoes what the user saw succeed: it is logged."""
    try:
        accounts.audit(who, action, target, detail, address=address)
    except storage.StorageError as exc:
        logging.getLogger(__name__).warning("audit entry %s %s not written: %s", action, target, exc)


def annotator_for(typed: object) -> str:
    """The name a label is saved under: the signed-in user's, whatever the browser sent, once accounts
    exist (ValueError when the session is gone or the user may not label); else the name typed."""
    session = current_session()
    if session is None:
        return str(typed or "").strip()
    why = refusal("label")
    if why is not None:
        raise ValueError(why.replace("not done", "not saved", 1))
    assert session.user is not None
    return session.user.name


def remember_project(root: Path) -> None:
    """Persist the opened project so the next server start reopens it."""
    try:
        with storage.atomic_write(home_dir() / LAST_PROJECT_FILE) as tmp:
            tmp.write_text(str(root))
    except OSError:
        pass  # a read-only home only costs the reopen-after-restart convenience


def remembered_project() -> Path | None:
    try:
        text = (home_dir() / LAST_PROJECT_FILE).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def _argument(name: str, argv: list[str] | None) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` after streamlit's `--`."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def requested_project(argv: list[str] | None = None) -> Path | None:
    """The project named by `--project DIR` after streamlit's `--`, else by PROXY_LABELER_PROJECT."""
    value = _argument("--project", argv) or os.environ.get(ENV_PROJECT)
    return Path(value) if value else None


def allowed_roots(argv: list[str] | None = None) -> list[Path]:
    """Folders under which projects and image folders may be opened or created: `--roots A:B` or
    PROXY_LABELER_ROOTS (os.pathsep-separated), by default the user's home and this repository
    (demo, default project folder). The demo's folders and a project named at start are allowed
    whatever the roots: whoever started the server chose them."""
    from app import demo

    value = _argument("--roots", argv) or os.environ.get(ENV_ROOTS)
    roots = [Path(p) for p in value.split(os.pathsep) if p.strip()] if value else [Path.home(), demo.REPO_ROOT]
    started_with = [demo.demo_dir(), demo.demo_assets(), requested_project(argv)]
    return [Path(p).expanduser().resolve() for p in [*roots, *started_with] if p is not None]


def check_allowed(path: Path | str, what: str, also: Sequence[Path] = ()) -> Path:
    """`path` resolved (links followed), or StorageError when it lies outside every allowed root (and
    the folders in `also`). The message names the path as given, never where a link leads, so it reads
    the same whether anything exists there or not."""
    given = Path(os.path.abspath(os.path.expanduser(path)))  # an unknown ~user stays as typed
    resolved = given.resolve()
    roots = allowed_roots()
    if not any(resolved == root or root in resolved.parents for root in [*roots, *(p.resolve() for p in also)]):
        shown = ", ".join(str(root) for root in roots[:3])
        raise storage.StorageError(
            f"{what} {given} is outside the folders this server may use ({shown}); "
            f"whoever starts the server can allow it with {ENV_ROOTS}=/a/folder{os.pathsep}/another"
        )
    return resolved


def check_backbone(value: str, project_root: Path | None = None) -> str:
    """The Backbone setting `value` as this server accepts it (what `check_backbone_setting` accepts,
    a weights file only inside the allowed roots or the project's own folder), else BackboneError.

    Outside those folders the answer is the same whether the file exists or not, so the form
    cannot be used to find out which files the server account can see.
    """
    from engine.backbone_files import BackboneError, check_backbone_setting, names_weights_file

    if names_weights_file(value):
        try:
            check_allowed(value.strip(), "backbone weights file", [project_root] if project_root else [])
        except storage.StorageError as exc:
            raise BackboneError(str(exc)) from exc
    return check_backbone_setting(value)


def open_allowed(root: Path | str) -> storage.Project:
    """Open the project at `root` if it and its image folder lie inside the allowed roots."""
    project = storage.open_project(check_allowed(root, "project folder"))
    check_allowed(storage.load_settings(project).image_root, "the project's image folder")
    return project


def try_open(root: Path | str | None) -> storage.Project | None:
    if root is None:
        return None
    try:
        return open_allowed(root)
    except storage.StorageError:
        return None


def switch_project(project: storage.Project) -> None:
    """Make `project` this session's project, forget the old cursor, remember it on disk."""
    st.session_state["project_dir"] = str(project.root)
    st.session_state["labeler_acks"] = {}
    st.session_state.pop(ERROR, None)
    if can("manage"):  # what a server restart reopens is the admins' choice, not the last annotator's
        remember_project(project.root)


def project_error() -> str | None:
    """Why this session's project could not be opened, if it could not."""
    return st.session_state.get(ERROR)


def may_open(root: Path | str) -> bool:
    """Whether this session's user may open the project at `root` (everyone without accounts, admins
    every project, annotators and viewers the projects they are members of)."""
    session = current_session()
    if session is None:
        return True
    return session.user is not None and accounts.may_open(session.user, root)


def member_projects() -> list[str]:
    """The project folders of a signed-in annotator or viewer (empty for admins and without accounts)."""
    session = current_session()
    if session is None or session.user is None or session.user.role == "admin":
        return []
    return accounts.projects_of(session.user.name)


def project_switcher() -> None:
    """In the sidebar of an annotator or viewer who belongs to several projects: which one to work on
    (admins open projects on the Project page)."""
    choices = member_projects()
    if len(choices) < 2:
        return
    current = st.session_state.get("project_dir")
    index = choices.index(current) if current in choices else None
    chosen = st.sidebar.selectbox(
        "Project", choices, index=index, format_func=lambda root: Path(root).name, key="member-project"
    )
    if chosen and chosen != current:
        try:
            switch_project(open_allowed(chosen))
        except storage.StorageError as exc:
            st.sidebar.error(f"Not opened: {exc}")


def active_project() -> storage.Project | None:
    """This session's project, opening the requested, remembered or demo one on first use (for an
    annotator or viewer: one they are a member of, their first project else).

    None when it cannot be opened: `project_error()` says why (pages then show the
    Open/Create forms). A remembered project whose folder is gone is forgotten quietly.
    """
    init_session()
    own = st.session_state["project_dir"]
    if own and not may_open(own):  # removed from the project since: the session leaves it
        st.session_state["project_dir"] = own = None
    if own:
        candidates: list[Path | None] = [Path(own)]
    else:
        candidates = [p if p is not None and may_open(p) else None for p in (requested_project(), remembered_project())]
        candidates += [Path(p) for p in member_projects()]
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            # a folder this account may not read is an error like any broken project, not "gone"
            if candidate is not candidates[0] and storage.project.probe(candidate / "project.db") is None:
                continue
            # the session's own project passed the roots check when it was switched to: every rerun opens
            # it, so it is not checked (one more database read) again
            project = storage.open_project(candidate) if own else open_allowed(candidate)
        except storage.StorageError as exc:
            st.session_state[ERROR] = f"The project at {candidate} cannot be opened: {exc}"
            return None
        if not own:
            switch_project(project)
        return project
    from app import demo

    if not may_open(demo.demo_dir()):
        return None
    project = demo.open_demo_with_status()
    if project is not None:
        switch_project(project)
    return project
