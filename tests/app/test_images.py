"""The image route of the labeling view: sizes, orientation, tokens, and the image root as a wall."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import storage
from app import images


class Request:
    def __init__(self, token: str, item_id: int, size: str):
        self.path_params = {"token": token, "item_id": item_id, "size": size}


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


def test_route_serves_registered_projects_only(project):
    token = images.token_for(str(project.root))
    assert images.token_for(str(project.root)) == token  # one token per project and process
    item_id = storage.usable_items(project)[1].id
    ok = images._serve(Request(token, item_id, "grid"))
    assert ok.status_code == 200 and ok.media_type == "image/png" and decoded(ok.body).size == (12, 12)
    assert "max-age" in ok.headers["cache-control"]
    assert images._serve(Request("not-a-token", item_id, "grid")).status_code == 404
    assert images._serve(Request(token, 999_999, "grid")).status_code == 404
    assert images._serve(Request(token, item_id, "huge")).status_code == 404
    assert images.url_template(str(project.root), "focus") == f"/px/{token}/{{id}}/focus"


def test_never_reads_outside_the_image_root(project, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    item = storage.usable_items(project)[2]
    path = storage.resolve_item_path(project, item.id)
    path.unlink()
    path.symlink_to(outside)  # swapped for a link out of the root
    with pytest.raises(storage.StorageError):
        images.encode(str(project.root), item.id, "full")
    assert images._serve(Request(images.token_for(str(project.root)), item.id, "full")).status_code == 404
