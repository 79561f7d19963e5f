"""OpenCV captures: the lazy ``cv2`` import, opening a capture with its timeouts (in a thread of its own, so that
Ctrl-C and SIGTERM never wait for an open to time out), and a video file's rate."""
from __future__ import annotations

import os
import threading
from typing import Any

from ..interrupt import RunInterrupted, stop_requested

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


#: how often a wait for an open looks at the stop requests (a signal in the main thread ends the wait at once)
OPEN_POLL_S = 0.1


def open_capture_stoppably(target: Any, api: int, params: list[int], name: str,
                           stop: threading.Event | None = None) -> Any:
    """:func:`open_capture` run in a daemon thread and waited on in short slices: FFmpeg's open blocks in C for up
    to its timeout, where no signal handler runs. Ctrl-C, SIGTERM or SIGHUP (raised here when this is the main
    thread, or seen by :func:`~cnnedge.runtime.interrupt.stop_requested`) raise at once; ``stop`` set returns
    None. An open given up on releases its capture when it ends."""
    opening = _Opening(target, api, params, name)
    try:
        while not opening.done.wait(OPEN_POLL_S):
            if stop is not None and stop.is_set():
                opening.abandon()
                return None
            if stop_requested():
                raise RunInterrupted(f"{name}: stopped while opening")
    except BaseException:
        opening.abandon()
        raise
    return opening.result()


class _Opening:
    """One open in a daemon thread; the capture goes to whoever takes it, or is released if nobody will."""

    def __init__(self, target: Any, api: int, params: list[int], name: str) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._cap: Any = None
        self._error: BaseException | None = None
        self._abandoned = False
        threading.Thread(target=self._open, args=(target, api, params), name=f"open {name}", daemon=True).start()

    def _open(self, target: Any, api: int, params: list[int]) -> None:
        try:
            cap = open_capture(target, api, params)
        except BaseException as exc:  # noqa: BLE001 - raised in the waiting thread
            cap, self._error = None, exc
        with self._lock:
            self._cap = cap
            self.done.set()
            if self._abandoned:
                self._release()

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            self._release()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._cap


def video_fps(path: str | os.PathLike, default: float = 30.0) -> float:
    """A video file's frame rate (CAP_PROP_FPS), or ``default`` when the container does not say."""
    cv2 = cv2_module()
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0.0 < fps <= 1000.0 else default
