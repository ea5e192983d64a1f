"""Sign-in in front of the whole server, once accounts exist (storage/accounts.py).

`SignIn` is an ASGI middleware that server.py puts before everything it mounts: Streamlit's pages,
static files, media and uploads, its websocket (`/_stcore/stream`), and the image route (`/px/...`).
While accounts.db holds no user it passes every request through untouched (the local tool as it was;
server.py then refuses any address but localhost). Once a user exists:

- `/signin` shows a form (GET) and checks a name and password (POST); a good pair sets the session
  cookie and goes back to the page asked for; `/signout` clears it and ends the session on the server
  (its signature is kept as signed out until it would have expired), so another tab that still holds
  it, or a copy of the cookie, is refused too;
- every other request needs a valid session cookie: a page is redirected to `/signin`, anything else
  (websocket, images, media, uploads) is refused with 401 or 403 and a one-line reason;
- `/_stcore/health` stays open (it says only "ok").

The session cookie is `name.epoch.issued.nonce` (the nonce tells apart two sign-ins of one second)
signed with HMAC-SHA256 under a secret made once with `secrets` and kept in the home folder (0600):
HttpOnly, SameSite=Strict, Secure when the request came over TLS, with an expiry (`SESSION_S`). Every
request re-reads the user: a disabled user, or one whose password or role changed (the epoch moved), or
a session signed out, is refused at once.

A refused cookie (forged, expired, of a disabled user) is audited as `session.refused`, at most once a
minute per address, name and reason.

Failed sign-ins are slowed per user name and per address (`Throttle`): after `FREE_FAILURES` failures
each attempt waits twice as long as the one before, up to `max_wait_s()`; while a name or address is
waiting every attempt, even with the right password, is refused with 429 and Retry-After.

Nothing here imports Streamlit: the script reads the same cookie through `st.context.cookies`
(app/state.py, `session_user`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

from storage import accounts

COOKIE = "proxy_labeler_session"
SIGNIN, SIGNOUT = "/signin", "/signout"
OPEN_PATHS = ("/_stcore/health",)  # answers "ok", nothing else; the test helpers wait on it
SECRET_FILE = "session_secret"
SESSION_S = 12 * 3600  # a session lasts a working day
FREE_FAILURES = 5  # failed sign-ins per name or address before each attempt waits
ENV_MAX_WAIT = "PROXY_LABELER_SIGNIN_MAX_WAIT_S"
MAX_FORM_BYTES = 8192
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def max_wait_s() -> float:
    """The longest a name or address waits between failed sign-ins (PROXY_LABELER_SIGNIN_MAX_WAIT_S, 60 s)."""
    try:
        return max(0.0, float(os.environ.get(ENV_MAX_WAIT, "60")))
    except ValueError:
        return 60.0


# ---------------------------------------------------------------- the signed session


def secret(home: Path | None = None) -> bytes:
    """The signing key, made once (32 random bytes) and kept in the home folder, readable by its owner."""
    path = (accounts.home_dir() if home is None else home) / SECRET_FILE
    try:
        value = path.read_bytes()
        if len(value) >= 32:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # the first process to get here wins; the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(name: str, epoch: int, issued_at: float | None = None, home: Path | None = None) -> str:
    """A session token for `name` at session epoch `epoch`, issued at `issued_at` (now)."""
    issued = int(time.time() if issued_at is None else issued_at)
    body = f"{name}.{epoch}.{issued}.{secrets.token_hex(8)}"
    mac = hmac.new(secret(home), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


@dataclass(frozen=True)
class Session:
    user: accounts.User | None  # None: refused, `reason` says why
    reason: str = ""
    name: str = ""  # a refused cookie's user name, when this server signed it (expired, disabled, ended)


def check_token(token: str | None, home: Path | None = None, now: float | None = None) -> Session:
    """The signed-in user of a session token, or why there is none (a sentence for the person)."""
    if not token:
        return Session(None, "you are not signed in")
    parts = token.split(".")
    if len(parts) != 5:
        return Session(None, "the session cookie is not one this server made; sign in again")
    name, epoch, issued, nonce, mac = parts
    body = f"{name}.{epoch}.{issued}.{nonce}"
    expected = _b64(hmac.new(secret(home), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        return Session(None, "the session cookie is not one this server made; sign in again")
    now = time.time() if now is None else now
    if not (epoch.isdigit() and issued.isdigit()) or now - int(issued) > SESSION_S or int(issued) > now + 60:
        return Session(None, "your session expired; sign in again", name)
    user, signed_out = accounts.session_user(name, mac, home)
    if user is None:
        return Session(None, "your account no longer exists", name)
    if signed_out:
        return Session(None, "you signed out of this session; sign in again", name)
    if not user.enabled:
        return Session(None, "your account is disabled; ask an admin", name)
    if user.session_epoch != int(epoch):
        return Session(None, "your session was ended (password or role changed); sign in again", name)
    return Session(user)


def end_session(token: str, address: str, home: Path | None = None) -> None:
    """Sign out the (valid) session `token`: refused from now on, also on a websocket already open."""
    name, _, issued, _, mac = token.split(".")
    accounts.sign_out(name, mac, int(issued) + SESSION_S, address=address, home=home)


class RefusalLog:
    """Refused session cookies go to the audit trail, each (address, name, reason) at most once a minute,
    so a flood of forged cookies cannot flood the trail."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def due(self, key: tuple[str, str, str], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._last) > 10_000:
                self._last = {k: t for k, t in self._last.items() if now - t < self.EVERY_S}
            if now - self._last.get(key, -self.EVERY_S) < self.EVERY_S:
                return False
            self._last[key] = now
            return True


