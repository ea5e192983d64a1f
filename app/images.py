"""Images for the labeling view, served over HTTP at /px/<token>/<item id>/<size>.

The browser view (app/labeler.py) prefetches and caches images by URL, so
the next image shows at once. A project is reachable only through a random
token this server process made when one of its pages registered the project:
the route never takes a path from the browser. Once accounts exist a token is
made for one signed-in user and one project: the route serves it only to a
request whose session (app/auth.py) is that user's, while the user may still
open the project (a member, or an admin); anything else is a 403.

What the route serves, and how (docs/app.md, "Safety"):
- only usable items: `storage.resolve_item_path` refuses an id that is not
  an item, a file rejected at ingest, a duplicate or a missing file, and a
  path that resolves outside the image root;
- only regular files, opened without blocking: non-blocking, not following a
  link swapped in after the path was resolved, and checked with `fstat`
  before a byte is read (a FIFO or a device in the image folder is a 404 at
  once, never a stalled request);
- within ingest's limits (storage/ingest.py): a file over its byte limit, or
  whose header declares more pixels than its pixel limit, is a 413 before
  anything is decoded (our own check, not Pillow's global bomb limit);
- in a small pool of its own threads (`WORKERS`), never on the event loop
  and never in the thread pool Starlette shares with the other routes, so
  slow images cannot starve the app;
- anything that cannot be served is a 404 or 413 with a one-line message,
  never a 500. Encoded grid and focus images are cached; failures never are.

`server.py` mounts `routes()`; started any other way (`streamlit run
streamlit_app.py`), `served()` is False and the Label page says how to start.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import secrets
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

import storage
from storage import accounts
from storage.ingest import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, FORMATS

PREFIX = "/px"
SIZES = {"grid": 256, "focus": 1600}  # longest side in pixels; "full" is the original resolution
FULL = "full"
WORKERS = 4  # threads decoding and encoding images; requests beyond them wait their turn
MAX_FILE_BYTES = DEFAULT_MAX_FILE_BYTES  # the limits ingest applied to every usable item
MAX_PIXELS = DEFAULT_MAX_PIXELS
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
# What a file that does not decode raises in Pillow (the list ingest catches).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="px-image")
_log = logging.getLogger(__name__)
_lock = threading.Lock()
Grant = tuple[str, str | None]  # (project root, the signed-in user's name; None without accounts)
_tokens: dict[str, Grant] = {}  # token -> what it opens
_by_grant: dict[Grant, str] = {}
_served = False


def token_for(project_root: str, user: accounts.User | None = None) -> str:
    """This process's token for a project, for the signed-in `user` (None without accounts); made on
    first use."""
    grant = (project_root, user.name.casefold() if user else None)
    with _lock:
        token = _by_grant.get(grant)
        if token is None:
            token = secrets.token_urlsafe(16)
            _by_grant[grant], _tokens[token] = token, grant
        return token


def url_template(project_root: str, size: str, user: accounts.User | None = None) -> str:
    """URL of an image with `{id}` in place of the item id, for the signed-in `user`."""
    return f"{PREFIX}/{token_for(project_root, user)}/{{id}}/{size}"


def refused(grant: Grant, user: accounts.User | None) -> str | None:
    """Why the request's signed-in `user` (None: no session, the server has no accounts) may not use a
    token made for `grant`, or None when it may."""
    root, owner = grant
    if user is None and owner is None:
        return None
    if user is None or owner != user.name.casefold():
        return "this image link belongs to another session: reload the page"
    if not accounts.may_open(user, root):
        return f"{user.name} is not a member of this project"
    return None


def served() -> bool:
    """True when this process serves the image route (started through server.py)."""
    return _served


def fit(image: Image.Image, longest: int) -> Image.Image:
    """Shrink to `longest` pixels on the longest side; smaller images stay as they are
    (the browser scales them up without smoothing)."""
    width, height = image.size
    if max(width, height) <= longest:
        return image
    ratio = longest / max(width, height)
    return image.resize((max(1, round(width * ratio)), max(1, round(height * ratio))), Image.Resampling.LANCZOS)


class NotServed(Exception):
    """An image the route will not serve: `status` is 404, or 413 over ingest's limits."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


def encode(project_root: str, item_id: int, size: str) -> tuple[bytes, str]:
    """(bytes, media type) of a usable item at `size`, upright (EXIF orientation applied).

    StorageError for an id that is not a usable item inside the image root;
    NotServed for an unknown size, a file that is not a regular file, or one
    over ingest's limits (status 413); Pillow's errors for one that no longer decodes.
    """
    return render(_usable_path(project_root, item_id, size), size)


