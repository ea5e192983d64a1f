"""Shared engine fixtures: tiny generated image folders with ground truth, tiny projects.

`write_image_folder` and `label_by_folder` are plain functions other test
modules may import; the fixtures wrap them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import storage

# Far-apart colors: a proxy of a few dozen steps already tells these classes apart.
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "cyan": (30, 220, 220),
    "magenta": (220, 30, 220),
}
CLASS_NAMES = tuple(PALETTE)


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared CPU cores: one torch thread per test keeps runs comparable and reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_image_folder(
    root: Path,
    classes: int = 3,
    per_class: int = 10,
    size: int = 12,
    *,
    seed: int = 0,
    fmt: str = "png",
    start: int = 0,
) -> dict[str, str]:
    """Write `root/<class>/img_NNNN.<fmt>`: class-colored noisy images; return {relative path: class}.

    Each image is its class color plus per-pixel noise and a random bright
    square, so every file is distinct (ingest dedupes by content) and the
    classes stay separable. `start` offsets the file numbers, to add images
    to an existing folder.
    """
    if not 1 <= classes <= len(PALETTE):
        raise ValueError(f"classes must be 1..{len(PALETTE)}")
    rng = np.random.default_rng(seed)
    truth = {}
    for name in CLASS_NAMES[:classes]:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            pixels = np.array(PALETTE[name], np.int16) + rng.integers(-25, 26, (size, size, 3))
            y, x = rng.integers(0, size - 2, 2)
            pixels[y : y + 3, x : x + 3] = 255
            relative = f"{name}/img_{i:04d}.{fmt}"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / relative)
            truth[relative] = name
    return truth


def label_by_folder(project: storage.Project, item_ids, annotator: str = "oracle") -> None:
    """Label items with the class folder they were written to (the ground truth)."""
    paths = {item.id: item.path for item in storage.usable_items(project)}
    for item_id in item_ids:
        storage.set_label(project, item_id, paths[item_id].split("/")[0], annotator=annotator)


def label_queue(project: storage.Project, round_id: int | None = None) -> list[int]:
    """Oracle-label every open item of a round (default: the latest); return their ids."""
    if round_id is None:
        round_id = storage.current_round(project).id
    ids = [item_id for item_id, _ in storage.round_queue(project, round_id)]
    label_by_folder(project, ids)
    return ids


def tiny_settings(image_root: Path, classes: int = 3, **overrides) -> storage.Settings:
    """Settings for a fast CPU project: 8 px, 30 optimizer steps per training run."""
    values = dict(
        image_root=str(image_root),
        classes=CLASS_NAMES[:classes],
        budget=14,
        round_size=4,
        initial_size=6,
        validation_size=0,
        strategy="least_confidence",
        proxy="proxy_tiny",
        target="resnet20",
        image_size=8,
        seed=0,
        device="cpu",
        proxy_steps=30,
        target_steps=30,
    )
    values.update(overrides)
    return storage.Settings(**values)


def make_tiny_project(tmp_path: Path, classes: int = 3, per_class: int = 10, **overrides) -> storage.Project:
    """Generate images under tmp_path/images, create and ingest a project at tmp_path/project."""
    write_image_folder(tmp_path / "images", classes=classes, per_class=per_class)
    project = storage.create_project(tmp_path / "project", tiny_settings(tmp_path / "images", classes, **overrides))
    storage.ingest(project, workers=1)
    return project


@pytest.fixture
def make_image_folder():
    """The `write_image_folder` function, as a fixture."""
    return write_image_folder


@pytest.fixture
def tiny_project(tmp_path: Path) -> storage.Project:
    """A 3-class, 30-image ingested project with tiny settings (see `tiny_settings`)."""
    return make_tiny_project(tmp_path)


@pytest.fixture
def labeled_project(tiny_project: storage.Project) -> storage.Project:
    """`tiny_project` after round 0 (6 random items) was made and labeled by the oracle."""
    from engine.round import run_initial_round

    run_initial_round(tiny_project)
    label_queue(tiny_project)
    return tiny_project


def write_ssl_backbone(folder: Path) -> Path:
    """An untrained tiny SSL backbone exported as a project saves it (weights + meta); its weights path."""
    import dataclasses

    from engine.embeddings import save_ssl_backbone
    from engine.models import model_from_config
    from engine.ssl import SSLConfig, backbone_config

    config = backbone_config(dataclasses.replace(SSLConfig(), depth=8, width=8), 8)
    save_ssl_backbone(
        folder,
        model_from_config(config, seed=0),
        {"model_config": dataclasses.asdict(config), "normalization": [[0.5] * 3, [0.25] * 3]},
    )
    return folder / "backbone_ssl.safetensors"
