"""The label-error benchmark: flips exactly the share asked, reads a ranking's R-precision, runs end to end."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.bench_label_errors import flip, main, r_precision
from tests.support import write_image_folder


def test_flip_moves_exactly_the_share_to_another_class():
    labels = np.repeat(np.arange(4), 25)
    noisy, flipped = flip(labels, 0.1, 4, np.random.default_rng(0))
    assert flipped.sum() == 10 and (noisy[flipped] != labels[flipped]).all()
    assert (noisy[~flipped] == labels[~flipped]).all() and noisy.max() < 4


def test_r_precision_reads_the_top_k():
    flipped = np.array([True, False, True, False, False])
    assert r_precision(np.array([0, 2, 1, 3, 4]), flipped) == 1.0
    assert r_precision(np.array([1, 0, 2, 3, 4]), flipped) == 0.5
    assert r_precision(np.array([1, 3, 0, 2, 4]), flipped) == 0.0


def test_the_script_runs_end_to_end_on_tiny_data(tmp_path, capsys):
    write_image_folder(tmp_path / "data" / "train", classes=3, per_class=20, size=8)
    write_image_folder(tmp_path / "data" / "test", classes=3, per_class=2, size=8)  # read, not used
    out = tmp_path / "out.json"
    args = ["--data", str(tmp_path / "data"), "--noise", "0.1", "--seeds", "0", "1", "--json", str(out)]
    assert main([*args, "--proxy-training", "fast"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["noise"], r["seed"], r["flipped"], r["n"]) for r in rows] == [(0.1, 0, 6, 60), (0.1, 1, 6, 60)]
    for row in rows:
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    assert "| 10% | 6.00 ± 0.00 |" in capsys.readouterr().out
