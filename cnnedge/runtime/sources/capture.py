"""OpenCV captures: the lazy ``cv2`` import, opening a capture with its timeouts, and a video file's rate."""
from __future__ import annotations

import os
from typing import Any

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 5_000


def cv2_module() -> Any:
    """``cv2``, imported when a source first needs it (``import cnnedge.runtime`` stays light)."""
    import cv2

    return cv2


def open_capture(target: Any, api: int, params: list[int]) -> Any:
    """An opened ``cv2.VideoCapture``, or None when it cannot open (the caller says why in its own words)."""
    cv2 = cv2_module()
    cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


def video_fps(path: str | os.PathLike, default: float = 30.0) -> float:
    """A video file's frame rate (CAP_PROP_FPS), or ``default`` when the container does not say."""
    cv2 = cv2_module()
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0.0 < fps <= 1000.0 else default
