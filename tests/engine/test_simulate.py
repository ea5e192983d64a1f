"""`simulate` on a tiny generated ImageFolder tree: well-formed JSON and CSV."""

from __future__ import annotations

import csv
import io
import json

import pytest

from engine.cli import build_parser
from engine.simulate import ProgressLine, SimulateConfig, config_from_args, expected_rounds, simulate
from tests.support import write_image_folder


def _config(data_root, tmp_path, **overrides) -> SimulateConfig:
    values = dict(
        data=data_root,
        out=tmp_path / "out" / "run.json",
        strategy="least_confidence",
        initial=6,
        round_size=4,
        budget=14,
        proxy="proxy_tiny",
        target="resnet20",
        selector="proxy",
        seed=0,
        proxy_steps=30,
        target_steps=30,
        device="cpu",
        image_size=8,
    )
    values.update(overrides)
    return SimulateConfig(**values)


def test_simulate_writes_json_and_csv(data_root, tmp_path, fake_clock):
    import engine.round
    import engine.simulate
    import engine.target

    # fake clocks: each round stage takes 0.5 s, each target training 0.25 s, the whole run 0.125 s
    fake_clock(engine.round, 0.5)
    fake_clock(engine.target, 0.25)
    fake_clock(engine.simulate, 0.125)
    stream = io.StringIO()
    config = _config(data_root, tmp_path, eval_every_round=True)
    result = simulate(config, progress=ProgressLine(expected_rounds(config), stream))
    written = json.loads(config.out.read_text())
    assert written == json.loads(json.dumps(result))
    assert written["settings"]["strategy"] == "least_confidence"
    assert written["settings"]["selector"] == "proxy"
    assert (written["settings"]["pool_size"], written["settings"]["test_size"]) == (24, 9)
    rounds = written["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["labeled"] for r in rounds] == [0, 6, 10]
    assert rounds[0]["proxy_test_acc"] is None and rounds[0]["train_s"] is None
    for row in rounds[1:]:
        # three solid-colour classes: both models learn them (chance is 1/3; they score 1.0 on torch 2.15)
        assert row["proxy_test_acc"] >= 2 / 3 and row["target_test_acc"] >= 2 / 3
        assert (row["train_s"], row["score_s"], row["select_s"]) == (0.5, 0.5, 0.5)
    assert written["target"]["labeled"] == 14
    assert written["target"]["test_acc"] >= 2 / 3 and written["target"]["train_s"] == 0.25
    assert written["total_s"] == 0.125

    with open(config.out.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["labeled"] for row in rows] == ["0", "6", "10"]
    assert list(rows[0]) == ["round", "labeled", "proxy_test_acc", "train_s", "score_s", "select_s", "target_test_acc"]
    assert "round 2/2" in stream.getvalue()


def test_simulate_with_the_target_as_selector(data_root, tmp_path):
    result = simulate(
        _config(data_root, tmp_path, selector="target", strategy="kcenter", budget=10),
        progress=ProgressLine(2, io.StringIO()),
    )
    assert [r["labeled"] for r in result["rounds"]] == [0, 6]
    assert "target_test_acc" not in result["rounds"][1]
    assert result["target"]["labeled"] == 10


def test_simulate_learns_an_ssl_backbone_then_selects_with_a_linear_proxy(data_root, tmp_path):
    result = simulate(
        _config(
            data_root, tmp_path, backbone="ssl", ssl_steps=3, proxy="linear", initial_strategy="typiclust", budget=10
        ),
        progress=ProgressLine(2, io.StringIO()),
    )
    assert result["ssl"]["steps"] == 3 and result["settings"]["backbone"] == "ssl"
    assert [r["labeled"] for r in result["rounds"]] == [0, 6]
    # the head, tested on the test set's embeddings: three solid colours, chance is 1/3
    assert result["rounds"][1]["proxy_test_acc"] >= 2 / 3


def test_simulate_keeps_its_project_in_workdir(data_root, tmp_path):
    simulate(_config(data_root, tmp_path, budget=6, workdir=tmp_path / "work"), progress=ProgressLine(1, io.StringIO()))
    assert (tmp_path / "work" / "project" / "project.db").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(strategy="best"), "unknown strategy 'best'"),
        (dict(strategy="el2n"), "el2n selects from a labeled set"),
        (dict(proxy="nope"), "unknown model 'nope'"),
        (dict(initial=20, budget=14), r"--initial \(20\) is larger than --budget \(14\)"),
        (dict(round_size=0), "--round-size must be at least 1"),
        (dict(budget=100, initial=6), "fewer than the budget of 100"),
        (dict(candidates="nearest"), "--candidates must be one of all, seals"),
        (dict(candidates="seals", seals_k=0), "--seals-k must be from 1 to 10000"),
    ],
)
def test_simulate_rejects_bad_settings(data_root, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        simulate(_config(data_root, tmp_path, **overrides), progress=ProgressLine(1, io.StringIO()))


def test_simulate_needs_train_and_test_folders(tmp_path):
    write_image_folder(tmp_path / "only" / "train", classes=2, per_class=3)
    with pytest.raises(ValueError, match="test is not a folder"):
        simulate(_config(tmp_path / "only", tmp_path), progress=ProgressLine(1, io.StringIO()))
    with pytest.raises(ValueError, match="train is not a folder"):
        simulate(_config(tmp_path / "missing", tmp_path), progress=ProgressLine(1, io.StringIO()))


def test_simulate_with_seals_candidates_says_how_many_each_round_had(data_root, tmp_path):
    args = build_parser().parse_args(
        ["simulate", "--data", str(data_root), "--out", "o.json", "--candidates", "seals", "--seals-k", "2"]
    )
    assert (config_from_args(args).candidates, config_from_args(args).seals_k) == ("seals", 2)
    result = simulate(
        _config(data_root, tmp_path, candidates="seals", seals_k=2, budget=10), progress=ProgressLine(2, io.StringIO())
    )
    assert (result["settings"]["candidates"], result["settings"]["seals_k"]) == ("seals", 2)
    assert "candidates" not in result["rounds"][0]  # round 0 is random over the whole pool
    assert 1 <= result["rounds"][1]["candidates"] <= 12  # 2 neighbours of each of the 6 labels, less the taken
