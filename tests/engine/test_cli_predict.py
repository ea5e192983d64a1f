"""`python -m engine predict`: a checkpoint classifies image files; a broken one is one readable line."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine import cli
from engine.checkpoint import save_checkpoint
from engine.models import build_model


def test_predict_prints_path_class_probability(tmp_path, capsys):
    model = build_model("proxy_tiny", 2, 16, seed=0)
    save_checkpoint(
        model,
        tmp_path / "ckpt",
        class_names=["cat", "dog"],
        image_size=16,
        normalization=((0.5,) * 3, (0.25,) * 3),
        metrics={},
        n_labels=4,
    )
    image = tmp_path / "x.png"
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(image)
    assert cli.main(["predict", str(tmp_path / "ckpt"), str(image)]) == 0
    path, name, probability = capsys.readouterr().out.strip().split("\t")
    assert path == str(image) and name in {"cat", "dog"} and 0.5 <= float(probability) <= 1


def test_predict_on_a_folder_without_checkpoint_is_one_line(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), str(tmp_path / "x.png")]) == 2
    assert "incomplete checkpoint" in capsys.readouterr().err
