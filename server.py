"""Start here: `streamlit run server.py` (what `make run` and `proxy-labeler run` do).

The app is `streamlit_app.py`; this file adds the route that serves images
to the labeling view (app/images.py), which plain Streamlit cannot, and puts
sign-in in front of everything once accounts exist (app/auth.py): the pages,
Streamlit's websocket, media and uploads, and the image route. Without
accounts the server refuses to listen on any address but localhost.

A page opened by its URL (`/labels`) makes two 404s in the browser's network log, `/labels/_stcore/health`
and `/labels/_stcore/host-config`: Streamlit's own frontend (1.67) first tries the page's path as the
server's base path, then the root, where both answer. Plain `streamlit run streamlit_app.py` does the same;
mounting the app here changes nothing in it, and answering those paths would make the frontend take the
page's path as its base and open its websocket there.
"""

import streamlit as st
from starlette.middleware import Middleware
from streamlit import config

from app import auth, images

# Read when the server imports this file, before it accepts a connection; the socket is bound already,
# so a refusal ends the process before anyone is served.
auth.check_listen_address(config.get_option("server.address"))

app = st.App("streamlit_app.py", routes=images.routes(), middleware=[Middleware(auth.SignIn)])
