# lmc-book. `make book` runs the study on its CPU default and builds the HTML; `make test` tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LMC_DATA_DIR ?= $(CURDIR)/.data
export LMC_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: setup data test lint book reproduce clean

# The stamp depends on what decides the environment, so re-running is a no-op when nothing changed.
$(VENV)/.stamp: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch torchvision
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[book,dev,vision]'
	touch $@

setup: $(VENV)/.stamp

data: setup
	$(PY) -m lmc_core.data fetch

lint: setup
	$(PY) -m ruff check lmc_core tests bench scripts

test: setup lint
	$(PY) -m pytest

clean:
	rm -rf book/_build .pytest_cache .ruff_cache
