"""OpenCV, loaded only after its decode limits are set: OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once,
when it loads, so the limit must be in the environment before the first ``import cv2``.

Setting it is an explicit step (:func:`set_decode_limits`), taken by :func:`opencv`, the one way
imaging reaches OpenCV, and by whatever starts decoding before that (a Classifier, whose worker
processes inherit the environment). Importing this module sets nothing.
"""
from __future__ import annotations

import os
from types import ModuleType

MAX_PIXELS = 64_000_000  # about 8000x8000: larger headers are treated as pixel bombs
PIXELS_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"

_limits_set = False


def set_decode_limits() -> None:
    """Put the pixel limit into the environment, unless the user set one; once per process, then free.
    Only a later ``import cv2`` (this process's, or a child's) takes it."""
    global _limits_set
    if not _limits_set:
        os.environ.setdefault(PIXELS_VARIABLE, str(MAX_PIXELS))
        _limits_set = True


def opencv() -> ModuleType:
    """The ``cv2`` module, with the decode limits set before it loads."""
    set_decode_limits()
    import cv2

    return cv2
