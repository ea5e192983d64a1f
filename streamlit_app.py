"""Router: page config, who is signed in, and navigation only; each page lives in app/.

Once accounts exist (app/auth.py) every run starts from the signed-in user, checked on the server:
a session that is gone stops the run, and each role is given only its pages (annotators label and
relabel, viewers read progress, admins everything). A page left out of the navigation never runs,
whatever URL the browser asks for.
"""

from pathlib import Path

import streamlit as st

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
    "admin": ("label", "labels", "project", "progress", "curate", "target", "export"),
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
}


def page_of(name: str, default: bool) -> st.Page:
    script, url, title, icon = PAGES[name]
    return st.Page(script, url_path=url, title=title, icon=icon, default=default)


allowed = ROLE_PAGES[role]
page = st.navigation([page_of(name, name == allowed[0]) for name in allowed])
if user is not None:
    st.sidebar.caption(f"Signed in as **{user.name}** ({user.role})")
    st.sidebar.markdown(f'<a href="{auth.SIGNOUT}" target="_self">Sign out</a>', unsafe_allow_html=True)
try:
    page.run()
except storage.StorageError as exc:  # the project broke under a page (disk full, folder gone): no dead end
    project_forms.dead_end(f"{exc}")
