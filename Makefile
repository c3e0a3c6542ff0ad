# lmc-book. `make book` renders the committed runs; `make test` tests.
#   make book                        the book from the committed runs (book/runs/cpu, and full when
#                                    it exists), nothing executed -> book/_build/html/index.html
#   make smoke                       runs the smoke profile (2 CPU cores, ~10 min) into the uncommitted
#                                    book/runs/smoke, then its own book -> book/_build/smoke/_build/html
#   make reproduce PROFILE=cpu       re-executes every chapter whose inputs changed (cpu: ~1 h on 2
#                                    cores; full: one GPU), then the book
#   make reproduce PROFILE=cpu RUN_ARGS="--only 03_vit_pairwise"   one chapter (also --force)
#   make test-library                the library alone (`pip install -e .` in a fresh venv) and its tests
#   make lab                         JupyterLab on notebooks/ (localhost, token; the address is printed)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
RUN_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LMC_DATA_DIR ?= $(CURDIR)/.data
export LMC_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: setup data test test-kernels test-library lint book smoke reproduce pdf lab check-book check-smoke clean

# The stamp depends on what decides the environment, so re-running is a no-op when nothing changed.
# The kernel spec "python3" is installed into the venv, so papermill runs the venv's interpreter.
$(VENV)/.stamp: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch torchvision
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[study,book,lab,dev,vision]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lmc-book)" >/dev/null
	touch $@

setup: $(VENV)/.stamp

data: setup
	$(PY) -m lmc_study.data fetch

lint: setup
	$(PY) -m ruff check lmc_core lmc_study tests bench scripts

test: setup lint
	$(PY) -m pytest

# The suite again under other SIMD kernels and on one thread (CI runs this after `make test`):
# no result may depend on which kernels torch picks or how it splits work across threads.
test-kernels: setup
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -p no:cacheprovider --ignore=tests/study/test_book.py --ignore=tests/study/test_lab.py
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -p no:cacheprovider tests/test_barrier.py \
		tests/test_canonical.py tests/test_symmetry.py tests/test_align.py
	$(PY) -m pytest -p no:cacheprovider --torch-threads 1 --ignore=tests/study/test_book.py --ignore=tests/study/test_lab.py

# The library as a user installs it: `pip install -e .` (no study, book or vision extras) into a
# fresh venv outside the project, then the library's tests (tests/, without tests/study/).
test-library:
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && $(PYTHON) -m venv "$$d/venv" && \
	"$$d/venv/bin/pip" install -q --disable-pip-version-check -c constraints.txt torch && \
	"$$d/venv/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' && \
	"$$d/venv/bin/python" -m pytest -p no:cacheprovider tests --ignore=tests/study

# Renders the committed runs: nothing is executed, so no data are needed.
book: setup
	@scripts/ensure_chromium.sh
	$(PY) scripts/build_book.py

# Runs every smoke notebook whose inputs changed (scripts/run_notebooks.py skips the others).
smoke: setup data
	$(PY) scripts/run_notebooks.py --profile smoke $(RUN_ARGS)
	$(PY) scripts/build_book.py --profiles smoke --path-output book/_build/smoke

reproduce: setup data
	$(PY) scripts/run_notebooks.py --profile $(PROFILE) $(RUN_ARGS)
	$(PY) scripts/build_book.py

# The PDF alone, printed by Chromium from the HTML already built (make book prints it too).
pdf: setup
	@scripts/ensure_chromium.sh
	$(PY) scripts/book_pdf.py book/_build/html

# JupyterLab on the chapters, with the data and model cache the other targets use (scripts/lab.py).
lab: setup
	$(PY) scripts/lab.py

# Each checks the last build of its book: `make book` and `make smoke` each rewrite book/_toc.yml.
check-book: setup
	$(PY) scripts/check_book.py book/_build/html

check-smoke: setup
	$(PY) scripts/check_book.py book/_build/smoke/_build/html --toc book/_toc.yml

clean:
	rm -rf book/_build book/_toc.yml book/intro.md book/chapters .pytest_cache .ruff_cache
