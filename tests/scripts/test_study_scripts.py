"""The SVP study's runner and report scripts (scripts/svp_study.py, scripts/plot_study.py)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


svp_study = load("svp_study")
plot_study = load("plot_study")


def fake_run(strategy, selector, seed, final_acc, round_s, eval_every_round=True):
    """A results dict shaped like `python -m engine simulate` output."""
    rounds = [{"round": 0, "labeled": 0, "proxy_test_acc": None, "train_s": None, "score_s": None, "select_s": None}]
    for index, labeled in enumerate((100, 200), start=1):
        row = {
            "round": index,
            "labeled": labeled,
            "proxy_test_acc": 0.2 + 0.1 * index,
            "train_s": round_s / 2,
            "score_s": round_s / 2,
            "select_s": 0.0,
        }
        if eval_every_round:
            row["target_test_acc"] = final_acc - 0.1 * (3 - index)
        rounds.append(row)
    settings = dict(
        strategy=strategy,
        selector=selector,
        seed=seed,
        proxy="proxy_tiny",
        proxy_steps=30,
        target="resnet20",
        target_steps=30,
        initial=100,
        round_size=100,
        budget=300,
        pool_size=1000,
        test_size=100,
    )
    return {
        "settings": settings,
        "rounds": rounds,
        "total_s": 10.0,
        "target": {"test_acc": final_acc, "train_s": 1.0, "labeled": 300},
    }


def write_grid(results: Path, eval_every_round=True):
    results.mkdir(parents=True, exist_ok=True)
    for seed in (0, 1):
        for strategy, selector in svp_study.GRID:
            acc = {"random": 0.50, "least_confidence": 0.52, "kcenter": 0.45}[strategy] + 0.01 * seed
            round_s = 10.0 if selector == "proxy" else 40.0
            run = fake_run(strategy, selector, seed, acc, round_s, eval_every_round)
            (results / f"{svp_study.run_name(strategy, selector, seed)}.json").write_text(json.dumps(run))


def test_study_command_evaluates_every_round_unless_final_only(tmp_path, monkeypatch):
    parser_args = ["--data", str(tmp_path), "--results", str(tmp_path)]
    calls = []
    monkeypatch.setattr(svp_study.subprocess, "run", lambda cmd, **kwargs: calls.append(cmd))
    svp_study.main([*parser_args, "--seeds", "7"])
    svp_study.main([*parser_args, "--seeds", "8", "--final-only"])
    assert len(calls) == 2 * len(svp_study.GRID)
    assert all("--eval-every-round" in cmd for cmd in calls[: len(svp_study.GRID)])
    assert not any("--eval-every-round" in cmd for cmd in calls[len(svp_study.GRID) :])
    assert json.loads((tmp_path / "study_run.json").read_text())["eval_every_round"] is False


def test_study_skips_finished_runs(tmp_path, monkeypatch):
    write_grid(tmp_path)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(svp_study.subprocess, "run", must_not_run)
    assert svp_study.main(["--data", str(tmp_path), "--results", str(tmp_path), "--seeds", "0", "1"]) == 0
    assert (tmp_path / "study_run.json").exists()


def test_report_tables_checks_and_plots(tmp_path):
    write_grid(tmp_path / "results")
    runs = plot_study.load_runs(tmp_path / "results")
    block = plot_study.generated_block(runs, None)

    assert "| kcenter | proxy | 2 | 25.5 ± 0.7 | 35.5 ± 0.7 | 45.5 ± 0.7 | 20 ± 0 | 4.0× |" in block
    assert (
        "least_confidence via proxy ≥ random (target acc. %): 200: 42.5 vs 40.5 (+2.0); "
        "300: 52.5 vs 50.5 (+2.0) — holds at the final budget (holds at 2 of 2 budgets)." in block
    )
    assert (
        "kcenter via proxy ≥ random (target acc. %): 200: 35.5 vs 40.5 (-5.0); 300: 45.5 vs 50.5 (-5.0)"
        " — does NOT hold" in block
    )
    assert "target/proxy runtime 80 s / 20 s = 4.00× — holds." in block

    plot_study.plot_accuracy(runs, tmp_path / "accuracy.png")
    plot_study.plot_runtime(runs, tmp_path / "runtime.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000
    assert (tmp_path / "runtime.png").stat().st_size > 10_000


def test_report_with_final_budget_only_draws_bars(tmp_path):
    write_grid(tmp_path / "results", eval_every_round=False)
    runs = plot_study.load_runs(tmp_path / "results")
    assert plot_study.budgets_of(runs) == [300]
    plot_study.plot_accuracy(runs, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000


def test_report_refuses_an_empty_results_folder(tmp_path):
    with pytest.raises(SystemExit, match="no results"):
        plot_study.main(["--results", str(tmp_path)])
