"""The precision benchmark runs both precisions on tiny data and reports each measure for both."""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks import bench_precision
from benchmarks.bench_training import Data
from engine.precision import BF16_ENV


def test_every_measure_is_taken_in_both_precisions_and_the_setting_is_restored(monkeypatch):
    monkeypatch.setenv(BF16_ENV, "0")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 3, 16, 16), dtype=np.uint8)
    labels = np.arange(24) % 3
    data = Data(images, labels, images[:9], labels[:9], ["a", "b", "c"], ((0.5,) * 3, (0.25,) * 3), 16)
    seen: list[str] = []
    train_row = bench_precision.train_row

    def spy(*args, **kwargs):
        seen.append(os.environ[BF16_ENV])
        return train_row(*args, **kwargs)

    monkeypatch.setattr(bench_precision, "train_row", spy)
    args = argparse.Namespace(seeds=[0, 1], labels=12, steps=2, ssl_steps=2, score_images=10)
    result = bench_precision.run(data, args)
    # seed 0 runs float32 first, seed 1 bf16 first; each seed trains both models
    assert seen == ["0", "0", "1", "1", "1", "1", "0", "0"]
    measures = {line["measure"]: line for line in result["summary"]}
    assert set(measures) == {
        "proxy_tiny training steps/s",
        "proxy_tiny test accuracy",
        "proxy_tiny scoring images/s",
        "resnet20 training steps/s",
        "resnet20 test accuracy",
        "resnet20 scoring images/s",
        "SSL steps/s",
    }
    accuracy = measures["proxy_tiny test accuracy"]
    assert len(accuracy["float32"]) == len(accuracy["bf16"]) == 2
    assert all(abs(value * 9 - round(value * 9)) < 1e-3 for value in accuracy["float32"] + accuracy["bf16"])  # n/9
    assert os.environ[BF16_ENV] == "0"
