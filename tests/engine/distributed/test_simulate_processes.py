"""`proxy-labeler simulate --processes 2` runs the whole loop with training and scoring as torchrun jobs, and
learns what one process learns."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

FLAGS = [
    "--initial", "6", "--round-size", "4", "--budget", "10", "--proxy", "proxy_tiny", "--target", "resnet20",
    "--proxy-steps", "30", "--target-steps", "30", "--device", "cpu", "--image-size", "8",
]  # fmt: skip


def simulate(data_root, out, *extra: str) -> dict:
    argv = [sys.executable, "-m", "engine", "simulate", "--data", str(data_root), "--out", str(out), *FLAGS, *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_simulate_in_two_processes_learns_what_one_learns(data_root, tmp_path):
    two = simulate(data_root, tmp_path / "two.json", "--processes", "2")
    assert two["processes"] == 2 and two["settings"]["launch"]["processes"] == 2
    assert [r["labeled"] for r in two["rounds"]] == [0, 6]
    # three solid-colour classes: one process learns them completely (tests/engine/test_simulate.py), so do two
    assert two["target"]["test_acc"] == 1.0 and two["rounds"][1]["proxy_test_acc"] == 1.0


def test_bad_processes_are_refused_before_any_work(data_root, tmp_path):
    from engine.cli import build_parser
    from engine.simulate import config_from_args

    args = build_parser().parse_args(["simulate", "--data", str(data_root), "--out", "x.json", "--processes", "zero"])
    with pytest.raises(ValueError, match="processes must be auto or a positive integer"):
        config_from_args(args)
