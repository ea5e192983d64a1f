"""`python -m engine`: help for every subcommand and a tiny simulate, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import build_parser, main
from tests.support import write_image_folder

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_subcommands():
    done = _run("--help")
    assert done.returncode == 0
    assert "{run,simulate,coreset,import-labels,bench,worker,predict,study}" in done.stdout


def test_parsing_any_command_imports_neither_torch_nor_faiss():
    probe = (
        "import sys; from engine.cli import build_parser; p = build_parser()\n"
        "for argv in (['bench', '--only', 'kcenter'], ['simulate', '--data', 'd', '--out', 'o'], ['run'],\n"
        "             ['import-labels', '--project', 'p', '--subfolders']):\n"
        "    p.parse_args(argv)\n"
        "print(sorted(m for m in ('torch', 'faiss', 'streamlit') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_installed_command_is_the_same_command():
    command = Path(sys.executable).parent / "proxy-labeler"
    assert command.is_file(), "pip install -e . installs the proxy-labeler console script"
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "{run,simulate,coreset,import-labels,bench,worker,predict,study}" in done.stdout


def test_run_hands_the_process_to_streamlit_on_server_py(monkeypatch):
    import engine.cli

    seen = []
    monkeypatch.setattr(engine.cli.os, "execv", lambda path, argv: seen.append(argv))
    assert main(["run", "--server.port", "8600", "--", "--project", "p"]) == 0
    [argv] = seen
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(REPO / "server.py")
    assert argv[5:] == ["--server.port", "8600", "--", "--project", "p"]


def test_study_runs_the_study_script_then_its_report_and_stops_at_a_failure(monkeypatch, tmp_path):
    import engine.cli

    calls, codes = [], [0, 0]

    def call(command, **kwargs):
        calls.append(command)
        return codes.pop(0)

    monkeypatch.setattr(engine.cli.subprocess, "call", call)
    assert main(["study"]) == 0
    scripts = REPO / "scripts"
    assert calls == [[sys.executable, str(scripts / "svp_study.py")], [sys.executable, str(scripts / "plot_study.py")]]
    # each command reaches its script from any folder: the same command asking for help prints its options
    for command, option in zip(calls, ("--profile", "--results"), strict=True):
        done = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"usage: {Path(command[1]).name}" in done.stdout and option in done.stdout

    calls.clear()
    codes[:] = [3]
    assert main(["study"]) == 3  # the study failed: its exit status, and no report drawn from partial results
    assert len(calls) == 1


@pytest.mark.parametrize(
    "command, flag",
    [
        ("simulate", "--selector"),
        ("bench", "--only"),
        ("worker", "--parent-pid"),
        ("predict", "--device"),
        ("import-labels", "--subfolders"),
    ],
)
def test_subcommand_help(command, flag, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    assert flag in capsys.readouterr().out


def test_missing_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2


def test_bad_settings_print_one_line_and_exit_2(tmp_path, capsys):
    code = main(["simulate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "error: " in capsys.readouterr().err


def test_tiny_simulate_in_a_subprocess(tmp_path):
    write_image_folder(tmp_path / "data" / "train", classes=2, per_class=6, seed=3)
    write_image_folder(tmp_path / "data" / "test", classes=2, per_class=2, seed=4)
    out = tmp_path / "result.json"
    done = _run(
        "simulate",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--strategy",
        "margin",
        "--initial",
        "4",
        "--round-size",
        "3",
        "--budget",
        "7",
        "--proxy",
        "proxy_tiny",
        "--target",
        "proxy_tiny",
        "--selector",
        "proxy",
        "--seed",
        "1",
        "--proxy-steps",
        "30",
        "--target-steps",
        "30",
        "--device",
        "cpu",
        "--image-size",
        "8",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert [r["labeled"] for r in result["rounds"]] == [0, 4]
    assert result["settings"]["seed"] == 1 and result["target"]["labeled"] == 7
    assert out.with_suffix(".csv").is_file()
    assert "round 1/1" in done.stderr and "target test accuracy" in done.stderr


def test_bench_runs_the_kcenter_benchmark_from_its_home(capsys):
    argv = ["bench", "--only", "kcenter", "--n", "300", "--dims", "8", "--labeled", "10", "--budget", "5"]
    assert main([*argv, "--repeats", "1", "--no-baselines", "--torch-cpu-budget", "5"]) == 0
    assert "k-center" in capsys.readouterr().out.lower()


def test_the_worker_command_parses_without_importing_storage():
    """The worker takes its lock before any heavy import (storage brings sqlite-utils and pandas)."""
    probe = (
        "import sys, engine.cli as cli\n"
        "cli.run_worker_command = lambda args: print(sorted(m for m in ('storage', 'pandas', 'torch') "
        "if m in sys.modules)) or 0\n"
        "sys.exit(cli.main(['worker', '--project', '/nonexistent', '--once']))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _labeled_folder_project(tmp_path: Path):
    import storage
    from tests.support import RGB, tiny_settings

    write_image_folder(tmp_path / "images", classes=3, per_class=2, size=8)
    project = storage.create_project(tmp_path / "project", tiny_settings(tmp_path / "images", RGB))
    storage.ingest(project, workers=1)
    return project


def test_import_labels_reports_a_dry_run_imports_and_refuses_a_file_with_problems(tmp_path, capsys):
    import storage

    project = _labeled_folder_project(tmp_path)
    base = ["import-labels", "--project", str(project.root)]
    assert main([*base, "--subfolders", "--dry-run"]) == 0
    assert "Would import 6 labels: red 2, green 2, blue 2." in capsys.readouterr().out
    assert storage.current_labels(project) == {}

    bad = tmp_path / "fixed.csv"
    bad.write_text("path,class\nred/img_0000.png,green\nred/nowhere.png,red\n")
    assert main([*base, "--file", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Nothing was imported" in err and "line 3: red/nowhere.png" in err
    assert storage.current_labels(project) == {}

    assert main([*base, "--subfolders"]) == 0
    assert "Imported 6 labels" in capsys.readouterr().out
    assert sorted(storage.current_labels(project).values()) == sorted(["red", "green", "blue"] * 2)

    (tmp_path / "notes.txt").write_text("path,class\n")
    assert main([*base, "--file", str(tmp_path / "notes.txt")]) == 2  # not a label file: one line
    assert "error: notes.txt: use a .csv or .jsonl file" in capsys.readouterr().err
    assert main(["import-labels", "--project", str(tmp_path / "none"), "--subfolders"]) == 2
    assert "error: no project at" in capsys.readouterr().err


def test_import_labels_needs_exactly_one_source(tmp_path, capsys):
    for sources, message in (
        ([], "one of the arguments --file --subfolders is required"),
        (["--subfolders", "--file", "x.csv"], "not allowed with argument"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["import-labels", "--project", str(tmp_path), *sources])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_import_labels_in_a_subprocess_imports_no_torch(tmp_path):
    project = _labeled_folder_project(tmp_path)
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"path": "red/img_0001.png", "class": "red"}\n')
    probe = (
        "import sys; from engine.cli import main\n"
        f"code = main(['import-labels', '--project', {str(project.root)!r}, '--file', {str(labels)!r}])\n"
        "print(code, sorted(m for m in ('torch', 'faiss', 'streamlit') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["labels.jsonl: 1 row read.", "Imported 1 label: red 1.", "0 []"]
