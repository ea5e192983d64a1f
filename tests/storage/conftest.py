"""Fixtures for storage tests: tiny generated images and fresh temp-dir projects."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

import storage


def png_bytes(seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small PNG whose content differs for each seed."""
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 7))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, start: int = 0) -> list[str]:
    """Write `count` distinct PNGs named img_0000.png...; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in range(start, start + count):
        name = f"img_{seed:04d}.png"
        (folder / name).write_bytes(png_bytes(seed))
        names.append(name)
    return names


def settings_for(image_root: Path, **overrides) -> storage.Settings:
    """Small valid settings for `image_root`."""
    values = dict(
        image_root=str(image_root),
        classes=("cat", "dog", "bird"),
        budget=10,
        round_size=4,
        initial_size=4,
        validation_size=0,
    )
    values.update(overrides)
    return storage.Settings(**values)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """A folder with 20 distinct small PNGs."""
    root = tmp_path / "images"
    write_images(root, 20)
    return root


@pytest.fixture
def empty_project(tmp_path: Path, image_root: Path) -> storage.Project:
    """A created project over `image_root`, nothing ingested yet."""
    return storage.create_project(tmp_path / "project", settings_for(image_root))


@pytest.fixture
def project(empty_project: storage.Project) -> storage.Project:
    """A project with its 20 images ingested (item ids 1..20 in name order)."""
    storage.ingest(empty_project)
    return empty_project
