"""Images for the labeling view, served over HTTP at /px/<token>/<item id>/<size>.

The browser view (app/labeler.py) prefetches and caches images by URL, so
the next image shows at once. A project is reachable only through a random
token this server process made when one of its pages registered the project:
the route never takes a path from the browser, and opens only files that
`storage.resolve_item_path` resolves inside the project's image root.

`server.py` mounts `routes()`; started any other way (`streamlit run
streamlit_app.py`), `served()` is False and the Label page says how to start.
"""

from __future__ import annotations

import functools
import io
import secrets
import threading
from pathlib import Path

from PIL import Image, ImageOps

import storage

PREFIX = "/px"
SIZES = {"grid": 256, "focus": 1600}  # longest side in pixels; "full" is the original resolution
FULL = "full"
_lock = threading.Lock()
_tokens: dict[str, str] = {}  # token -> project root
_by_root: dict[str, str] = {}  # project root -> token
_served = False


def token_for(project_root: str) -> str:
    """This process's token for a project (made on first use)."""
    with _lock:
        token = _by_root.get(project_root)
        if token is None:
            token = secrets.token_urlsafe(16)
            _by_root[project_root], _tokens[token] = token, project_root
        return token


def url_template(project_root: str, size: str) -> str:
    """URL of an image with `{id}` in place of the item id."""
    return f"{PREFIX}/{token_for(project_root)}/{{id}}/{size}"


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


def encode(project_root: str, item_id: int, size: str) -> tuple[bytes, str]:
    """(bytes, media type) of an item at `size`, upright (EXIF orientation applied)."""
    if size != FULL and size not in SIZES:
        raise ValueError(f"unknown image size {size!r}")
    path = storage.resolve_item_path(storage.Project(Path(project_root)), item_id)
    with Image.open(path) as image:
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


# Items never change once ingested, so encoded images are cached (grid tiles ~10 KB, focus ~150 KB).
_grid_cache = functools.lru_cache(maxsize=4096)(encode)
_focus_cache = functools.lru_cache(maxsize=256)(encode)


def cached(project_root: str, item_id: int, size: str) -> tuple[bytes, str]:
    if size == "grid":
        return _grid_cache(project_root, item_id, size)
    if size == "focus":
        return _focus_cache(project_root, item_id, size)
    return encode(project_root, item_id, size)


def _serve(request):
    from starlette.responses import PlainTextResponse, Response

    root = _tokens.get(request.path_params["token"])
    if root is None:
        return PlainTextResponse("unknown project token (the server restarted?): reload the page", status_code=404)
    try:
        body, media_type = cached(root, int(request.path_params["item_id"]), request.path_params["size"])
    except (storage.StorageError, OSError, ValueError) as exc:
        return PlainTextResponse(f"cannot show this image: {exc}", status_code=404)
    return Response(body, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


def routes() -> list:
    """The Starlette route serving the images; marks this process as serving them."""
    from starlette.routing import Route

    global _served
    _served = True
    return [Route(PREFIX + "/{token}/{item_id:int}/{size}", _serve, methods=["GET"])]
