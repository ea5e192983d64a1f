"""The image route of the labeling view: sizes, orientation, tokens, the image root as a wall, and what it
refuses at once (unusable items, files over ingest's limits, files that are not regular, ids that are no item)
without holding up anything else.

Requests go through a Starlette app built from `images.routes()`, driven over ASGI (no network). A request that
could hang runs in a thread joined with HANG_GUARD_S: a guard so that a regression fails instead of hanging the
suite, not a timing check.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from PIL import Image, ImageFile, ImageOps

import storage
from app import images
from storage.ingest import BOMB, DEFAULT_MAX_FILE_BYTES

HANG_GUARD_S = 30
# Pillow warns on opening an image over its own limit; the bomb tests open one on purpose (at ingest).
quiet_bomb = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture
def app(monkeypatch):
    """The image route and a plain page served from Starlette's shared thread pool (stands in for the rest)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    monkeypatch.setattr(images, "_served", images._served)  # routes() marks the process as serving: undo after
    return Starlette(routes=[*images.routes(), Route("/other", lambda request: PlainTextResponse("another page"))])


async def fetch(app, path: str) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of GET `path`, driven over ASGI."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "server": ("testserver", 80),
        "client": ("testclient", 1),
    }
    requested = False
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal requested
        if requested:
            await anyio.sleep_forever()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {key.decode(): value.decode() for key, value in start["headers"]}
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), headers


def get(app, path: str) -> tuple[int, bytes, dict[str, str]]:
    # in a thread of its own: the session's Playwright driver (browser tests) keeps an event loop running
    # in the main thread, where anyio.run refuses to start a second one
    with ThreadPoolExecutor(1) as runner:
        return runner.submit(anyio.run, fetch, app, path).result()


def url(project, item_id: int | str, size: str) -> str:
    return f"/px/{images.token_for(str(project.root))}/{item_id}/{size}"


def bomb_png(width: int = 11_000, height: int = 10_000) -> bytes:
    """A valid grayscale PNG, all black: about 107 KB on disk, 110 megapixels once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # the filter byte, then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class Decoded(Exception):
    """Raised by a spy where the route must not open or decode."""


def forbid(monkeypatch, owner, name: str) -> list:
    """Make `owner.name` record its call and raise Decoded; returns the calls."""
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise Decoded(f"{name} was called")

    monkeypatch.setattr(owner, name, spy)
    return calls


def unblock(fifo) -> None:
    """Give a reader stuck opening `fifo` a writer that closes at once (it then reads end of file)."""
    with contextlib.suppress(OSError):  # no reader waiting: nothing to unblock
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def saved_item(project, image: Image.Image, exif=None) -> int:
    """Overwrite the first item's file with `image` (items are decoded from disk when served)."""
    item = storage.usable_items(project)[0]
    path = storage.resolve_item_path(project, item.id)
    image.save(path.with_suffix(".png") if path.suffix == ".png" else path, format="PNG", exif=exif or Image.Exif())
    return item.id


def decoded(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body))


def test_sizes_fit_the_longest_side_and_full_keeps_the_original(project):
    item_id = saved_item(project, Image.new("RGB", (3000, 2000), (10, 200, 30)))
    root = str(project.root)
    grid, grid_type = images.encode(root, item_id, "grid")
    focus, _ = images.encode(root, item_id, "focus")
    full, _ = images.encode(root, item_id, "full")
    assert grid_type == "image/jpeg"
    assert decoded(grid).size == (256, 171) and decoded(focus).size == (1600, 1067)
    assert decoded(full).size == (3000, 2000)


def test_tiny_images_stay_lossless_at_their_own_size(project):
    item = storage.usable_items(project)[1]  # the 12 px test images
    body, media_type = images.encode(str(project.root), item.id, "focus")
    assert media_type == "image/png" and decoded(body).size == (12, 12)


def test_exif_orientation_is_applied(project):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    item_id = saved_item(project, Image.new("RGB", (400, 200)), exif)
    body, _ = images.encode(str(project.root), item_id, "full")
    assert decoded(body).size == (200, 400)


def test_route_serves_registered_projects_only(project, app):
    token = images.token_for(str(project.root))
    assert images.token_for(str(project.root)) == token  # one token per project and process
    item_id = storage.usable_items(project)[1].id
    status, body, headers = get(app, f"/px/{token}/{item_id}/grid")
    assert status == 200 and headers["content-type"] == "image/png" and decoded(body).size == (12, 12)
    assert "max-age" in headers["cache-control"]
    assert get(app, f"/px/not-a-token/{item_id}/grid")[0] == 404
    assert get(app, f"/px/{token}/999999/grid")[0] == 404
    assert get(app, f"/px/{token}/{item_id}/huge")[0] == 404
    assert images.url_template(str(project.root), "focus") == f"/px/{token}/{{id}}/focus"


def test_never_reads_outside_the_image_root(project, tmp_path, app):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    item = storage.usable_items(project)[2]
    path = storage.resolve_item_path(project, item.id)
    path.unlink()
    path.symlink_to(outside)  # swapped for a link out of the root
    with pytest.raises(storage.StorageError):
        images.encode(str(project.root), item.id, "full")
    assert get(app, url(project, item.id, "full"))[0] == 404


