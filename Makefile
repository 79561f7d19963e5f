# One-word tools. Each works on a fresh machine with only Python and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast docs install clean models-for-tests tools-for-tests ros2-for-tests gst-for-tests

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real classifiers from PyPI wheels that tests run against, and the nvidia-pytriton wheel whose tritonserver
# tests/serve/test_triton_server.py serves the Triton repository with (pinned, sha256-checked; not dependencies):
# downloaded once into tests/.wheels; a failed download is reported and the tests that need it skip.
models-for-tests: $(STAMP)
	$(PY) tests/model_wheels.py

# Debian's packages the tests drive, installed when missing and apt-get can (root); otherwise the tests that need
# them skip with the reason. qemu-x86_64 (qemu-user) runs the venv as an x86 CPU without VNNI (-cpu Haswell): the
# export checks its CPU INT8 file there, and the INT8 tests assert it. podman, buildah, runc and debootstrap build
# and run docker/Dockerfile.cpu (docker/build_cpu_image.sh, tests/docker/test_docker_image.py).
TEST_TOOLS := qemu-x86_64:qemu-user podman:podman buildah:buildah runc:runc debootstrap:debootstrap
tools-for-tests:
	@missing=""; for t in $(TEST_TOOLS); do command -v "$${t%%:*}" >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed (not root, or no apt-get):$$missing: the emulated-CPU INT8 checks and the CPU image tests skip"; fi; fi

# rclpy from PyPI's ROS 2 Kilted wheels (tests/ros2-requirements.txt, pinned) in a venv of its own, tests/.ros2-venv,
# with cnnedge (editable, no dependencies) and the main venv's numpy, OpenCV and ONNX Runtime at the same versions:
# tests/examples/test_ros2_node.py runs examples/ros2_node.py there. A venv of its own keeps ROS's hundred
# packages out of .venv's resolution. A failed install is reported and those tests skip with the reason.
ROS2_VENV  := tests/.ros2-venv
ROS2_STAMP := $(ROS2_VENV)/.installed
RUNTIME_PINS := numpy|opencv-python-headless|onnxruntime|flatbuffers|packaging|protobuf

$(ROS2_STAMP): tests/ros2-requirements.txt $(STAMP)
	@rm -rf $(ROS2_VENV)
	@{ $(PYTHON) -m venv $(ROS2_VENV) && \
	  $(PY) -m pip freeze | grep -i -E '^($(RUNTIME_PINS))==' > $(ROS2_VENV)/runtime-pins.txt && \
	  $(ROS2_VENV)/bin/pip install --quiet -r tests/ros2-requirements.txt -r $(ROS2_VENV)/runtime-pins.txt && \
	  $(ROS2_VENV)/bin/pip install --quiet --no-deps -e . && touch $@; } || \
	{ rm -rf $(ROS2_VENV); echo "ROS 2 wheels not installed (see above): tests/examples/test_ros2_node.py will skip"; }

ros2-for-tests: $(ROS2_STAMP)

# Debian's OpenCV 4.6 with GStreamer (python3-opencv, built against Debian's numpy 1.24) and the GStreamer plugins
# (gstreamer1.0-libav decodes H.264 and MPEG-4), installed with apt-get as root, and a venv over them,
# tests/.gst-venv (--system-site-packages, Debian's python3): cnnedge editable with no dependencies, ONNX Runtime at
# the main venv's version and numpy held at the system's, as the README tells users beside a system OpenCV.
# tests/runtime/sources/test_gstreamer.py runs cnn-infer --gst there. Not root, no apt-get or a failed install:
# said here, and those tests skip with the reason.
GST_VENV   := tests/.gst-venv
GST_STAMP  := $(GST_VENV)/.installed
GST_PYTHON ?= /usr/bin/python3
GST_APT    := python3-opencv gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
GST_PINS   := onnxruntime|flatbuffers|packaging|protobuf

$(GST_STAMP): $(STAMP)
	@if ! dpkg -s $(GST_APT) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GST_APT) >/dev/null; \
	  else echo "not installed (not root, or no apt-get): $(GST_APT)"; fi; fi
	@rm -rf $(GST_VENV)
	@{ $(GST_PYTHON) -c 'import cv2, numpy' && \
	  $(GST_PYTHON) -m venv --system-site-packages $(GST_VENV) && \
	  $(GST_PYTHON) -c 'import numpy; print("numpy==" + numpy.__version__)' > $(GST_VENV)/pins.txt && \
	  $(PY) -m pip freeze | grep -i -E '^($(GST_PINS))==' >> $(GST_VENV)/pins.txt && \
	  $(GST_VENV)/bin/pip install --quiet -r $(GST_VENV)/pins.txt && \
	  $(GST_VENV)/bin/pip install --quiet --no-deps -e . && \
	  $(GST_VENV)/bin/python -c 'import cv2, onnxruntime, cnnedge.runtime.sources as s; assert s.has_gstreamer()' && \
	  touch $@; } || \
	{ rm -rf $(GST_VENV); echo "no GStreamer venv (see above): tests/runtime/sources/test_gstreamer.py will skip"; }

gst-for-tests: $(GST_STAMP)

## make demo: train digits-cnn on the embedded digits, export, classify a folder
demo: $(STAMP)
	$(PY) -m cnnedge.demo runs/demo

## make docs: the documentation in docs/, built with mkdocs --strict into build/site (a broken link or a page
## missing from mkdocs.yml's nav fails it); make test and make test-fast build it first
docs: $(STAMP)
	$(PY) -m mkdocs build --strict -d build/site

## make test: the whole test suite
test: $(STAMP) docs models-for-tests tools-for-tests ros2-for-tests gst-for-tests
	$(PY) -m pytest -q

## make test-fast: skip tests marked slow
test-fast: $(STAMP) docs models-for-tests tools-for-tests ros2-for-tests gst-for-tests
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf runs build *.egg-info .pytest_cache