def _usable_path(project_root: str, item_id: int, size: str) -> Path:
    if size != FULL and size not in SIZES:
        raise NotServed(f"unknown image size {size!r}")
    return storage.resolve_item_path(storage.Project(Path(project_root)), item_id)


def render(path: Path, size: str) -> tuple[bytes, str]:
    """Decode the file at `path` (a resolved path inside the image root) and encode it at `size`."""
    with _open_regular(path) as handle, Image.open(handle, formats=FORMATS) as image:
        width, height = image.size  # from the header: nothing is decoded yet
        if width * height > MAX_PIXELS:
            raise NotServed(f"{width}x{height} pixels is over the limit of {MAX_PIXELS:,}", status=413)
        image.seek(0)
        picture = ImageOps.exif_transpose(image).convert("RGB")
    if size != FULL:
        picture = fit(picture, SIZES[size])
    out = io.BytesIO()
    if max(picture.size) <= 128:  # tiny images: lossless, every pixel matters
        picture.save(out, format="PNG")
        return out.getvalue(), "image/png"
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue(), "image/jpeg"


def _open_regular(path: Path) -> io.BufferedReader:
    """Open a regular file for reading without ever blocking.

    Non-blocking, so a FIFO or a device cannot stall the open; O_NOFOLLOW, so
    a link swapped in after `resolve_item_path` resolved the path is refused
    (links inside the root were resolved there); `fstat` on the descriptor,
    so what is checked is what is read.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise NotServed(f"cannot open the file: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotServed("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise NotServed(f"{info.st_size:,} bytes is over the limit of {MAX_FILE_BYTES:,}", status=413)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# Items never change once ingested, so encoded images are cached (grid tiles ~10 KB, focus ~150 KB),
# by resolved path and size; whether the item is still usable is checked on every request.
_grid_cache = functools.lru_cache(maxsize=4096)(render)
_focus_cache = functools.lru_cache(maxsize=256)(render)


def cached(project_root: str, item_id: int, size: str) -> tuple[bytes, str]:
    """`encode`, from the cache for the grid and focus sizes."""
    path = _usable_path(project_root, item_id, size)
    if size == "grid":
        return _grid_cache(path, size)
    if size == "focus":
        return _focus_cache(path, size)
    return render(path, size)


def answer(token: str, item_id: int, size: str, user: accounts.User | None = None):
    """The response to one image request from the signed-in `user` (set by app/auth.py's middleware);
    blocking work, run in the image pool. Never raises."""
    from starlette.responses import PlainTextResponse, Response

    grant = _tokens.get(token)
    if grant is None:
        return PlainTextResponse("unknown project token (the server restarted?): reload the page", status_code=404)
    try:
        why = refused(grant, user)
    except storage.StorageError as exc:  # the accounts file cannot be read: nothing is served
        return PlainTextResponse(f"cannot show this image: {exc}", status_code=503)
    if why is not None:
        return PlainTextResponse(f"cannot show this image: {why}", status_code=403)
    root = grant[0]
    try:
        body, media_type = cached(root, item_id, size)
    except NotServed as exc:
        return PlainTextResponse(f"cannot show this image: {exc}", status_code=exc.status)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, should ours ever be above it
        return PlainTextResponse(f"cannot show this image: {exc}", status_code=413)
    except storage.StorageError as exc:
        return PlainTextResponse(f"cannot show this image: {exc}", status_code=404)
    except _DECODE_ERRORS as exc:
        return PlainTextResponse(f"cannot show this image: it does not decode ({type(exc).__name__})", status_code=404)
    except Exception as exc:  # never a 500 for a file: say what it was, without a traceback
        _log.warning("image %s of %s not served: %r", item_id, root, exc)
        return PlainTextResponse("cannot show this image", status_code=404)
    return Response(body, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


async def _serve(request):
    """The route: image work goes to the image pool, so the event loop and Starlette's
    shared thread pool stay free for every other request."""
    params = request.path_params
    user = request.scope.get("state", {}).get("user")  # app/auth.py's SignIn: the session's user
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, answer, params["token"], params["item_id"], params["size"], user)


def routes() -> list:
    """The Starlette route serving the images; marks this process as serving them."""
    from starlette.routing import Route

    global _served
    _served = True
    return [Route(PREFIX + "/{token}/{item_id:int}/{size}", _serve, methods=["GET"])]
