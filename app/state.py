"""Which project this browser session works on, and where the user is in it.

The project is chosen, in order: the one this session opened, the one named
on the command line (`streamlit run streamlit_app.py -- --project DIR`) or in
PROXY_LABELER_PROJECT, the last project opened on this machine (remembered in
PROXY_LABELER_HOME, default ~/.proxy_labeler, so a server restart reopens it),
and finally the bundled demo. `st.session_state` holds only the position of
the user (project, worklist shown, the labeling view's acknowledgements);
the labeling view keeps its cursor and undo stack in the browser; everything
else lives in SQLite.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

import storage

ENV_PROJECT = "PROXY_LABELER_PROJECT"
ENV_HOME = "PROXY_LABELER_HOME"
LAST_PROJECT_FILE = "last_project"

DEFAULTS = {
    "project_dir": None,    # str: the project this session works on
    "source": "Batch",      # Batch | Validation
    "labeler_acks": {},     # labeling view client id -> last committed event and refused ones
}


def init_session() -> None:
    """Give every session key its default once per browser session."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, (dict, list)) else value


def home_dir() -> Path:
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".proxy_labeler")


def remember_project(root: Path) -> None:
    """Persist the opened project so the next server start reopens it."""
    try:
        home = home_dir()
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f"{LAST_PROJECT_FILE}.tmp"
        tmp.write_text(str(root))
        os.replace(tmp, home / LAST_PROJECT_FILE)
    except OSError:
        pass   # a read-only home only costs the reopen-after-restart convenience


def remembered_project() -> Path | None:
    try:
        text = (home_dir() / LAST_PROJECT_FILE).read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def requested_project(argv: list[str] | None = None) -> Path | None:
    """The project named by `--project DIR` after streamlit's `--`, else by PROXY_LABELER_PROJECT."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--project" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--project="):
            return Path(arg.split("=", 1)[1])
    value = os.environ.get(ENV_PROJECT)
    return Path(value) if value else None


def try_open(root: Path | str | None) -> storage.Project | None:
    if root is None:
        return None
    try:
        return storage.open_project(root)
    except storage.StorageError:
        return None


def switch_project(project: storage.Project) -> None:
    """Make `project` this session's project, forget the old cursor, remember it on disk."""
    st.session_state["project_dir"] = str(project.root)
    st.session_state["labeler_acks"] = {}
    remember_project(project.root)


def active_project() -> storage.Project | None:
    """This session's project, opening the requested, remembered or demo one on first use."""
    init_session()
    project = try_open(st.session_state["project_dir"])
    if project is not None:
        return project
    for candidate in (requested_project(), remembered_project()):
        project = try_open(candidate)
        if project is not None:
            switch_project(project)
            return project
    from app import demo

    project = demo.open_demo_with_status()
    if project is not None:
        switch_project(project)
    return project
