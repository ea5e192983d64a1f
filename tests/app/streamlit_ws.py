"""A minimal Streamlit client over its websocket, for tests that call the server the way a hand-made
request would (not through the browser UI): ask for a page by name or script hash, with any widget
states, and read back what the script sent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

COOKIE = "proxy_labeler_session"


@dataclass
class Run:
    """What one script run sent: its elements (kind, proto), navigation, and whether a page was missing."""

    elements: list[tuple[str, object]] = field(default_factory=list)
    page_not_found: bool = False
    page_hashes: dict[str, str] = field(default_factory=dict)  # url path -> script hash, from navigation
    ran_page_hash: str = ""

    def texts(self, kind: str) -> list[str]:
        """The bodies of the alerts (kind "alert": errors, infos) or markdown of the run."""
        return [str(getattr(proto, "body", "")) for name, proto in self.elements if name == kind]

    def of(self, kind: str) -> list:
        return [proto for name, proto in self.elements if name == kind]


class Session:
    """One browser tab's websocket: several script runs on one connection (`with Session(...) as tab`)."""

    def __init__(self, port: int, cookie: str | None) -> None:
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        url = f"ws://127.0.0.1:{port}/_stcore/stream"
        self._ws = connect(url, additional_headers=headers, open_timeout=30, max_size=None)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self._ws.close()

    def run(
        self, page_name: str = "", page_script_hash: str = "", widgets: list | None = None, timeout_s: float = 90
    ) -> Run:
        """Run the app once asking for `page_name` / `page_script_hash` with `widgets` (WidgetState protos,
        e.g. a forged button trigger), and collect what the run sent."""
        message = BackMsg()
        message.rerun_script.query_string = ""
        message.rerun_script.page_name = page_name
        message.rerun_script.page_script_hash = page_script_hash
        for state in widgets or []:
            message.rerun_script.widget_states.widgets.append(state)
        self._ws.send(message.SerializeToString())
        run = Run()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            forward = ForwardMsg()
            forward.ParseFromString(self._ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            kind = forward.WhichOneof("type")
            if kind == "script_finished":
                return run
            if kind == "page_not_found":
                run.page_not_found = True
            elif kind == "navigation":
                run.ran_page_hash = forward.navigation.page_script_hash
                run.page_hashes = {p.url_pathname: p.page_script_hash for p in forward.navigation.app_pages}
            elif kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                element = forward.delta.new_element
                name = element.WhichOneof("type")
                run.elements.append((name, getattr(element, name)))
        raise TimeoutError(f"the run of {page_name or page_script_hash or 'the default page'} did not finish")


def run_page(port: int, cookie: str | None, page_name: str = "", page_script_hash: str = "", widgets=None) -> Run:
    """One run in a fresh session (a new tab)."""
    with Session(port, cookie) as tab:
        return tab.run(page_name, page_script_hash, widgets)
