"""The prepared GPU check: its dry run end to end on the CPU, its outputs, its refusal without a GPU."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import ROOT, STAGES, main, parse_args, pytest_counts
from tests.support import write_image_folder


def _cifar_like_zips(folder, classes: int = 3):
    """train.zip and test.zip laid out as the CIFAR subset's (split/<class>/file.jpg), from test-made images."""
    folder.mkdir()
    for split, per_class, start in (("train", 15, 0), ("test", 8, 100)):
        source = folder / f"{split}_images"
        write_image_folder(source / split, classes=classes, per_class=per_class, size=32, fmt="jpg", start=start)
        with zipfile.ZipFile(folder / f"{split}.zip", "w") as archive:
            for path in sorted((source / split).rglob("*.jpg")):
                archive.write(path, path.relative_to(source).as_posix())
    return folder


@pytest.mark.slow
def test_the_dry_run_measures_every_stage_into_the_doc_and_json_it_is_given(tmp_path):
    data = _cifar_like_zips(tmp_path / "data")
    doc, out = tmp_path / "out" / "gpu.md", tmp_path / "out" / "gpu.json"
    assert main(["--dry-run", "--doc", str(doc), "--json", str(out), "--data", str(data)]) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] and list(result["stages"]) == list(STAGES)
    assert {name: stage["status"] for name, stage in result["stages"].items()} == dict.fromkeys(STAGES, "ok")
    # the dry run reads 12 training and 6 test images of each class from the zips
    assert result["data"] == {**result["data"], "source": "cifar10", "train": 36, "test": 18, "classes": 3}
    stages = result["stages"]
    assert stages["proxy"]["recipe"]["test_n"] == 18 and stages["proxy"]["baseline"]["images_per_s"] > 0
    assert stages["score"]["images"] == gpu_check.DRY.score_images and stages["score"]["ratio"] > 0
    assert stages["kcenter"]["picked"] == stages["kcenter"]["budget"] == gpu_check.DRY.kcenter[3]
    assert stages["kcenter"]["compare"]["identical"] is True
    assert [row["labels"] for row in stages["target"]["rows"]] == list(gpu_check.DRY.target_labels)
    assert stages["ddp"]["processes"] == 2 and stages["ddp"]["many"]["steps"] == gpu_check.DRY.ddp_steps
    assert stages["gpu_tests"]["returncode"] == 0 and stages["gpu_tests"]["counts"]
    text = doc.read_text()
    assert "**Dry run**" in text and "## What each figure means" in text
    for figure in ("proxy training", "scoring", "k-center", "target", "DDP", "`pytest -m gpu`"):
        assert f"| {figure}" in text, figure
    assert "| error:" not in text and "| skipped:" not in text


def test_without_the_cifar_zips_the_dry_run_trains_on_generated_images_and_says_so(tmp_path):
    doc, out = tmp_path / "gpu.md", tmp_path / "gpu.json"
    argv = ["--dry-run", "--doc", str(doc), "--json", str(out), "--data", "none", "--stages", "proxy", "kcenter"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert list(result["stages"]) == ["proxy", "kcenter"]
    assert result["data"]["source"] == "generated" and result["data"]["train"] == gpu_check.DRY.generated[0]
    assert "Data: generated images (--data none: generated images of 4 pattern classes instead)" in doc.read_text()


def test_a_real_run_without_cuda_refuses_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--doc", str(tmp_path / "gpu.md"), "--json", str(tmp_path / "gpu.json")]) == 2
    assert "--dry-run" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_the_dry_run_never_writes_docs_gpu_md_unless_asked():
    dry = parse_args(["--dry-run"])
    assert dry.doc.parent == dry.json.parent and not dry.doc.resolve().is_relative_to(ROOT)
    dry.doc.parent.rmdir()  # made empty by parse_args
    real = parse_args([])
    assert (real.doc, real.json) == (ROOT / "docs" / "gpu.md", ROOT / "docs" / "gpu.json")
    asked = parse_args(["--dry-run", "--doc", "docs/gpu.md"])
    assert asked.doc.as_posix() == "docs/gpu.md" and asked.json.as_posix() == "docs/gpu.json"


def test_pytest_counts_come_from_the_last_summary_line():
    output = "....\nFAILED tests/x.py::test_a\n2 failed, 7 passed, 3 skipped, 1 error, 1210 deselected in 40.1s\n"
    assert pytest_counts(output) == {"failed": 2, "passed": 7, "skipped": 3, "errors": 1, "deselected": 1210}
    assert pytest_counts("5 skipped in 2.82s") == {"skipped": 5} and pytest_counts("") == {}


def test_stages_that_do_not_fit_the_budget_are_skipped_and_say_so(tmp_path):
    doc, out = tmp_path / "gpu.md", tmp_path / "gpu.json"
    argv = ["--dry-run", "--doc", str(doc), "--json", str(out), "--data", "none", "--budget-s", "1"]
    assert main([*argv, "--stages", "proxy", "kcenter"]) == 0
    stages = json.loads(out.read_text())["stages"]
    assert [stage["status"] for stage in stages.values()] == ["skipped", "skipped"]
    # how much of the 1 s budget is left when k-center's turn comes depends on the machine's load: 0 or 1 s
    skipped = r"\| k-center \| skipped: [01] s of the check's budget left for it, it needs 15 s \|"
    assert re.search(skipped, doc.read_text())
