# flarelab: `make demo` and `make test` set everything up from a fresh clone.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JS := interop/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: setup demo test test-fast lint bench clean lab

setup: $(STAMP) $(JS_STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -U pip
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev,otlp,workbench]'
	touch $@

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PYTHON) -m flarelab.demo

test: setup lint
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not interop and not slow and not browser and not notebook"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy flarelab

# JupyterLab with the notebooks (opens notebook 01; the URL with its token is printed)
lab: $(STAMP)
	cd notebooks && ../$(PYTHON) -m jupyterlab 01_transports_security_muxers.ipynb

bench: $(STAMP)
	$(PYTHON) bench/run_all.py

clean:
	rm -rf $(VENV) $(JS)/node_modules .pytest_cache .ruff_cache .hypothesis
