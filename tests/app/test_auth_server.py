"""Sign-in in front of the whole server (app/auth.py, server.py), through a real server: HTTP requests
with http.client and Streamlit's websocket with the websockets client. Every refused request is
checked to carry a readable reason and to change nothing."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import storage
from app import auth
from app.live_server import REPO, free_port, wait_healthy
from storage import accounts
from tests.app.streamlit_ws import Session, run_page
from tests.support import make_app_project, write_image_folder

PASSWORD = "a long enough password"
MAX_WAIT_S = "1"  # failed sign-ins wait at most this long here (60 s by default)


@contextlib.contextmanager
def server(home: Path, project: Path | None, log: Path, address: str = "127.0.0.1"):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_LABELER_")}
    env.update(PROXY_LABELER_HOME=str(home), PROXY_LABELER_SIGNIN_MAX_WAIT_S=MAX_WAIT_S)
    env.update(PROXY_LABELER_ROOTS=str(home.parent), PROXY_LABELER_DEMO_ASSETS=str(home / "no_demo"))
    if project is not None:
        env["PROXY_LABELER_PROJECT"] = str(project)
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "server.py"), "--server.port", str(port)]
    command += ["--server.address", address]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        yield port
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def call(port: int, method: str, path: str, *, cookie: str | None = None, body: str | None = None, headers=None):
    """(status, headers with lower-case names, body text) of one request; redirects are not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = {"Accept": "text/html"} if method == "GET" else {}
    sent.update(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{auth.COOKIE}={cookie}"
    if body is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=sent)
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, text


def sign_in(port: int, name: str, password: str = PASSWORD, **extra):
    return call(port, "POST", "/signin", body=urllib.parse.urlencode({"name": name, "password": password, **extra}))


def session_of(port: int, name: str) -> str:
    """A fresh session cookie of `name` (waiting out a slowdown left by another test)."""
    for _ in range(10):
        status, headers, _ = sign_in(port, name)
        if status != 429:
            break
        time.sleep(float(headers["retry-after"]))
    assert status == 303, status
    return headers["set-cookie"].split(";")[0].split("=", 1)[1]


