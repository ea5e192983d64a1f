"""`proxy-labeler coreset` on a tiny generated ImageFolder tree: the JSON, the balanced subset, the baselines,
the command line, and every bad setting refused before any training."""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from engine import coreset as coreset_module
from engine.cli import build_parser
from engine.coreset import CoresetConfig, config_from_args, run_coreset
from tests.support import write_image_folder


def _config(data_root, tmp_path, **overrides) -> CoresetConfig:
    values = dict(
        data=data_root,
        out=tmp_path / "out" / "coreset.json",
        method="forgetting",
        keep=0.5,
        proxy="proxy_tiny",
        target="proxy_tiny",
        proxy_steps=30,
        target_steps=30,
        device="cpu",
        image_size=8,
    )
    values.update(overrides)
    return CoresetConfig(**values)


def test_a_balanced_half_is_kept_and_the_target_trained_on_it_with_the_baselines(data_root, tmp_path):
    lines: list[str] = []
    csv_path = tmp_path / "out" / "subset.csv"
    result = run_coreset(_config(data_root, tmp_path, baselines=True, subset_csv=csv_path), progress=lines.append)
    assert json.loads((tmp_path / "out" / "coreset.json").read_text()) == result
    assert (result["method"], result["keep"], result["selector"], result["n_train"], result["n_test"]) == (
        "forgetting",
        0.5,
        "proxy",
        24,
        9,
    )
    kept = result["kept"]  # paths relative to train/
    assert result["subset"]["n"] == len(kept) == len(set(kept)) == 12
    assert all((data_root / "train" / path).is_file() for path in kept)
    assert collections.Counter(path.split("/")[0] for path in kept) == {c: 4 for c in ("red", "green", "blue")}
    with csv_path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and all(row["class"] == row["path"].split("/")[0] for row in rows)
    assert sorted(row["path"] for row in rows if row["kept"] == "1") == kept
    assert result["full"]["n"] == 24 and result["random"]["n"] == 12
    # solid colours: every target learns them (chance is 1/3)
    for row in ("subset", "full", "random"):
        assert result[row]["test_acc"] >= 2 / 3, row
    stages = result["stages"]
    assert set(stages) == {"proxy_s", "score_s", "select_s", "target_s"}
    assert result["subset"]["seconds"] == pytest.approx(sum(stages.values()), abs=0.02)  # end to end
    assert lines[0].startswith("proxy (proxy_tiny) trains on 24 labels")


def test_without_balance_the_method_alone_decides(data_root, tmp_path, monkeypatch):
    seen = []
    real = coreset_module.STRATEGIES["el2n"]

    def spy(pool, taken, budget, *, rng=None):
        seen.append((len(pool.probs), budget))
        return real(pool, taken, budget, rng=rng)

    monkeypatch.setitem(coreset_module.STRATEGIES, "el2n", spy)
    run_coreset(_config(data_root, tmp_path, method="el2n", balance=False, keep=0.25))
    assert seen == [(24, 6)]  # one call on the whole set, not one per class
    seen.clear()
    run_coreset(_config(data_root, tmp_path, method="el2n", keep=0.25))
    assert seen == [(8, 2), (8, 2), (8, 2)]


