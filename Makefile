# One-word tools. Each works on a fresh machine with only Python and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast install clean models-for-tests tools-for-tests ros2-for-tests

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

# Debian's packages the tests drive, installed when missing and apt-get can (root); otherwise the tests that need
# them skip with the reason. qemu-x86_64 (qemu-user) runs the venv as an x86 CPU without VNNI (-cpu Haswell): the
# export checks its CPU INT8 file there, and the INT8 tests assert it. podman, buildah, runc and debootstrap build
# and run docker/Dockerfile.cpu (docker/build_cpu_image.sh, tests/test_docker_image.py).
TEST_TOOLS := qemu-x86_64:qemu-user podman:podman buildah:buildah runc:runc debootstrap:debootstrap
tools-for-tests:
	@missing=""; for t in $(TEST_TOOLS); do command -v "$${t%%:*}" >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed (not root, or no apt-get):$$missing: the emulated-CPU INT8 checks and the CPU image tests skip"; fi; fi

# rclpy from PyPI's ROS 2 Kilted wheels (tests/ros2-requirements.txt, pinned) in a venv of its own, tests/.ros2-venv,
# with cnnedge (editable, no dependencies) and the main venv's numpy, OpenCV and ONNX Runtime at the same versions:
# tests/test_ros2_node.py runs examples/ros2_node.py there. A venv of its own keeps ROS's hundred packages out of
# .venv's resolution. A failed install is reported and those tests skip with the reason.
ROS2_VENV  := tests/.ros2-venv
ROS2_STAMP := $(ROS2_VENV)/.installed
RUNTIME_PINS := numpy|opencv-python-headless|onnxruntime|flatbuffers|packaging|protobuf

$(ROS2_STAMP): tests/ros2-requirements.txt $(STAMP)
	@rm -rf $(ROS2_VENV)
	@{ $(PYTHON) -m venv $(ROS2_VENV) && \
	  $(PY) -m pip freeze | grep -i -E '^($(RUNTIME_PINS))==' > $(ROS2_VENV)/runtime-pins.txt && \
	  $(ROS2_VENV)/bin/pip install --quiet -r tests/ros2-requirements.txt -r $(ROS2_VENV)/runtime-pins.txt && \
	  $(ROS2_VENV)/bin/pip install --quiet --no-deps -e . && touch $@; } || \
	{ rm -rf $(ROS2_VENV); echo "ROS 2 wheels not installed (see above): tests/test_ros2_node.py will skip"; }

ros2-for-tests: $(ROS2_STAMP)

## make demo: train digits-cnn on the embedded digits, export, classify a folder
demo: $(STAMP)
	$(PY) -m cnnedge.demo runs/demo

## make test: the whole test suite
test: $(STAMP) models-for-tests tools-for-tests ros2-for-tests
	$(PY) -m pytest -q

## make test-fast: skip tests marked slow
test-fast: $(STAMP) models-for-tests tools-for-tests ros2-for-tests
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs build *.egg-info .pytest_cache