def websocket_status(port: int, cookie: str | None = None, origin: str | None = None) -> int:
    """101 when Streamlit's websocket opens, else the HTTP status it was refused with."""
    headers = {"Cookie": f"{auth.COOKIE}={cookie}"} if cookie else {}
    if origin:
        headers["Origin"] = origin
    try:
        with connect(f"ws://127.0.0.1:{port}/_stcore/stream", additional_headers=headers, open_timeout=20):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server with accounts (alice admin, bob annotator, vera viewer, dave annotator) on a tiny project
    whose members are bob and vera (dave belongs to no project)."""
    root = tmp_path_factory.mktemp("auth")
    home = root / "home"
    os.environ[accounts.ENV_HOME] = str(home)  # the test process reads and changes the same accounts
    for name, role in (("alice", "admin"), ("bob", "annotator"), ("vera", "viewer"), ("dave", "annotator")):
        accounts.add_user(name, role, PASSWORD, actor="test", home=home)
    images = root / "images"
    write_image_folder(images, per_class=4, flat=True)
    project = make_app_project(root / "project", images)
    for name in ("bob", "vera"):
        accounts.set_member(project.root, name, True, actor="test", home=home)
    with server(home, project.root, root / "server.log") as port:
        yield port, home, project
    os.environ.pop(accounts.ENV_HOME, None)


PROTECTED = [
    ("GET", "/"),
    ("GET", "/labels"),
    ("GET", "/project"),
    ("GET", "/export"),
    ("GET", "/_stcore/host-config"),
    ("GET", "/_stcore/script-health-check"),
    ("GET", "/px/sometoken/1/grid"),
    ("GET", "/media/0123456789abcdef.csv"),  # st.download_button's files
    ("PUT", "/_stcore/upload_file/session/file"),
    ("GET", "/static/js/index.js"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_without_a_session_nothing_but_the_sign_in_page_is_served(site, method, path):
    port, _, _ = site
    status, headers, body = call(port, method, path, headers={"Accept": "*/*"})
    assert status == 401 and body.startswith("sign in first: you are not signed in")
    if method == "GET":  # a page a browser asks for goes to the sign-in page
        status, headers, _ = call(port, method, path)
        assert status == 303 and headers["location"] == "/signin?" + urllib.parse.urlencode({"next": path})


def test_the_websocket_is_refused_without_a_session_and_opens_with_one(site):
    port, _, _ = site
    assert websocket_status(port) == 403
    assert websocket_status(port, session_of(port, "bob")) == 101


def test_the_websocket_opened_from_another_site_is_refused_even_with_a_session(site):
    port, home, _ = site
    bob = session_of(port, "bob")
    assert websocket_status(port, bob, origin="http://evil.example") == 403
    assert websocket_status(port, bob, origin=f"http://127.0.0.1:{port}") == 101
    assert any(e.action == "websocket.cross-site" and e.actor == "bob" for e in accounts.audit_entries(home))


def test_the_health_check_and_the_sign_in_page_are_open(site):
    port, _, _ = site
    assert call(port, "GET", "/_stcore/health")[0] == 200
    status, _, body = call(port, "GET", "/signin?next=/labels")
    assert status == 200 and 'name="password"' in body and 'value="/labels"' in body


def test_signing_in_sets_a_strict_http_only_cookie_that_opens_the_app(site):
    port, home, _ = site
    status, headers, _ = sign_in(port, "alice", next="/labels")
    assert status == 303 and headers["location"] == "/labels"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Max-Age={auth.SESSION_S}" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
    token = cookie.split(";")[0].split("=", 1)[1]
    status, page_headers, body = call(port, "GET", "/", cookie=token)
    assert status == 200 and "<html" in body.lower()
    assert page_headers["x-frame-options"] == "SAMEORIGIN"  # another site cannot frame a signed-in page
    assert page_headers["content-security-policy"] == "frame-ancestors 'self'"
    assert call(port, "GET", "/px/unknown/1/grid", cookie=token)[0] == 404  # through sign-in to the image route
    assert accounts.audit_entries(home)[0].action == "signin"


def test_sign_in_never_redirects_to_another_site(site):
    port, _, _ = site
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        status, headers, _ = sign_in(port, "alice", next=target)
        assert status == 303 and headers["location"] == "/"


def test_a_sign_in_posted_from_another_site_is_refused(site):
    port, _, _ = site
    body = urllib.parse.urlencode({"name": "alice", "password": PASSWORD})
    status, headers, text = call(port, "POST", "/signin", body=body, headers={"Origin": "http://evil.example"})
    assert status == 403 and "set-cookie" not in headers and "this server's own page" in text


def _other_secret_token(name: str) -> str:
    import base64
    import hashlib
    import hmac

    body = f"{name}.0.{int(time.time())}.0123456789abcdef"
    mac = hmac.new(b"x" * 32, body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_forged_expired_and_altered_cookies_are_refused_everywhere(site):
    port, home, _ = site
    bob = session_of(port, "bob")
    altered = "alice" + bob[len("bob") :]  # bob's signed cookie with alice's name
    expired = auth.sign("bob", 0, issued_at=time.time() - auth.SESSION_S - 5, home=home)
    cases = {
        "garbage": ("not-a-token", "not one this server made"),
        "other secret": (_other_secret_token("alice"), "not one this server made"),
        "altered": (altered, "not one this server made"),
        "expired": (expired, "your session expired"),
    }
    for name, (token, reason) in cases.items():
        for method, path in PROTECTED:
            status, _, body = call(port, method, path, cookie=token, headers={"Accept": "*/*"})
            assert status == 401 and reason in body, (name, path, status, body)
        assert websocket_status(port, token) == 403, name


def test_twenty_wrong_passwords_are_slowed_and_the_right_one_works_after_the_wait(site):
    port, home, _ = site
    seen = []
    for _ in range(20):
        status, headers, body = sign_in(port, "dave", "wrong password!")
        assert "set-cookie" not in headers
        seen.append(status)
        if status == 429:
            assert "Too many failed sign-ins: try again in" in body and int(headers["retry-after"]) >= 1
    assert seen[: auth.FREE_FAILURES] == [401] * auth.FREE_FAILURES and 429 in seen
    assert any(e.action == "signin.failed: wrong user name or password" for e in accounts.audit_entries(home))
    assert any(e.action == "signin.throttled" and e.actor == "dave" for e in accounts.audit_entries(home))
    assert session_of(port, "dave")  # waits out Retry-After, then signs in


def test_a_disabled_user_is_signed_out_at_once_and_cannot_sign_in(site):
    port, home, _ = site
    accounts.add_user("erin", "annotator", PASSWORD, actor="test", home=home)
    token = session_of(port, "erin")
    assert call(port, "GET", "/", cookie=token)[0] == 200
    accounts.set_enabled("erin", False, actor="alice", home=home)
    status, _, body = call(port, "GET", "/_stcore/host-config", cookie=token, headers={"Accept": "*/*"})
    assert status == 401 and "your account is disabled" in body
    assert websocket_status(port, token) == 403
    status, headers, body = sign_in(port, "erin")
    assert status == 403 and "set-cookie" not in headers and "disabled" in body


def test_a_disabled_user_with_a_page_open_is_signed_out_at_the_next_run_and_it_is_audited(site):
    port, home, project = site
    accounts.add_user("gina", "annotator", PASSWORD, actor="test", home=home)
    accounts.set_member(project.root, "gina", True, actor="test", home=home)
    with Session(port, session_of(port, "gina")) as tab:  # the websocket opened while gina was enabled
        first = tab.run()
        [view] = first.of("bidi_component") or pytest.fail(f"no labeling view: {first.texts('alert')}")
        accounts.set_enabled("gina", False, actor="alice", home=home)
        state = json.dumps({"outbox": {"client": "tab", "events": [{"seq": 1, "action": "skip", "items": [1],
                            "value": None, "how": "typed", "annotator": "gina"}]}})  # fmt: skip
        before = storage.labeled_items(project)
        second = tab.run(widgets=[WidgetState(id=view.id, json_value=state)])
    assert "Signed out: your account is disabled; ask an admin." in second.texts("alert")
    assert not second.of("bidi_component") and storage.labeled_items(project) == before
    refused = [e for e in accounts.audit_entries(home) if e.actor == "gina" and e.action == "session.refused"]
    assert refused and refused[0].detail == "your account is disabled; ask an admin"


def test_forged_and_expired_cookies_are_audited_once_a_minute(site):
    port, home, _ = site
    expired = auth.sign("vera", 0, issued_at=time.time() - auth.SESSION_S - 5, home=home)
    for _ in range(3):
        call(port, "GET", "/_stcore/host-config", cookie=_other_secret_token("zed"), headers={"Accept": "*/*"})
        call(port, "GET", "/_stcore/host-config", cookie=expired, headers={"Accept": "*/*"})
    refused = [(e.actor, e.detail) for e in accounts.audit_entries(home) if e.action == "session.refused"]
    assert refused.count(("?", "the session cookie is not one this server made; sign in again")) == 1
    assert refused.count(("vera", "your session expired; sign in again")) == 1


def test_a_changed_password_ends_the_old_sessions(site):
    port, home, _ = site
    accounts.add_user("fred", "viewer", PASSWORD, actor="test", home=home)
    token = session_of(port, "fred")
    accounts.set_password("fred", "a brand new password", actor="alice", home=home)
    status, _, body = call(port, "GET", "/_stcore/host-config", cookie=token, headers={"Accept": "*/*"})
    assert status == 401 and "session was ended" in body


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "bob smith", "../../etc/passwd", "a\x00b", "é" * 80])
def test_odd_user_names_are_refused_and_never_echoed_as_html(site, name):
    port, home, _ = site
    before = accounts.list_users(home)
    status, headers, body = sign_in(port, name, "whatever password")
    assert status in (401, 429) and "set-cookie" not in headers
    assert "<script>alert" not in body
    assert accounts.list_users(home) == before


def test_sign_out_clears_the_cookie_and_ends_the_session_in_every_open_tab(site):
    port, home, _ = site
    token = session_of(port, "bob")
    with Session(port, token) as other_tab:  # a second tab, its websocket open before the sign-out
        assert other_tab.run().of("bidi_component")
        status, headers, _ = call(port, "GET", "/signout", cookie=token)
        assert status == 303 and headers["location"] == "/signin"
        assert headers["set-cookie"].startswith(f"{auth.COOKIE}=;") and "Max-Age=0" in headers["set-cookie"]
        after = other_tab.run()
    assert "Signed out: you signed out of this session; sign in again." in after.texts("alert")
    assert not after.of("bidi_component")
    status, _, body = call(port, "GET", "/_stcore/host-config", cookie=token, headers={"Accept": "*/*"})
    assert status == 401 and "you signed out of this session" in body  # a copy of the cookie is refused too
    assert websocket_status(port, session_of(port, "bob")) == 101  # bob's other sessions are untouched
    assert any(e.action == "signout" and e.actor == "bob" for e in accounts.audit_entries(home))


# ---------------------------------------------------------------- roles and members, through the websocket


def _form_widgets(run, form: str) -> dict[str, object]:
    """The widgets of one form in a run, by label (the submit button as "submit")."""
    found: dict[str, object] = {}
    for kind, proto in run.elements:
        if getattr(proto, "form_id", None) == form:
            found["submit" if kind == "button" else proto.label] = proto
    return found


def test_an_annotator_calling_an_admin_action_through_the_websocket_is_refused_and_audited(site):
    port, home, project = site
    admin = run_page(port, session_of(port, "alice"), page_name="project")
    page_hash = admin.page_hashes["project"]
    form = _form_widgets(admin, "settings")
    assert "submit" in form and "Budget" in form  # what an admin's browser sends to save the settings
    before = storage.load_settings(project)
    forged = [WidgetState(id=form["submit"].id, trigger_value=True), WidgetState(id=form["Budget"].id, int_value=7)]
    for ask in ({"page_name": "project"}, {"page_script_hash": page_hash}):  # by URL, by the page's hash
        run = run_page(port, session_of(port, "bob"), widgets=forged, **ask)
        assert run.ran_page_hash != page_hash  # the annotator's own first page ran instead
        errors = [text for text in run.texts("alert") if "not open to annotators" in text]
        assert errors and "signed in as bob" in errors[0], run.texts("alert")
        assert not _form_widgets(run, "settings")  # the page never ran: no form, nothing saved
    assert storage.load_settings(project) == before
    refused = [e for e in accounts.audit_entries(home) if e.actor == "bob" and e.action == "refused"]
    assert len(refused) >= 2 and refused[0].target == "page project"


def test_a_viewer_cannot_reach_the_exports_or_the_labeling_view_through_the_websocket(site):
    port, home, _ = site
    label_page = run_page(port, session_of(port, "bob")).ran_page_hash  # an annotator's first page: Label
    for ask in ({"page_name": "export"}, {"page_name": "labels"}, {"page_script_hash": label_page}):
        run = run_page(port, session_of(port, "vera"), **ask)
        assert not run.of("download_button") and not run.of("bidi_component"), ask
        assert any("not open to viewers" in text for text in run.texts("alert")), ask
    assert any(e.actor == "vera" and e.target == "page export" for e in accounts.audit_entries(home))


def _image_urls(port: int, cookie: str) -> dict[str, str]:
    """The image URL templates the labeling view of this session was given."""
    import json

    run = run_page(port, cookie)
    [view] = [proto for proto in run.of("bidi_component")] or pytest.fail(f"no labeling view: {run.texts('alert')}")
    data = json.loads(view.json)
    return data["urls"]


def test_images_are_served_only_to_the_session_user_while_a_member(site):
    port, home, project = site
    bob = session_of(port, "bob")
    urls = _image_urls(port, bob)
    item = storage.labeled_items(project)[0].item_id if storage.labeled_items(project) else 1
    url = urls["grid"].replace("{id}", str(item))
    assert call(port, "GET", url, cookie=bob, headers={"Accept": "*/*"})[0] == 200
    for other in ("alice", "dave"):  # another user's session, even an admin's, does not use bob's link
        status, _, body = call(port, "GET", url, cookie=session_of(port, other), headers={"Accept": "*/*"})
        assert status == 403 and "belongs to another session" in body, (other, body)
    accounts.set_member(project.root, "bob", False, actor="alice", home=home)
    try:
        status, _, body = call(port, "GET", url, cookie=bob, headers={"Accept": "*/*"})
        assert status == 403 and "bob is not a member of this project" in body
        run = run_page(port, bob)  # and the app no longer opens the project for him
        assert any("No project is open to you" in text for text in run.texts("alert")), run.texts("alert")
        assert not run.of("bidi_component")
    finally:
        accounts.set_member(project.root, "bob", True, actor="alice", home=home)
    assert call(port, "GET", url, cookie=bob, headers={"Accept": "*/*"})[0] == 200


def _widget(run, kind: str, label: str, form: str = ""):
    found = [proto for proto in run.of(kind) if proto.label == label and proto.form_id == form]
    assert found, (kind, label, [getattr(p, "label", "") for _, p in run.elements])
    return found[0]


def test_two_admins_changing_the_same_user_through_the_server_the_second_is_refused(site):
    port, home, _ = site
    accounts.add_user("root2", "admin", PASSWORD, actor="test", home=home)
    accounts.add_user("hank", "annotator", PASSWORD, actor="test", home=home)
    tabs = {name: Session(port, session_of(port, name)) for name in ("alice", "root2")}
    try:
        picked = {}
        for name, tab in tabs.items():  # both open the Users page and pick hank
            first = tab.run(page_name="users")
            pick = WidgetState(id=_widget(first, "selectbox", "User").id, string_value="hank")
            shown = tab.run(page_name="users", widgets=[pick])
            role = _widget(shown, "selectbox", "Role", "user-role")
            submit = next(p for p in shown.of("button") if p.form_id == "user-role")
            picked[name] = (pick, role.id, submit.id)

        def save_role(name: str, value: str):
            pick, role, submit = picked[name]
            widgets = [pick, WidgetState(id=role, string_value=value), WidgetState(id=submit, trigger_value=True)]
            return tabs[name].run(page_name="users", widgets=widgets)

        done = save_role("root2", "viewer")
        assert any("viewer" in text for text in done.texts("alert")), done.texts("alert")
        late = save_role("alice", "admin")  # alice's page still shows hank as he was before root2's change
    finally:
        for tab in tabs.values():
            tab.__exit__()
    errors = [text for text in late.texts("alert") if "changed by someone else since you opened this page" in text]
    assert errors, late.texts("alert")
    hank = accounts.get_user("hank", home)
    assert hank is not None and hank.role == "viewer"  # root2's change stands, alice's did nothing
    refused = [e for e in accounts.audit_entries(home) if e.action == "user.role.refused"]
    assert refused and refused[0].actor == "alice" and refused[0].target == "hank"


def test_a_user_of_no_project_sees_none_and_no_project_forms(site):
    port, _, _ = site
    run = run_page(port, session_of(port, "dave"))
    assert any("No project is open to you" in text for text in run.texts("alert")), run.texts("alert")
    labels = [getattr(proto, "label", "") for _, proto in run.elements]
    assert "Project folder on the server" not in labels and not run.of("bidi_component")


# ---------------------------------------------------------------- in a browser


def _browser_sign_in(chromium, port: int, name: str, shots: Path):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"http://127.0.0.1:{port}/labels")
    page.wait_for_selector("input[name=password]")
    page.screenshot(path=str(shots / "signin.png"))
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    return context, page


def _label_one(page, port: int, project: storage.Project, name: str, key: str, shot: Path) -> None:
    """On the Label page, signed in as `name`: the view shows the name (no name box), `key` labels the
    image shown, and the label is saved under `name`."""
    page.wait_for_selector("text=Signed in as")
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("img.pl-focus-img")
    view = "document.querySelector('[data-testid=\"stBidiComponentIsolated\"]')?.shadowRoot"
    assert page.evaluate(f"() => {view}.querySelector('.pl-who').textContent") == f"Labeling as {name}"
    assert not page.evaluate(f"() => !!{view}.querySelector('input[aria-label=\"Annotator name\"]')")
    item = int(page.get_attribute("img.pl-focus-img", "data-item-id"))
    page.keyboard.press(key)
    deadline = time.monotonic() + 30
    while not storage.label_history(project, item):
        if time.monotonic() > deadline:
            page.screenshot(path=str(shot.with_name(f"{shot.stem}-not-saved.png")))
            pytest.fail(f"{name}'s label was not saved")
        time.sleep(0.2)
    assert storage.label_history(project, item)[-1].annotator == name
    page.wait_for_function(f"() => {view}?.querySelector('.pl-sync')?.dataset.pending === '0'")
    page.screenshot(path=str(shot))


@pytest.mark.browser
def test_in_a_browser_an_annotator_labels_under_the_signed_in_name_and_signs_out(site, chromium, tmp_path):
    port, _, project = site
    context, page = _browser_sign_in(chromium, port, "bob", tmp_path)
    try:
        _label_one(page, port, project, "bob", "1", tmp_path / "labeled.png")
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert "Label" in nav and "Export" not in nav and "Project" not in nav  # an annotator's pages
        page.click("text=Sign out")
        page.wait_for_selector("input[name=password]")
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("input[name=password]")  # signed out: the app is not served
    finally:
        context.close()


@pytest.mark.browser
def test_in_a_browser_a_viewer_gets_the_progress_page_only(site, chromium, tmp_path):
    port, _, _ = site
    context, page = _browser_sign_in(chromium, port, "vera", tmp_path)
    try:
        for path in ("labels", "export"):  # asked by URL: the page never runs, the viewer's own page does
            page.goto(f"http://127.0.0.1:{port}/{path}")
            page.wait_for_selector("text=page is not open to viewers")
            page.wait_for_selector("text=Signed in as")
            page.screenshot(path=str(tmp_path / f"viewer-{path}.png"))
            assert not page.locator("text=Download").count() and not page.locator(".pl-focus-img").count()
    finally:
        context.close()


@pytest.mark.browser
def test_in_a_browser_an_admin_labels_reads_the_audit_trail_and_signs_out(site, chromium, tmp_path):
    port, home, project = site
    context, page = _browser_sign_in(chromium, port, "alice", tmp_path)
    try:
        _label_one(page, port, project, "alice", "2", tmp_path / "admin-label.png")
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert all(name in nav for name in ("Project", "Export", "Users"))
        page.goto(f"http://127.0.0.1:{port}/users")
        page.wait_for_selector("text=Change a user")
        page.wait_for_selector("text=Set password")
        page.wait_for_timeout(1500)  # the users table (a canvas) draws after the page's text
        page.screenshot(path=str(tmp_path / "admin-users.png"), full_page=True)
        page.get_by_role("tab", name="Audit").click()
        page.wait_for_selector("text=Audit trail as CSV")
        page.screenshot(path=str(tmp_path / "admin-audit.png"), full_page=True)
        with page.expect_download() as download:
            page.get_by_text("Audit trail as CSV").click()
        text = Path(download.value.path()).read_text()
        assert text.startswith("at,actor,action,target,detail,address") and ",alice,signin," in text
        deadline = time.monotonic() + 30
        while not any(e.action == "export.audit" and e.actor == "alice" for e in accounts.audit_entries(home)):
            assert time.monotonic() < deadline, "the download was not audited"
            time.sleep(0.2)
        page.click("text=Sign out")
        page.wait_for_selector("input[name=password]")
    finally:
        context.close()


# ---------------------------------------------------------------- safe by default


def test_without_accounts_localhost_works_as_before(tmp_path):
    home = tmp_path / "home"
    with server(home, None, tmp_path / "server.log") as port:
        assert call(port, "GET", "/")[0] == 200
        assert websocket_status(port) == 101
        status, headers, _ = call(port, "GET", "/signin")
        assert status == 303 and headers["location"] == "/"  # nothing to sign in to
        run = run_page(port, None, page_name="users")  # the Users page needs accounts: it says how to add one
        assert any("exists once accounts do" in text for text in run.texts("alert")), run.texts("alert")
    assert not accounts.accounts_path(home).exists()


def test_without_accounts_the_server_refuses_any_address_but_localhost(tmp_path):
    address = "0.0.0.0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_LABELER_")}
    env["PROXY_LABELER_HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "server.py"), "--server.address", address]
    command += ["--server.port", str(free_port())]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"refused to listen on {address}: no account exists" in done.stderr
    assert "proxy-labeler users add NAME --role admin" in done.stderr
