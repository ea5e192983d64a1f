"""Shared engine fixtures: tiny generated image folders with ground truth, tiny projects, a fake clock
(the helpers they wrap are in tests/support.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import storage
from tests.support import label_queue, make_tiny_project, write_image_folder


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared CPU cores: one torch thread per test keeps runs comparable and reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An ImageFolder tree of 3 solid-colour classes: train/ 8 images each, test/ 3 each (simulate, coreset)."""
    write_image_folder(tmp_path / "data" / "train", classes=3, per_class=8, seed=1)
    write_image_folder(tmp_path / "data" / "test", classes=3, per_class=3, seed=2)
    return tmp_path / "data"


@pytest.fixture
def tiny_project(tmp_path: Path) -> storage.Project:
    """A 3-class, 30-image ingested project with tiny settings (see `tests.support.tiny_settings`)."""
    return make_tiny_project(tmp_path)


@pytest.fixture
def labeled_project(tiny_project: storage.Project) -> storage.Project:
    """`tiny_project` after round 0 (6 random items) was made and labeled by the oracle."""
    from engine.round import run_initial_round

    run_initial_round(tiny_project)
    label_queue(tiny_project)
    return tiny_project


class _FakeTime:
    """Stands in for a module's `time`: `perf_counter()` reads 1000.0 first (not 0, so a duration that
    forgets to subtract its start shows), then advances by the next of `steps` on every read (the last
    step repeats); everything else is the real `time` module."""

    def __init__(self, steps: tuple[float, ...]):
        self.steps, self.reads, self.now = steps, 0, 1000.0

    def perf_counter(self) -> float:
        if self.reads:
            self.now += self.steps[min(self.reads, len(self.steps)) - 1]
        self.reads += 1
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def fake_clock(monkeypatch):
    """`fake_clock(module, *steps)` gives `module` a perf_counter that advances exactly `steps` seconds per
    read (see _FakeTime), so a test can assert the exact seconds a module records instead of `>= 0`."""

    def install(module, *steps: float) -> _FakeTime:
        clock = _FakeTime(steps or (1.0,))
        monkeypatch.setattr(module, "time", clock)
        return clock

    return install
