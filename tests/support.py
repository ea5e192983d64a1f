"""Helpers every test package shares: one image-folder generator, one settings helper, tiny projects.

Plain functions (conftest modules hold only fixtures). Nothing here imports
torch at the top level, so storage tests stay torch-free.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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
PETS = ("cat", "dog", "bird")  # class names of the storage tests, which never train
RGB = CLASS_NAMES[:3]  # the classes of tiny_settings' default three-class project
# What the app tests change in tiny_settings: a validation set, and the image size the app picks.
APP_SETTINGS = dict(budget=12, initial_size=4, validation_size=3, target="proxy_tiny", image_size=0)


def image_bytes(seed: int, size: int | tuple[int, int] = 8, colour=None, fmt: str = "png") -> bytes:
    """One small image, distinct for each seed: `colour` (default: one from the seed) plus per-pixel
    noise and a bright 3x3 square, both drawn from the seed."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    if colour is None:
        colour = (seed % 256, (seed // 256) % 256, 7)
    pixels = np.array(colour, np.int16) + rng.integers(-25, 26, (height, width, 3))
    y, x = rng.integers(0, max(1, height - 2)), rng.integers(0, max(1, width - 2))
    pixels[y : y + 3, x : x + 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG" if fmt == "jpg" else fmt.upper())
    return buffer.getvalue()


def write_image_folder(
    root: Path,
    classes: int = 3,
    per_class: int = 10,
    size: int = 12,
    *,
    seed: int = 0,
    fmt: str = "png",
    start: int = 0,
    flat: bool = False,
) -> dict[str, str]:
    """Write class-colored images; return {relative path: class name}.

    Layout `root/<class>/img_NNNN.<fmt>`, or with `flat` `root/img_NNNN.<fmt>`
    with the classes interleaved, so a file's name does not tell its class.
    Every image depends only on (seed, class, number), so a later call with a
    larger `start` adds new, distinct images to the same folder.
    """
    if not 1 <= classes <= len(PALETTE):
        raise ValueError(f"classes must be 1..{len(PALETTE)}")
    truth = {}
    for k in range(start, start + per_class):
        for c, name in enumerate(CLASS_NAMES[:classes]):
            number = k * classes + c if flat else k
            relative = f"img_{number:04d}.{fmt}" if flat else f"{name}/img_{number:04d}.{fmt}"
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            noise_seed = int(np.random.SeedSequence([seed, c, k]).generate_state(1)[0])
            path.write_bytes(image_bytes(noise_seed, size, PALETTE[name], fmt))
            truth[relative] = name
    return truth


def tiny_settings(image_root: Path, classes: int | tuple[str, ...] = 3, **overrides) -> storage.Settings:
    """Settings for a fast CPU project: 8 px, 30 optimizer steps per training run, no validation.
    `classes`: how many of CLASS_NAMES, or the names."""
    values = dict(
        image_root=str(image_root),
        classes=CLASS_NAMES[:classes] if isinstance(classes, int) else tuple(classes),
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


def make_app_project(root: Path, image_root: Path, **overrides) -> storage.Project:
    """Created and ingested with the app tests' settings (3 validation images, the picked image size),
    with the random round 0 queued, as the app does on create."""
    from engine.initial import run_initial_round

    project = storage.create_project(root, tiny_settings(image_root, **{**APP_SETTINGS, **overrides}))
    storage.ingest(project)
    run_initial_round(project)
    return project


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


# ---------------------------------------------------------------- as an ordinary account

SETPRIV = shutil.which("setpriv")
NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def nobody_dir() -> Iterator[Path]:
    """A folder under /tmp that the ordinary account may enter (pytest's tmp_path may not be), removed after
    with every folder below it opened up again. Skips the test without setpriv."""
    import pytest

    if SETPRIV is None:
        pytest.skip("needs setpriv (util-linux) to run a check as an ordinary account")
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def as_nobody(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> dict:
    """Run the Python `script` (given `args` as sys.argv[1:]) as uid 65534 without capabilities, since
    root ignores file permissions; it prints one JSON object, returned here."""
    done = subprocess.run(
        [SETPRIV, *NOBODY, sys.executable, "-c", script, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "HOME": "/tmp", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
