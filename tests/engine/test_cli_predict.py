"""`python -m engine predict`: a checkpoint classifies image files; a broken one is one readable line."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from engine import cli
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.device import normalization_tensors
from engine.models import build_model
from engine.pool_cache import image_to_array

NORM = ((0.5,) * 3, (0.25,) * 3)


def _noise_image(path, level: int, seed: int):
    pixels = np.random.default_rng(seed).integers(-40, 41, (20, 30, 3)) + level
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def _decisive_model(dark: Image.Image, bright: Image.Image):
    """proxy_tiny whose classifier gives `dark` class 0 with a logit margin of 1 (probability
    sigmoid(1) = 0.731) and `bright` class 1 with a margin of 3 (sigmoid(3) = 0.953)."""
    model = build_model("proxy_tiny", 2, 16, seed=0).eval()
    mean, std = normalization_tensors(NORM, torch.device("cpu"))
    x = torch.from_numpy(np.stack([image_to_array(im, 16) for im in (dark, bright)])).float()
    with torch.no_grad():
        a, b = model.embed((x - mean) / std).double()
        d = a - b
        k = 4 / float(d @ d)  # logit0 - logit1 = k d.e + c: +1 at a, -3 at b
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.weight[0] = (k * d).float()
        model.fc.bias[0] = 1 - k * float(d @ a)
    return model


def test_predict_prints_what_the_checkpoint_predicts(tmp_path, capsys):
    dark, bright = _noise_image(tmp_path / "dark.png", 60, 1), _noise_image(tmp_path / "bright.png", 200, 2)
    with Image.open(dark) as d, Image.open(bright) as b:
        model = _decisive_model(d, b)
    save_checkpoint(
        model, tmp_path / "ckpt", class_names=["cat", "dog"], image_size=16, normalization=NORM, metrics={}, n_labels=4
    )
    assert cli.main(["predict", str(tmp_path / "ckpt"), str(dark), str(bright)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().split("\n")]
    assert [(path, name) for path, name, _ in lines] == [(str(dark), "cat"), (str(bright), "dog")]
    printed = [float(probability) for _, _, probability in lines]
    # the designed answer, and the checkpoint's own predict on the same files (printed to 4 decimals)
    assert printed == [round(1 / (1 + math.exp(-1)), 4), round(1 / (1 + math.exp(-3)), 4)]
    loaded = load_checkpoint(tmp_path / "ckpt")
    for (_, name, _), probability, path in zip(lines, printed, (dark, bright), strict=True):
        with Image.open(path) as image:
            [(own_name, own_probability)] = loaded.predict([image])
        assert name == own_name and abs(probability - own_probability) <= 5e-5


def test_predict_on_a_folder_without_checkpoint_is_one_line(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), str(tmp_path / "x.png")]) == 2
    assert "incomplete checkpoint" in capsys.readouterr().err
