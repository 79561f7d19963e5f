"""Keep TensorFlow's and Keras' start-up noise off a user's terminal.

TensorFlow 2.21 writes ``oneDNN custom operations are on ...`` and absl's
``All log messages before absl::InitializeLog() ...`` from C++ while it is
imported, before any log level applies (``TF_CPP_MIN_LOG_LEVEL`` does not hide
them). So the import runs with file descriptor 2 captured, and only the known
noise lines are dropped: anything else TensorFlow prints on import still
reaches stderr. ``TF_CPP_MIN_LOG_LEVEL=0`` in the environment shows everything.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

# modules whose import loads TensorFlow
TF_ROOTS = frozenset({"tensorflow", "keras", "tf2onnx"})

_NOISE = re.compile(r"oneDNN custom operations are on|All log messages before absl::InitializeLog\(\)"
                    r"|This TensorFlow binary is optimized to use available CPU instructions"
                    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow")

# Keras warnings that say nothing a user of cnnedge can act on
KERAS_NOISE = (r"The structure of `?inputs`? doesn't match the expected structure",)


def verbose() -> bool:
    """True when the user asked TensorFlow for all its log lines (``TF_CPP_MIN_LOG_LEVEL=0``)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"


def import_quietly(name: str) -> ModuleType:
    """Import ``name`` (a module that loads TensorFlow) without TensorFlow's C++ start-up lines."""
    if name in sys.modules or "tensorflow" in sys.modules or verbose():
        return importlib.import_module(name)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the later C++ INFO lines (the log level applies then)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to keep quiet
        return importlib.import_module(name)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            return importlib.import_module(name)
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(True)
                    if not _NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextmanager
def keras_warnings_off() -> Iterator[None]:
    """Around a Keras call known to raise :data:`KERAS_NOISE` warnings: drop those (and only those)."""
    with warnings.catch_warnings():
        if not verbose():
            for message in KERAS_NOISE:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield
