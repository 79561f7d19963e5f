"""OpenCV captures: the lazy ``cv2`` import, which timeouts OpenCV applies to which back-end, opening a capture
(in a thread of its own, so that Ctrl-C and SIGTERM never wait for an open, and an open OpenCV does not bound
ends at the open timeout all the same), and a video file's rate."""
from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from ..interrupt import RunInterrupted, stop_requested

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 5_000


def cv2_module() -> Any:
    """``cv2``, imported when a source first needs it (``import cnnedge.runtime`` stays light)."""
    import cv2

    return cv2


def opencv_version() -> tuple[int, int, int]:
    """The imported OpenCV's version as numbers (``4.6.0`` -> (4, 6, 0); a suffix such as ``-dev`` is ignored)."""
    nums = [int(n) for n in re.findall(r"\d+", cv2_module().__version__)[:3]]
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


#: the first OpenCV whose back-end takes CAP_PROP_OPEN_TIMEOUT_MSEC and CAP_PROP_READ_TIMEOUT_MSEC: FFmpeg's took
#: them from 4.5.2, GStreamer's from 4.7.0 (4.6's refuses the open: "can't set property 53"; Debian 12 ships 4.6)
TIMEOUTS_FROM = {"FFMPEG": (4, 5, 2), "ANY": (4, 5, 2), "GSTREAMER": (4, 7, 0)}


def opencv_applies_timeouts(api: int) -> bool:
    """Whether this OpenCV's back-end ``api`` takes the open and read timeout properties (CAP_ANY opens files and
    URLs with FFmpeg first). Where it does not, they are not passed: cnnedge applies them itself."""
    cv2 = cv2_module()
    names = {getattr(cv2, f"CAP_{n}", None): n for n in TIMEOUTS_FROM}
    first = TIMEOUTS_FROM.get(names.get(api, ""))
    return (first is not None and hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC")
            and opencv_version() >= first)


def timeout_params(api: int, open_timeout_ms: int, read_timeout_ms: int) -> list[int]:
    """The open parameters that hand both timeouts to OpenCV, or [] where back-end ``api`` would refuse them."""
    cv2 = cv2_module()
    if not opencv_applies_timeouts(api):
        return []
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_ms), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_ms)]


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
                           stop: threading.Event | None = None, timeout_s: float | None = None) -> Any:
    """:func:`open_capture` run in a daemon thread and waited on in short slices: FFmpeg's open blocks in C for up
    to its timeout, where no signal handler runs, and GStreamer's before 4.7 takes no timeout at all. Ctrl-C,
    SIGTERM or SIGHUP (raised here when this is the main thread, or seen by
    :func:`~cnnedge.runtime.interrupt.stop_requested`) raise at once; ``stop`` set, or ``timeout_s`` passed,
    returns None. An open given up on releases its capture when it ends."""
    return _Opening(target, api, params, name).wait(stop, timeout_s)


class Opener:
    """Opens one target again and again (a live source's first open and its reconnects), each open ending by
    ``timeout_s``. An open given up on may stay blocked in C; while it is, a new open is not started (that attempt
    fails at once), so a source that hangs its opens holds one thread, not one per reconnect."""

    def __init__(self, target: Any, api: int, params: list[int], name: str, timeout_s: float | None) -> None:
        self.target, self.api, self.params, self.name, self.timeout_s = target, api, params, name, timeout_s
        self._last: _Opening | None = None

    def open(self, stop: threading.Event | None = None) -> Any:
        """An opened capture, or None (it cannot open, the last open is still blocked, time ran out, or ``stop``)."""
        if self._last is not None and not self._last.done.is_set():
            return None
        self._last = _Opening(self.target, self.api, self.params, self.name)
        return self._last.wait(stop, self.timeout_s)


class _Opening:
    """One open in a daemon thread; the capture goes to whoever takes it, or is released if nobody will."""

    def __init__(self, target: Any, api: int, params: list[int], name: str) -> None:
        self.name = name
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

    def wait(self, stop: threading.Event | None, timeout_s: float | None) -> Any:
        """The capture once the open ends; None when ``stop`` is set or ``timeout_s`` passes first (abandoned)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while not self.done.wait(OPEN_POLL_S if deadline is None else
                                     max(0.0, min(OPEN_POLL_S, deadline - time.monotonic()))):
                if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline):
                    self.abandon()
                    return None
                if stop_requested():
                    raise RunInterrupted(f"{self.name}: stopped while opening")
        except BaseException:
            self.abandon()
            raise
        return self.result()

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
