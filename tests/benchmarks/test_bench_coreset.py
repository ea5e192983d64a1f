"""The core-set study runs end to end on tiny data: every requested row is measured once, the target's plan
scales with the subset, the tables hold every row, and --resume and --render measure nothing again."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_coreset
from engine.train import TrainConfig, plan
from tests.support import write_image_folder

PASSES = 2


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("coreset")
    write_image_folder(root / "data" / "train", classes=3, per_class=10, seed=1)
    write_image_folder(root / "data" / "test", classes=3, per_class=4, seed=2)
    (root / "doc.md").write_text("# Core-sets\n\nBy hand, before.\n")
    argv = [
        "--data",
        str(root / "data"),
        "--name",
        "tiny",
        "--train-per-class",
        "8",
        "--test-per-class",
        "3",
        "--image-size",
        "8",
        "--seeds",
        "0",
        "1",
        "--tables",
        "1",
        "2",
        "3",
        "--keeps",
        "0.1",
        "0.5",
        "--svp-keeps",
        "0.5",
        "0.7",
        "--target-passes",
        str(PASSES),
        "--proxy-steps",
        "3",
        "--json",
        str(root / "rows.json"),
        "--doc",
        str(root / "doc.md"),
    ]
    lines: list[str] = []
    result = bench_coreset.main(argv, progress=lines.append)
    return {"root": root, "argv": argv, "result": result, "args": bench_coreset.parse_args(argv), "lines": lines}


def test_every_requested_row_is_measured_once(study):
    rows = study["result"]["rows"]
    keys = [bench_coreset.row_key(r) for r in rows if r["kind"] != "selector"]
    wanted = [bench_coreset.row_key(k) for k in bench_coreset.requested(study["args"])]
    assert sorted(keys, key=str) == sorted(wanted, key=str)
    assert len(set(keys)) == len(keys)
    methods = bench_coreset.methods_for_labeled_sets()
    assert {"forgetting", "el2n", "grand", "kcenter", "facility_location", "graph_cut"} <= set(methods)
    assert not {"random", "typiclust", "probcover", "hybrid"} & set(methods)
    for seed in (0, 1):
        mine = [r for r in rows if r["seed"] == seed]
        assert {r["selector"] for r in mine if r["kind"] == "selector"} == {"proxy", "target"}
        assert sum(r["kind"] == "full" for r in mine) == 1
        assert {r["keep"] for r in mine if r["kind"] == "random"} == {0.1, 0.5, 0.7, 0.6}
        table2 = {(r["method"], r["keep"]) for r in mine if r["kind"] == "subset" and r["selector"] == "proxy"}
        assert {(m, k) for m in methods for k in (0.1, 0.5)} <= table2
        table1 = {(r["method"], r["keep"]) for r in mine if r["kind"] == "subset" and r["selector"] == "target"}
        assert table1 == {(m, k) for m in bench_coreset.SVP_METHODS for k in (0.5, 0.7)}


def test_rows_hold_balanced_subsets_planned_by_passes_and_end_to_end_times(study):
    rows = study["result"]["rows"]
    data = study["result"]["meta"]["data"]
    assert (data["n_train"], data["n_test"], data["size"]) == (24, 9, 8)  # 8 and 3 per class of 3
    selectors = {(r["seed"], r["selector"]): r for r in rows if r["kind"] == "selector"}
    no_floor = TrainConfig(passes=PASSES, min_steps=1, max_steps=bench_coreset.MAX_STEPS)
    for row in rows:
        if row["kind"] in ("selector", "dynamic"):
            continue
        n = 24 if row["kind"] == "full" else max(1, round(row["keep"] * 24))
        assert row["n"] == n
        # the same passes whatever the size: no step floor (a floor would train a subset as long as all data)
        assert (row["batch"], row["steps"]) == plan(n, no_floor)
        assert abs(row["test_acc"] * 9 - round(row["test_acc"] * 9)) < 1e-3  # a share of the 9 test images
        if row["kind"] == "subset":
            chosen = selectors[(row["seed"], row["selector"])]
            expected = chosen["train_s"] + chosen["score_s"] + row["select_s"] + row["target_s"]
            assert row["e2e_s"] == pytest.approx(expected, abs=2e-3)
            cpu = chosen["cpu_s"] + row["select_cpu_s"] + row["target_cpu_s"]
            assert row["e2e_cpu_s"] == pytest.approx(cpu, abs=2e-3)
        elif row["kind"] == "random":
            assert row["e2e_s"] == pytest.approx(row["select_s"] + row["target_s"], abs=2e-3)
            assert row["e2e_cpu_s"] == pytest.approx(row["select_cpu_s"] + row["target_cpu_s"], abs=2e-3)
        else:
            assert (row["e2e_s"], row["e2e_cpu_s"]) == (row["target_s"], row["target_cpu_s"])
    steps = {r["n"]: r["steps"] for r in rows if r["kind"] in ("full", "random")}
    assert steps[2] <= steps[12] < steps[24]


def test_the_doc_holds_the_three_tables_with_every_row_and_keeps_the_text_by_hand(study):
    text = (study["root"] / "doc.md").read_text()
    assert text.startswith("# Core-sets\n\nBy hand, before.\n")
    block = text[text.index("<!-- BEGIN bench_coreset: tiny -->") : text.index("<!-- END bench_coreset: tiny -->")]
    assert "1 thread" in block and "Seeds 0, 1 (mean ± std over seeds)" in block
    svp = _table(block, "#### SVP Table 3")
    assert svp[0] == ["method", "selector", "50% acc", "50% min", "70% acc", "70% min"]
    assert [tuple(r[:2]) for r in svp[2:]] == [
        *((m, s) for m in bench_coreset.SVP_METHODS for s in ("proxy", "target")),
        ("random (balanced)", "–"),
        ("all data", "–"),
    ]
    assert all(cell != "–" for row in svp[2:] for cell in row[2:])
    assert all("±" in row[2] for row in svp[2:])  # two seeds: mean ± std
    deepcore = _table(block, "#### DeepCore Table 1")
    assert deepcore[0] == ["method", "10%", "50%", "select s at 50 %"]
    names = [r[0] for r in deepcore[2:]]
    assert names == [
        *bench_coreset.methods_for_labeled_sets(),
        "random",
        "all data",
        "*target training, min (random subset)*",
    ]
    assert all(cell != "–" for row in deepcore[2:-2] for cell in row[1:])
    assert "#### DynaMS at an average keep of 60%" in block
    assert "#### Goals of part 8" in block and "end to end in at most 0.7x" in block


def test_resume_measures_nothing_again_and_render_rewrites_the_same_tables(study, monkeypatch):
    root = study["root"]
    before = (root / "doc.md").read_text()
    old = "<!-- BEGIN bench_coreset: tiny -->\nSTALE TABLES\n<!-- END bench_coreset: tiny -->"
    (root / "doc.md").write_text(f"# Core-sets\n\nBy hand, before.\n\n{old}\n\nAfter.\n")

    def fail(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(bench_coreset, "target_row", fail)
    monkeypatch.setattr(bench_coreset, "run_selector", fail)
    monkeypatch.setattr(bench_coreset, "dynamic_row", fail)
    result = bench_coreset.main([*study["argv"], "--resume"], progress=lambda line: None)
    assert result["rows"] == study["result"]["rows"]
    assert len(result["meta"]["runs"]) == 2
    saved = json.loads((root / "rows.json").read_text())
    assert saved["rows"] == study["result"]["rows"]
    text = (root / "doc.md").read_text()
    assert "STALE" not in text and text.endswith("<!-- END bench_coreset: tiny -->\n\nAfter.\n")
    bench_coreset.main([*study["argv"], "--render"], progress=lambda line: None)
    assert (root / "doc.md").read_text() == text
    assert _table(before, "#### DeepCore Table 1") == _table(text, "#### DeepCore Table 1")


def _table(text: str, title: str) -> list[list[str]]:
    """The rows of the markdown table under `title`, each a list of cells (the separator row included)."""
    lines = text[text.index(title) :].splitlines()[2:]
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


def test_the_dynams_row_trains_fewer_steps_than_all_data_or_says_it_was_not_measured(study):
    rows = study["result"]["rows"]
    text = (study["root"] / "doc.md").read_text()
    dynamic = [r for r in rows if r["kind"] == "dynamic"]
    assert [r["seed"] for r in dynamic] == [0, 1]
    if not bench_coreset.dynamic_available():
        assert all(r["test_acc"] is None and "does not exist" in r["failed"] for r in dynamic)
        assert "Not measured yet" in text
        return
    full = {r["seed"]: r for r in rows if r["kind"] == "full"}
    for row in dynamic:
        assert row["full_steps"] == full[row["seed"]]["steps"]  # the same plan as all data ...
        assert row["steps"] < row["full_steps"]  # ... of which it takes about keep x the steps
        assert row["selections"] >= 1 and row["e2e_s"] == row["target_s"]
        assert abs(row["test_acc"] * 9 - round(row["test_acc"] * 9)) < 1e-3
    table = _table(text, "#### DynaMS at an average keep of 60%")
    assert [r[0] for r in table[2:]] == [
        "DynaMS (smallest margins, re-selected)",
        "fixed random 60 %",
        "fixed forgetting 60 % (proxy)",
        "all data",
    ]
    assert all(cell != "–" for row in table[2:] for cell in row[1:])


def test_svp_selectors_proxy_plans_no_target_selection(study):
    argv = [*study["argv"], "--svp-selectors", "proxy"]
    keys = bench_coreset.requested(bench_coreset.parse_args(argv))
    subsets = [k for k in keys if k["kind"] == "subset"]
    assert subsets and {k["selector"] for k in subsets} == {"proxy"}
    rows = [r for r in study["result"]["rows"] if r["selector"] != "target"]
    svp = _table("\n".join(bench_coreset.table_svp(rows, study["result"]["meta"])), "#### SVP Table 3")
    assert [r[1] for r in svp[2:-2]] == ["proxy"] * len(bench_coreset.SVP_METHODS)  # no empty target rows


def test_merge_adds_what_the_parts_measured_and_keeps_what_the_base_holds():
    data = {"name": "tiny"}
    full = {"kind": "full", "seed": 0, "test_acc": 0.5}
    base = {"meta": {"data": data, "runs": [{"args": {"seeds": [0]}}]}, "rows": [full]}
    retrained = {"kind": "full", "seed": 0, "test_acc": 0.9}  # the same row measured again: not taken
    seed1 = {"kind": "full", "seed": 1, "test_acc": 0.6}
    part = {
        "meta": {"data": data, "runs": [{"args": {"seeds": [0]}}, {"args": {"seeds": [1]}}]},
        "rows": [retrained, seed1],
    }
    merged = bench_coreset.merge(base, [part])
    assert merged["rows"] == [full, seed1]
    assert [r["args"]["seeds"] for r in merged["meta"]["runs"]] == [[0], [1]]
    with pytest.raises(SystemExit, match="other data"):
        bench_coreset.merge(base, [{**part, "meta": {**part["meta"], "data": {"name": "other"}}}])