@quiet_bomb
def test_only_usable_items_are_served_and_a_rejected_bomb_is_never_opened(project, dataset, app, monkeypatch):
    folder = dataset[0]
    first, cached = storage.usable_items(project)[:2]
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "zz_copy.png").write_bytes(storage.resolve_item_path(project, first.id).read_bytes())
    assert get(app, url(project, cached.id, "grid"))[0] == 200  # now in the grid cache
    storage.ingest(project, workers=1)
    db = storage.connect(project)
    status = {
        path: (item_id, status, reason)
        for item_id, path, status, reason in db.execute(
            "SELECT id, path, status, reason FROM items WHERE path IN ('bomb.png', 'zz_copy.png')"
        )
    }
    db.close()
    bomb, bomb_status, reason = status["bomb.png"]
    copy, copy_status, _ = status["zz_copy.png"]
    assert (bomb_status, reason, copy_status) == ("rejected", BOMB, "duplicate")
    storage.mark_missing(project, {cached.id: "file not found"})
    opened = forbid(monkeypatch, Image, "open")
    for item_id in (bomb, copy, cached.id):  # rejected at ingest, a duplicate, missing since it was cached
        for size in ("grid", "full"):
            answer, body, _ = get(app, url(project, item_id, size))
            assert answer == 404 and b"not usable" in body, (item_id, size, body)
    assert opened == []


@quiet_bomb
@pytest.mark.parametrize("size", ["grid", "full"])
def test_a_file_swapped_for_a_bomb_is_413_before_anything_is_decoded(project, app, monkeypatch, size):
    item = storage.usable_items(project)[3]
    storage.resolve_item_path(project, item.id).write_bytes(bomb_png())
    loads = forbid(monkeypatch, ImageFile.ImageFile, "load")
    answer, body, _ = get(app, url(project, item.id, size))
    assert answer == 413 and b"over the limit" in body
    assert loads == []
    assert get(app, url(project, item.id, size))[0] == 413  # the failure was not cached


def test_a_file_over_the_byte_limit_is_413_before_it_is_opened(project, app, monkeypatch):
    item = storage.usable_items(project)[4]
    os.truncate(storage.resolve_item_path(project, item.id), DEFAULT_MAX_FILE_BYTES + 1)  # sparse: no disk used
    opened = forbid(monkeypatch, Image, "open")
    answer, body, _ = get(app, url(project, item.id, "full"))
    assert answer == 413 and b"over the limit" in body
    assert opened == []


def test_a_fifo_swapped_in_for_an_item_is_refused_at_once(project, app):
    item = storage.usable_items(project)[5]
    path = storage.resolve_item_path(project, item.id)
    path.unlink()
    os.mkfifo(path)  # nobody ever writes to it
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(answer=get(app, url(project, item.id, "full"))), daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    if thread.is_alive():
        unblock(path)  # let the stuck request end, then fail
        thread.join(HANG_GUARD_S)
        pytest.fail("the request was left waiting on a FIFO")
    answer, body, _ = result["answer"]
    assert answer == 404 and b"not a regular file" in body


def test_an_id_too_large_for_sqlite_is_404_without_a_traceback(project, app, caplog):
    caplog.set_level(logging.DEBUG)
    answer, body, _ = get(app, url(project, "99999999999999999999999", "grid"))
    assert answer == 404 and b"no item with id" in body
    assert [record for record in caplog.records if record.exc_info] == []


def test_stuck_image_work_leaves_the_other_pages_served(project, app, monkeypatch):
    """Three image requests stuck decoding hold none of Starlette's shared threads (made 2 here): another page
    is answered while they are still stuck."""
    release = threading.Event()
    entered = threading.Semaphore(0)
    transpose = ImageOps.exif_transpose

    def stuck(image, **kwargs):
        entered.release()
        release.wait()
        return transpose(image, **kwargs)

    monkeypatch.setattr(ImageOps, "exif_transpose", stuck)
    ids = [item.id for item in storage.usable_items(project)[6:9]]
    outcome: dict = {"images": []}

    async def image(item_id: int) -> None:
        outcome["images"].append((await fetch(app, url(project, item_id, "full")))[0])

    async def scenario() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        async with anyio.create_task_group() as group:
            for item_id in ids:
                group.start_soon(image, item_id)
            for _ in range(2):  # two decodes are stuck
                while not entered.acquire(blocking=False):
                    await anyio.sleep(0.01)
            status, body, _ = await fetch(app, "/other")
            outcome["other"] = (status, body, not release.is_set())
            release.set()

    thread = threading.Thread(target=anyio.run, args=(scenario,), daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    release.set()  # a regression leaves the other page waiting on the stuck decodes: free them and fail below
    thread.join(HANG_GUARD_S)
    assert outcome.get("other") == (200, b"another page", True)
    assert outcome["images"] == [200, 200, 200]
