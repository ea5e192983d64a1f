"""Start here: `streamlit run server.py` (what `make run` does).

The app is `streamlit_app.py`; this file adds the route that serves images
to the labeling view (app/images.py), which plain Streamlit cannot.

A page opened by its URL (`/labels`) makes two 404s in the browser's network log, `/labels/_stcore/health`
and `/labels/_stcore/host-config`: Streamlit's own frontend (1.67) first tries the page's path as the
server's base path, then the root, where both answer. Plain `streamlit run streamlit_app.py` does the same;
mounting the app here changes nothing in it, and answering those paths would make the frontend take the
page's path as its base and open its websocket there.
"""

import streamlit as st

from app import images

app = st.App("streamlit_app.py", routes=images.routes())
