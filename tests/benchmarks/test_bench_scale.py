"""The scale benchmark: its generated images, and every stage end to end on a tiny pool."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks.bench_scale import CLASSES, GOALS, STAGES, generate, main


def test_generated_images_are_small_jpegs_of_mixed_sizes_and_modes_in_class_folders(tmp_path):
    assert generate(tmp_path / "images", 60) == 60
    paths = sorted((tmp_path / "images").rglob("*.jpg"))
    assert len(paths) == 60 and {p.parts[-3] for p in paths} == set(CLASSES)
    sizes, modes = set(), set()
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and all(24 <= side <= 64 for side in image.size)
            sizes.add(image.size)
            modes.add(image.mode)
    assert len(sizes) > 30 and modes == {"RGB", "L"}
    stamp = paths[0].stat().st_mtime_ns
    assert generate(tmp_path / "images", 60) == 60 and paths[0].stat().st_mtime_ns == stamp  # kept, not made again


@pytest.mark.slow
def test_every_stage_runs_end_to_end_on_200_images(tmp_path):
    out = tmp_path / "scale.json"
    assert main(["--images", "200", "--out", str(out), "--workdir", str(tmp_path / "work"), "--keypresses", "5"]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 200 and result["machine"]["cores"]
    assert list(result["stages"]) == list(STAGES) and set(GOALS) <= set(result["stages"])
    for name, stage in result["stages"].items():
        assert stage["seconds"] >= 0 and stage["peak_rss_mb"] > 0, name
    assert result["stages"]["ingest"]["added"] == 200 and result["stages"]["pool_cache"]["pool"] == 200
    assert result["stages"]["round"]["size"] == 10 and result["stages"]["keypress"]["presses"] == 5
    assert result["stages"]["kcenter_10000"]["budget"] == 200 - result["stages"]["kcenter_10000"]["centers"]
    assert not (tmp_path / "work" / "project").exists() and not (tmp_path / "work" / "images").exists()
