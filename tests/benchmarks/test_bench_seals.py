"""The SEALS benchmark on tiny data: both modes run with the same seed, the seals rounds say how many candidates
they had, the table holds every round, and the scale timing measures a round's selection."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_seals
from tests.support import write_image_folder


@pytest.mark.slow  # two simulate runs with their targets
def test_bench_seals_runs_both_modes_on_the_same_first_proxy(tmp_path, capsys):
    write_image_folder(tmp_path / "data" / "train", classes=3, per_class=10, seed=1)
    write_image_folder(tmp_path / "data" / "test", classes=3, per_class=4, seed=2)
    out = tmp_path / "seals.json"
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--pool-per-class", "8", "--test-per-class", "3"]
    argv += ["--initial", "6", "--round-size", "4", "--budget", "14", "--strategies", "least_confidence"]
    argv += ["--seeds", "0", "--seals-k", "2", "--proxy-steps", "10", "--target-steps", "10", "--image-size", "8"]
    result = bench_seals.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    whole, seals = result["runs"]
    assert (whole["candidates"], seals["candidates"]) == ("all", "seals")
    assert whole["pool_size"] == seals["pool_size"] == 24 and whole["test_size"] == 9
    assert [r["labeled"] for r in seals["rounds"]] == [0, 6, 10]
    # the same seed: the same random first batch, so the same first proxy in both modes
    assert whole["rounds"][1]["proxy_test_acc"] == seals["rounds"][1]["proxy_test_acc"]
    assert all(r["candidates"] is None for r in whole["rounds"])
    assert seals["rounds"][0]["candidates"] is None
    for row in seals["rounds"][1:]:
        assert 1 <= row["candidates"] <= 2 * row["labeled"] and row["free"] == 24 - row["labeled"]
    table = capsys.readouterr().out
    assert "| least_confidence | 1 | 6 |" in table and "| least_confidence | 2 | 10 |" in table
    assert "target (14 labels), seals" in table


def test_scale_timing_searches_the_new_labels_and_selects_both_ways():
    figures = bench_seals.scale_timing(300, 8, labeled=20, batch=10, k=3)
    assert (figures["n"], figures["labeled"], figures["batch"]) == (300, 30, 10)
    assert 10 <= figures["candidates"] <= 90  # at most k per label, at least the batch here
    for name in ("search_s", "least_confidence_all_s", "least_confidence_seals_s", "kcenter_all_s", "kcenter_seals_s"):
        assert figures[name] >= 0
