"""Router: page config and navigation only; each page lives in app/."""

from pathlib import Path

import streamlit as st

import storage
from app import project_forms

ICON = (
    Path(__file__).resolve().parent / "assets" / "icon.png"
)  # served locally: a :material: page icon is fetched from Google

st.set_option("client.toolbarMode", "minimal")  # no "Deploy" button: this is a local tool
st.set_page_config(page_title="Proxy Labeler", page_icon=str(ICON), layout="wide")
page = st.navigation(
    [
        st.Page("app/page_label.py", title="Label", icon=":material/label:", default=True),
        st.Page("app/page_labels.py", url_path="labels", title="Labels", icon=":material/checklist:"),
        st.Page("app/page_project.py", url_path="project", title="Project", icon=":material/folder_open:"),
        st.Page("app/page_progress.py", url_path="progress", title="Progress", icon=":material/monitoring:"),
        st.Page("app/page_curate.py", url_path="curate", title="Curate", icon=":material/filter_alt:"),
        st.Page("app/page_target.py", url_path="target", title="Target", icon=":material/model_training:"),
        st.Page("app/page_export.py", url_path="export", title="Export", icon=":material/download:"),
    ]
)
try:
    page.run()
except storage.StorageError as exc:  # the project broke under a page (disk full, folder gone): no dead end
    project_forms.dead_end(f"{exc}")