REFUSALS = RefusalLog()


def audit_refused(session: Session, address: str, where: str, home: Path | None = None) -> None:
    """Write a refused cookie (forged, expired, of a disabled user) to the audit trail, rate-limited."""
    who = session.name or "?"  # a name only from a cookie this server signed
    if REFUSALS.due((address, who, session.reason)):
        accounts.audit(who, "session.refused", where[:200], session.reason, address=address, home=home)


# ---------------------------------------------------------------- slowing failed sign-ins


class Throttle:
    """Failed sign-ins per key (a user name, an address): after FREE_FAILURES each attempt waits."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until any of `keys` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [self._until(key) - now for key in keys]
        return max([0.0, *waits])

    def _until(self, key: str) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count < FREE_FAILURES:
            return 0.0
        return last + min(2.0 ** (count - FREE_FAILURES), max_wait_s())

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of names: forget the oldest half
                for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:50_000]:
                    del self._failures[key]
            for key in keys:
                self._failures[key] = (self._failures.get(key, (0, 0.0))[0] + 1, now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


THROTTLE = Throttle()


def _keys(name: str, address: str) -> list[str]:
    return [f"user:{name.casefold()[:64]}", f"addr:{address}"]


# ---------------------------------------------------------------- the middleware


def _cookie(headers: dict[str, str]) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _address(scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _safe_next(value: str | None) -> str:
    """A path on this server to go back to after signing in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value if value not in (SIGNIN, SIGNOUT) else "/"


