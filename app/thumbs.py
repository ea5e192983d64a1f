"""Thumbnails: tiny images scaled up by whole pixels (no blur), large ones scaled down.

Only images resolved inside the project's image root are ever opened
(`storage.resolve_item_path`). Thumbnails are PNG bytes cached per item and
size: an item's file never changes once ingested.
"""
from __future__ import annotations

import io
from pathlib import Path

import streamlit as st
from PIL import Image, ImageOps

import storage

GRID_PX = 128
FOCUS_PX = 288


def scale_image(image: Image.Image, size: int) -> Image.Image:
    """Fit `image` into size x size: nearest-neighbour by a whole factor when smaller, else a box filter."""
    width, height = image.size
    longest = max(width, height)
    if longest <= size:
        factor = max(1, size // longest)
        return image.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    ratio = size / longest
    return image.resize((max(1, round(width * ratio)), max(1, round(height * ratio))), Image.Resampling.BOX)


@st.cache_data(max_entries=20_000, show_spinner=False)
def thumbnail(project_root: str, item_id: int, size: int) -> bytes:
    """PNG bytes of item `item_id` fitted into size x size pixels."""
    path = storage.resolve_item_path(storage.Project(Path(project_root)), item_id)
    with Image.open(path) as image:
        image.seek(0)
        picture = ImageOps.exif_transpose(image).convert("RGB")
    out = io.BytesIO()
    scale_image(picture, size).save(out, format="PNG", compress_level=1)
    return out.getvalue()
