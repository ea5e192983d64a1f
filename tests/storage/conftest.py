"""Fixtures for storage tests: tiny generated images and fresh temp-dir projects (helpers: tests/support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage
from tests.support import PETS, tiny_settings, write_image_folder


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """A folder with 20 distinct small PNGs, img_0000.png ... img_0019.png."""
    root = tmp_path / "images"
    write_image_folder(root, classes=1, per_class=20, size=8, flat=True)
    return root


@pytest.fixture
def empty_project(tmp_path: Path, image_root: Path) -> storage.Project:
    """A created project over `image_root`, nothing ingested yet."""
    return storage.create_project(tmp_path / "project", tiny_settings(image_root, PETS, budget=10, initial_size=4))


@pytest.fixture
def project(empty_project: storage.Project) -> storage.Project:
    """A project with its 20 images ingested (item ids 1..20 in name order)."""
    storage.ingest(empty_project)
    return empty_project
