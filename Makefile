# Two commands for a fresh machine with Python 3.11+:
#   make run   - set up and start the app on the bundled demo data
#   make test  - set up and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup bench study clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run server.py $(ARGS)   # safe defaults in .streamlit/config.toml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m engine bench

# The Selection-via-Proxy study (issue 5): resumable; then tables and plots.
study: $(STAMP)
	$(PY) scripts/svp_study.py
	$(PY) scripts/plot_study.py

clean:
	rm -rf $(VENV) .pytest_cache