def session_cookie(token: str, secure: bool, max_age: int = SESSION_S) -> str:
    parts = [f"{COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={max_age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sign in · Proxy Labeler</title>
<style>
body {{ font-family: system-ui, sans-serif; display: flex; justify-content: center; margin-top: 12vh; }}
form {{ display: flex; flex-direction: column; gap: .6rem; width: 18rem; }}
label {{ display: flex; flex-direction: column; gap: .2rem; }}
input, button {{ font-size: 1rem; padding: .45rem; }}
.error {{ color: #b00020; }}
</style></head>
<body><form method="post" action="/signin">
<h1>Proxy Labeler</h1>
<p class="error" role="alert">{message}</p>
<label>User name <input name="name" autocomplete="username" required autofocus value="{name}"></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form></body></html>
"""


def signin_page(message: str = "", name: str = "", next_path: str = "/") -> str:
    return PAGE.format(message=html.escape(message), name=html.escape(name), next=html.escape(next_path))


class SignIn:
    """ASGI middleware: sign-in in front of everything once accounts exist (see the module's doc)."""

    def __init__(self, app, home: Path | None = None) -> None:
        self.app = app
        self.home = home

    async def __call__(self, scope, receive, send) -> None:
        import anyio.to_thread

        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        token = _cookie(headers)

        def look() -> tuple[bool, Session]:
            if not accounts.has_accounts(self.home):
                return False, Session(None)
            return True, check_token(token, self.home)

        active, session = await anyio.to_thread.run_sync(look)
        if not active:
            if path in (SIGNIN, SIGNOUT):
                await _redirect(send, "/")  # no accounts yet: nothing to sign in to
                return
            await self.app(scope, receive, send)
            return
        if path == SIGNIN and scope["type"] == "http":
            await self._signin(scope, receive, send, headers)
            return
        if path == SIGNOUT and scope["type"] == "http":
            if session.user is not None and token:  # the session ends on the server too, in every open tab
                await anyio.to_thread.run_sync(end_session, token, _address(scope), self.home)
            await _redirect(send, SIGNIN, session_cookie("", _secure(scope), max_age=0))
            return
        if session.user is not None and scope["type"] == "websocket" and not _same_origin(headers):
            # a page of another site opening our websocket with the user's cookie (SameSite=Strict already
            # keeps browsers from sending it; this holds for browsers that do not honour it)
            who, address = session.user.name, _address(scope)
            await anyio.to_thread.run_sync(_audit, who, "websocket.cross-site", address, self.home)
            await send({"type": "websocket.close", "code": 1008, "reason": "refused: opened from another site"})
            return
        if session.user is not None:
            scope.setdefault("state", {})["user"] = session.user
            await self.app(scope, receive, _framed_by_us_only(send) if scope["type"] == "http" else send)
            return
        if token:  # a cookie was sent and refused: forged, expired, or its user disabled since
            await anyio.to_thread.run_sync(audit_refused, session, _address(scope), path, self.home)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": session.reason[:120]})  # a 403
            return
        method = scope.get("method", "GET")
        if method == "GET" and "text/html" in headers.get("accept", ""):
            query = urllib.parse.urlencode({"next": path})
            await _redirect(send, f"{SIGNIN}?{query}")
            return
        await _text(send, 401, f"sign in first: {session.reason}")

    async def _signin(self, scope, receive, send, headers: dict[str, str]) -> None:
        import anyio.to_thread

        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope.get("method") != "POST":
            await _html(send, 200, signin_page(next_path=_safe_next((query.get("next") or ["/"])[0])))
            return
        if headers.get("sec-fetch-site") == "cross-site" or not _same_origin(headers):
            await _text(send, 403, "refused: a sign-in must come from this server's own page")
            return
        body = await _read_body(receive, MAX_FORM_BYTES)
        if body is None:
            await _text(send, 413, "refused: the sign-in form is too large")
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        name = (form.get("name") or [""])[0].strip()
        password = (form.get("password") or [""])[0]
        next_path = _safe_next((form.get("next") or ["/"])[0])
        address = _address(scope)
        keys = _keys(name, address)
        shown = name if accounts.NAME_PATTERN.fullmatch(name) else ""
        wait = THROTTLE.wait_s(keys)
        if wait > 0:
            await anyio.to_thread.run_sync(_audit, name, "signin.throttled", address, self.home)
            seconds = max(1, int(wait + 0.999))
            page = signin_page(f"Too many failed sign-ins: try again in {seconds} s.", shown, next_path)
            await _html(send, 429, page, [(b"retry-after", str(seconds).encode())])
            return
        user = await anyio.to_thread.run_sync(lambda: accounts.authenticate(name, password, self.home))
        if user is None or not user.enabled:
            THROTTLE.failed(keys)
            why = "wrong user name or password" if user is None else "account disabled"
            await anyio.to_thread.run_sync(_audit, name, f"signin.failed: {why}", address, self.home)
            message = "Wrong user name or password." if user is None else "This account is disabled; ask an admin."
            await _html(send, 401 if user is None else 403, signin_page(message, shown, next_path))
            return
        THROTTLE.succeeded(keys[:1])
        await anyio.to_thread.run_sync(_audit, user.name, "signin", address, self.home)
        token = await anyio.to_thread.run_sync(lambda: sign(user.name, user.session_epoch, home=self.home))
        await _redirect(send, next_path, session_cookie(token, _secure(scope)))


def _audit(name: str, action: str, address: str, home: Path | None) -> None:
    shown = name if accounts.NAME_PATTERN.fullmatch(name) else repr(name)[:70]
    accounts.audit(shown, action, address=address, home=home)


def _secure(scope) -> bool:
    return scope.get("scheme") in ("https", "wss")


def _same_origin(headers: dict[str, str]) -> bool:
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urllib.parse.urlsplit(origin).netloc == headers.get("host", "")


async def _read_body(receive, limit: int) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


FRAMING = [(b"x-frame-options", b"SAMEORIGIN"), (b"content-security-policy", b"frame-ancestors 'self'")]


def _framed_by_us_only(send):
    """`send` with every response marked as not to be framed by another site: a signed-in page inside a
    hidden frame of another site could be clicked into admin actions (Streamlit's own frames are ours)."""

    async def wrapped(message) -> None:
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(name, value) for name, value in FRAMING if name not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _respond(send, status: int, body: bytes, content_type: bytes, extra: list | None = None) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-frame-options", b"DENY"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _text(send, status: int, text: str) -> None:
    await _respond(send, status, (text + "\n").encode(), b"text/plain; charset=utf-8")


async def _html(send, status: int, page: str, extra: list | None = None) -> None:
    await _respond(send, status, page.encode(), b"text/html; charset=utf-8", extra)


async def _redirect(send, location: str, cookie: str | None = None) -> None:
    extra = [(b"location", location.encode("latin-1", "replace"))]
    if cookie is not None:
        extra.append((b"set-cookie", cookie.encode("latin-1")))
    await _respond(send, 303, b"", b"text/plain", extra)


# ---------------------------------------------------------------- safe by default


def check_listen_address(address: str | None, home: Path | None = None) -> None:
    """SystemExit, saying how to add the first admin, when the server would listen beyond localhost
    while no account exists (anyone reaching it could label, change settings and export)."""
    if (address or "") in LOCAL_ADDRESSES or accounts.has_accounts(home):
        return
    shown = address or "every address (0.0.0.0, Streamlit's default)"
    raise SystemExit(
        f"refused to listen on {shown}: no account exists, so anyone reaching the server could use it. "
        "Either keep it on localhost (--server.address 127.0.0.1), or add the first admin with "
        "`proxy-labeler users add NAME --role admin` and start it again: every request then needs a sign-in "
        f"(accounts live in {accounts.accounts_path(home)})."
    )
