"""Router: page config, who is signed in, and navigation only; each page lives in app/.

Once accounts exist (app/auth.py) every run starts from the signed-in user, checked on the server:
a session that is gone stops the run, and each role is given only its pages (annotators label and
relabel, viewers read progress, admins everything). A page left out of the navigation never runs,
whatever URL or page the browser asks for: the request is refused in words and audited, and the
role's first page runs instead. Each page checks its role again (state.require) before any action.
"""

from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

import storage
from app import auth, project_forms, state

ICON = (
    Path(__file__).resolve().parent / "assets" / "icon.png"
)  # served locally: a :material: page icon is fetched from Google

st.set_option("client.toolbarMode", "minimal")  # no "Deploy" button: this is a local tool
st.set_page_config(page_title="Proxy Labeler", page_icon=str(ICON), layout="wide")
user = state.session_user()  # None: no accounts, the local tool
role = user.role if user else "admin"
ROLE_PAGES = {
    "admin": ("label", "labels", "project", "progress", "curate", "target", "export", "users"),
    "annotator": ("label", "labels", "progress"),
    "viewer": ("progress",),
}
PAGES = {  # name: (script, url path, title, icon); the label page is the root
    "label": ("app/page_label.py", None, "Label", ":material/label:"),
    "labels": ("app/page_labels.py", "labels", "Labels", ":material/checklist:"),
    "project": ("app/page_project.py", "project", "Project", ":material/folder_open:"),
    "progress": ("app/page_progress.py", "progress", "Progress", ":material/monitoring:"),
    "curate": ("app/page_curate.py", "curate", "Curate", ":material/filter_alt:"),
    "target": ("app/page_target.py", "target", "Target", ":material/model_training:"),
    "export": ("app/page_export.py", "export", "Export", ":material/download:"),
    "users": ("app/page_users.py", "users", "Users", ":material/group:"),  # with accounts only
}


def page_of(name: str, default: bool) -> st.Page:
    script, url, title, icon = PAGES[name]
    return st.Page(script, url_path=url, title=title, icon=icon, default=default)


def requested(pages: dict[str, st.Page]) -> str | None:
    """The page this run was asked for (by URL or by the page the browser names), if it is one of ours."""
    ctx = get_script_run_ctx()
    manager = ctx.pages_manager if ctx else None
    if manager is None:
        return None
    by_name, by_hash = manager.intended_page_name, manager.intended_page_script_hash
    for name, candidate in pages.items():
        if (by_name and candidate.url_path == by_name) or (by_hash and candidate._script_hash == by_hash):
            return name
    return None


allowed = [name for name in ROLE_PAGES[role] if name != "users" or user is not None]
pages = {name: page_of(name, name == allowed[0]) for name in PAGES}
asked = requested(pages)
page = st.navigation([pages[name] for name in allowed])
if asked is not None and asked not in allowed:  # a URL typed or a page named by a hand-made request
    title = PAGES[asked][2]
    if user is None:  # the local tool: only the Users page is missing, until accounts exist
        st.info(f"The {title} page exists once accounts do: `proxy-labeler users add NAME --role admin`.")
    else:
        state.audit_action("refused", f"page {asked}", f"{role} asked for the {title} page")
        st.error(f"The {title} page is not open to {role}s: you are signed in as {user.name}.")
if user is not None:
    state.project_switcher()
    st.sidebar.caption(f"Signed in as **{user.name}** ({user.role})")
    st.sidebar.markdown(f'<a href="{auth.SIGNOUT}" target="_self">Sign out</a>', unsafe_allow_html=True)
try:
    page.run()
except storage.StorageError as exc:  # the project broke under a page (disk full, folder gone): no dead end
    project_forms.dead_end(f"{exc}")
