"""The Streamlit server never imports torch or FAISS at the top level: every page rerun would pay
for it (docs/benchmarks.md, UI). Training runs in the worker process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_app_module_imports_without_torch_or_faiss():
    probe = (
        "import importlib, pkgutil, sys, app\n"
        "for module in pkgutil.iter_modules(app.__path__):\n"
        "    importlib.import_module('app.' + module.name)\n"
        "import engine.worker\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'faiss') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
