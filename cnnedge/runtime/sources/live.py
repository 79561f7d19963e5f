"""Live sources: a capture read in its own thread that keeps only the newest frame, reconnecting with
back-off; GStreamer pipelines and the Jetson CSI camera pipeline built on it."""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import numpy as np

from .capture import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, cv2_module, open_capture
from .frames import Frame, Source, SourceError

log = logging.getLogger("cnnedge.runtime")


class LiveSource(Source):
    """A capture read in its own thread; ``get`` returns the newest frame not yet taken.

    ``reconnect``: reopen with back-off (``backoff`` seconds, doubling up to
    ``max_backoff``) when reads fail; a file target ends at its last frame instead.
    ``give_up_s``: end the source (``gave_up`` set) when it has stayed down this
    long; None keeps trying until closed.
    ``fps``: deliver no faster than this (a video file replayed as a camera would
    deliver it); None reads as fast as the capture gives frames.
    """

    live = True

    def __init__(self, target: Any, name: str, api: int | None = None, *, timeouts: bool = True,
                 open_timeout_ms: int = OPEN_TIMEOUT_MS, read_timeout_ms: int = READ_TIMEOUT_MS,
                 reconnect: bool = True, backoff: float = 0.25, max_backoff: float = 4.0,
                 fps: float | None = None, give_up_s: float | None = None) -> None:
        cv2 = cv2_module()
        self.target, self.name = target, name
        self.api = cv2.CAP_ANY if api is None else api
        self.params = ([cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_ms),
                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_ms)] if timeouts else [])
        self.reconnect, self.backoff, self.max_backoff = reconnect, backoff, max_backoff
        self.period = 1.0 / fps if fps else 0.0
        self.give_up_s = give_up_s
        self.gave_up = False
        self.dropped = self.reconnects = self.frames = self.size_changes = 0
        self.size: tuple[int, ...] | None = None
        self._cap = open_capture(target, self.api, self.params)
        if self._cap is None:
            raise SourceError(f"{name}: cannot open (no such camera, unreachable address, or a format OpenCV "
                              "cannot read)")
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"capture {name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        due = time.perf_counter()
        try:
            while not self._stop.is_set():
                ok, img = self._cap.read() if self._cap is not None else (False, None)
                if not ok or img is None or img.size == 0:
                    if self._cap is not None:
                        self._cap.release()
                        self._cap = None
                    if not self.reconnect or not self._reopen():
                        break
                    continue
                if self.period:
                    if self._stop.wait(max(0.0, due - time.perf_counter())):
                        break
                    due = max(due, time.perf_counter()) + self.period  # late frames never burst
                self._publish(img)
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, img: np.ndarray) -> None:
        ts, t0 = time.time(), time.perf_counter()
        if self.size is None:
            self.size = img.shape
        elif img.shape != self.size:
            self.size_changes += 1
            log.warning("%s: frame size changed from %s to %s; frames are resized to the model input",
                        self.name, "x".join(map(str, self.size)), "x".join(map(str, img.shape)))
            self.size = img.shape
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = Frame(self.name, ts, t0, frame=self.frames, image=img)
            self.frames += 1
            self._cond.notify_all()

    def _reopen(self) -> bool:
        delay = self.backoff
        lost = time.perf_counter()
        limit = self.give_up_s
        log.warning("%s: stream lost; reconnecting%s", self.name,
                    "" if limit is None else f" (giving up after {limit:g} s)")
        while True:
            wait = delay if limit is None else min(delay, max(0.0, lost + limit - time.perf_counter()))
            if self._stop.wait(wait):
                return False
            cap = open_capture(self.target, self.api, self.params)
            if cap is not None:
                self._cap = cap
                self.reconnects += 1
                log.warning("%s: reconnected (attempt after %.2f s back-off)", self.name, delay)
                return True
            if limit is not None and time.perf_counter() - lost >= limit:
                self.gave_up = True
                log.warning("%s: gave up: no frame for %.1f s", self.name, time.perf_counter() - lost)
                return False
            delay = min(delay * 2, self.max_backoff)

    def give_up_after(self, seconds: float) -> None:
        """End the source once it has been down ``seconds`` (a run's ``give_up_s`` for a source the caller
        opened); no effect on one that does not reconnect. Read by the capture thread once the stream is lost."""
        if self.reconnect:
            self.give_up_s = seconds

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None on timeout. StopIteration once ended."""
        with self._cond:
            if self._latest is None and not self._ended:
                self._cond.wait(timeout)
            f, self._latest = self._latest, None
            if f is None and self._ended:
                raise StopIteration
            return f

    def __next__(self) -> Frame:
        while True:
            f = self.get(0.5)
            if f is not None:
                return f

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=max(2.0, self.params[3] / 1000 + 1 if self.params else 2.0))


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The usual Jetson CSI camera pipeline, ending in an appsink that drops old frames."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width=(int){width}, "
            f"height=(int){height}, framerate=(fraction){fps}/1 ! nvvidconv flip-method={flip} ! "
            "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def has_gstreamer() -> bool:
    info = cv2_module().getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m and m.group(1).upper() != "NO")


def gstreamer(pipeline: str, name: str | None = None, *, open_timeout_ms: int = OPEN_TIMEOUT_MS,
              read_timeout_ms: int = READ_TIMEOUT_MS, give_up_s: float | None = None) -> LiveSource:
    """A GStreamer pipeline as a live source. OpenCV documents CAP_PROP_OPEN_TIMEOUT_MSEC and
    CAP_PROP_READ_TIMEOUT_MSEC for its FFmpeg and GStreamer back-ends, so both are passed here
    (local V4L2 cameras take none). ``give_up_s``: see :class:`LiveSource`."""
    cv2 = cv2_module()
    if not has_gstreamer():
        raise SourceError("this OpenCV build has no GStreamer support (opencv-python-headless from PyPI has none); "
                          "use an OpenCV built with GStreamer (on Jetson: the system python3-opencv)")
    return LiveSource(pipeline, name or "gstreamer", cv2.CAP_GSTREAMER, open_timeout_ms=open_timeout_ms,
                      read_timeout_ms=read_timeout_ms, give_up_s=give_up_s)
