# Two commands for a fresh machine with Python 3.11+:
#   make run   - set up and start the app on the bundled demo data
#   make test  - set up and run the test suite
# (make lint: ruff and mypy, which CI runs too)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint setup bench study clean gpu-check gpu-check-dry

# The project installed in editable mode (console script `proxy-labeler`) with the dev group
# (pytest, playwright, matplotlib, ruff, mypy) from pyproject.toml.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . --group dev
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/proxy-labeler run $(ARGS)   # streamlit run server.py; safe defaults in .streamlit/config.toml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(STAMP)
	$(VENV)/bin/proxy-labeler bench

# The Selection-via-Proxy study (issue 5): resumable; then tables and plots.
study: $(STAMP)
	$(VENV)/bin/proxy-labeler study

# The prepared GPU check (docs/gpu.md): proxy training, scoring, k-center, target and DDP figures on this
# machine's GPU, then `pytest -m gpu`, in at most 8 minutes; refuses without CUDA. The dry run: every stage at
# tiny sizes on the CPU, written to a temporary folder. Set up first unless PY names a prepared interpreter
# (make gpu-check PY=python3).
gpu-check: $(if $(filter $(VENV)/%,$(PY)),$(STAMP))
	$(PY) -m benchmarks.gpu_check --doc docs/gpu.md --json docs/gpu.json

gpu-check-dry: $(if $(filter $(VENV)/%,$(PY)),$(STAMP))
	$(PY) -m benchmarks.gpu_check --dry-run

clean:
	rm -rf $(VENV) .pytest_cache
