"""Start here: `streamlit run server.py` (what `make run` does).

The app is `streamlit_app.py`; this file adds the route that serves images
to the labeling view (app/images.py), which plain Streamlit cannot.
"""

import streamlit as st

from app import images

app = st.App("streamlit_app.py", routes=images.routes())