def test_the_command_line_reaches_the_config(data_root, tmp_path):
    where = ["--data", str(data_root), "--out", str(tmp_path / "r.json")]
    flags = ["--method", "graph_cut", "--keep", "0.3", "--selector", "target", "--no-balance", "--baselines"]
    args = build_parser().parse_args(["coreset", *where, *flags, "--target-steps", "7"])
    config = config_from_args(args)
    assert (config.method, config.keep, config.selector, config.balance, config.baselines) == (
        "graph_cut",
        0.3,
        "target",
        False,
        True,
    )
    assert config.target_steps == 7 and args.run == "engine.coreset:main"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(keep=0.0), r"keep must lie in \(0, 1\]"),
        (dict(keep=1.5), r"keep must lie in \(0, 1\]"),
        (dict(method="nope"), "unknown core-set method 'nope'"),
        (dict(selector="oracle"), "selector must be proxy or target"),
        (dict(proxy_training="slow"), "unknown training level 'slow'"),
        (dict(dynamic_keep=1.5), "keep ratio must lie in"),
        (dict(project="/somewhere"), "either --data"),
        (dict(data=None), "either --data"),
        (dict(data=None, project="/somewhere"), "drop --proxy, --target, --proxy-steps, --target-steps, --device"),
    ],
)
def test_bad_settings_are_refused_before_any_training(data_root, tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr(coreset_module, "score_labeled_set", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message):
        run_coreset(_config(data_root, tmp_path, **overrides))
    assert not (tmp_path / "out").exists()


def test_a_set_of_one_class_or_without_a_test_split_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(coreset_module, "score_labeled_set", lambda *a, **k: pytest.fail("trained"))
    write_image_folder(tmp_path / "one" / "train", classes=1, per_class=4)
    write_image_folder(tmp_path / "one" / "test", classes=1, per_class=2)
    with pytest.raises(ValueError, match="the labeled set holds one class"):
        run_coreset(_config(tmp_path / "one", tmp_path))
    write_image_folder(tmp_path / "no_test" / "train", classes=2, per_class=4)
    with pytest.raises(ValueError, match="needs train/<class>/ and test/<class>/"):
        run_coreset(_config(tmp_path / "no_test", tmp_path))


def test_suspects_are_the_examples_the_selector_disagreed_with():
    from engine.coreset import suspects
    from engine.score import PoolScores

    probs = np.array([[0.9, 0.1]] * 6, dtype=np.float32)
    probs[1] = [0.2, 0.8]  # answers class 1 at the end
    stats = {
        "forgetting": np.array([0, 0, math.inf, 3, 3, 0], dtype=np.float64),
        "right_share": np.array([0.9, 0.9, 0.0, 0.4, 0.8, 0.1]),
    }
    pool = PoolScores(probs, np.zeros((6, 2), np.float32), labels=np.zeros(6, np.int64), per_example=stats)
    # 0 learned; 1 wrong at the end; 2 never learned; 3 forgotten and mostly wrong; 4 forgotten but mostly
    # right; 5 mostly wrong but learned once and kept
    assert suspects(pool).tolist() == [False, True, True, True, False, False]


@pytest.mark.parametrize(
    ("keep", "balance", "expected"),
    [(0.5, True, 5), (0.1, False, 1), (0.01, False, 1)],
)
def test_keep_count(keep, balance, expected):
    from engine.coreset import keep_count

    assert keep_count(keep, np.array([0] * 8 + [1] * 2), ["a", "b"], balance) == expected


def test_a_kept_share_that_leaves_a_class_empty_is_refused():
    from engine.coreset import keep_count

    with pytest.raises(ValueError, match=r"leaves no image of b \(2 labeled\)"):
        keep_count(0.1, np.array([0] * 18 + [1] * 2), ["a", "b"], balance=True)


def test_dynamic_keep_trains_the_target_with_dynams_beside_all_data(data_root, tmp_path):
    result = run_coreset(_config(data_root, tmp_path, dynamic_keep=0.5, target_steps=40))
    full, dynamic = result["full"], result["dynamic"]
    assert full["n"] == dynamic["n"] == 24 and "random" not in result
    assert (dynamic["keep"], dynamic["full_steps"]) == (0.5, 40) and dynamic["steps"] < 40
    assert dynamic["steps_saved"] == pytest.approx(1 - dynamic["steps"] / 40, abs=1e-4)
    assert dynamic["seconds_saved"] == pytest.approx(1 - dynamic["seconds"] / full["seconds"], abs=0.02)
    assert dynamic["test_acc"] >= 2 / 3


def test_the_project_form_saves_a_run_and_tests_on_the_validation_labels(tmp_path):
    import storage
    from tests.support import label_by_folder, make_tiny_project

    project = make_tiny_project(tmp_path, per_class=10, validation_size=6)
    storage.reserve_validation(project)
    label_by_folder(project, [item.id for item in storage.usable_items(project)])
    args = build_parser().parse_args(
        ["coreset", "--project", str(project.root), "--out", str(tmp_path / "r.json"), "--keep", "0.5"]
    )
    args_config = config_from_args(args)
    assert args_config.project == project.root and args_config.data is None
    csv_path = tmp_path / "subset.csv"
    result = run_coreset(dataclasses.replace(args_config, baselines=True, dynamic_keep=0.5, subset_csv=csv_path))
    run = storage.latest_coreset_run(project)
    with csv_path.open(encoding="utf-8") as handle:  # the project's label export with its kept column
        assert sum(row["kept"] == "1" for row in csv.DictReader(handle)) == 12
    assert result["coreset_run"] == run.id and result["kept"] == storage.kept_item_ids(project, run.id)
    assert (result["n_train"], result["n_test"], result["subset"]["n"]) == (24, 6, 12)
    assert result["full"]["n"] == 24 and result["random"]["n"] == 12 and result["dynamic"]["n"] == 24
    assert result["dynamic"]["steps"] < result["dynamic"]["full_steps"] == 30
    assert result["test_set"] == "the project's labeled validation images"
    for row in ("subset", "full", "random", "dynamic"):
        assert result[row]["test_acc"] >= 2 / 3, row
    assert json.loads((tmp_path / "r.json").read_text())["coreset_run"] == run.id


def test_kept_distances_by_hand():
    from engine.coreset import item_scores, kept_distances
    from engine.score import PoolScores

    embeddings = np.array([[0.0], [1.0], [5.0], [6.0], [9.0], [20.0]], np.float32)
    pool = PoolScores(np.full((6, 2), 0.5, np.float32), embeddings, labels=np.array([0, 0, 0, 0, 1, 1]))
    found = kept_distances(pool, np.array([0, 2, 4]))
    # class 0 keeps 0 and 5: each kept one's other kept is 5 away, 1 and 6 are 1 from theirs;
    # class 1 keeps only 9: no other kept for it, and 20 is 11 from it
    np.testing.assert_allclose(found[:4], [5.0, 1.0, 5.0, 1.0])
    assert np.isnan(found[4]) and found[5] == pytest.approx(11.0)
    assert item_scores("random", pool, np.array([0])) is None
    np.testing.assert_allclose(item_scores("herding", pool, np.array([0, 2, 4]))[:4], [5.0, 1.0, 5.0, 1.0])
    assert item_scores("kcenter", pool) is None  # without the picks
