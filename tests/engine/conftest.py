"""Shared engine fixtures: tiny generated image folders with ground truth, tiny projects
(the helpers they wrap are in tests/support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import storage
from tests.support import label_queue, make_tiny_project


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared CPU cores: one torch thread per test keeps runs comparable and reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
