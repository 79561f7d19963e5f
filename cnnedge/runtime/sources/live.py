"""Live sources: a capture read in its own thread that keeps only the newest frame, reconnecting with
back-off; GStreamer pipelines and the Jetson CSI camera pipeline built on it."""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import numpy as np

from ..interrupt import RunInterrupted
from .capture import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, cv2_module, open_capture_stoppably
from .frames import Frame, Source, SourceError

log = logging.getLogger("cnnedge.runtime")

#: how long closing a live source waits for its capture thread (one blocked in C ends on its own timeout)
CLOSE_WAIT_S = 1.0


class LiveSource(Source):
    """A capture read in its own thread; ``get`` returns the newest frame not yet taken.

    ``reconnect``: reopen with back-off (``backoff`` seconds, doubling up to
    ``max_backoff``) when reads fail; a file target ends at its last frame instead.
    ``give_up_s``: end the source (``gave_up`` set) when it has delivered no frame for this long (a stream
    that opens but sends only garbage is down too), at most one open and one read timeout later; None keeps
    trying until closed.
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
        self._timeouts_s = (open_timeout_ms + read_timeout_ms) / 1000 if timeouts else 0.0
        self._cap = open_capture_stoppably(target, self.api, self.params, name)
        if self._cap is None:
            raise SourceError(f"{name}: cannot open (no such camera, unreachable address, or a format OpenCV "
                              "cannot read)")
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._last_frame = time.perf_counter()  # what "down for give_up_s" counts from
        self._lost_at = 0.0
        self._delay = backoff  # the back-off before the next reopen; reset by a frame, not by an open
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
            self._last_frame = t0
            self._delay = self.backoff
            self._cond.notify_all()

    def _reopen(self) -> bool:
        """Reopen with back-off until a capture opens (True), the source is closed, or it has been without a
        frame for ``give_up_s`` (False, ``gave_up`` set). An open that gives no frame (garbage on the wire)
        does not reset that clock nor the back-off."""
        limit = self.give_up_s
        if self._last_frame > self._lost_at:  # said once per loss, not after each open that gives no frame
            self._lost_at = time.perf_counter()
            log.warning("%s: stream lost; reconnecting%s", self.name,
                        "" if limit is None else f" (giving up after {limit:g} s without a frame)")
        while True:
            down = time.perf_counter() - self._last_frame
            if limit is not None and down >= limit:
                self.gave_up = True
                log.warning("%s: gave up: no frame for %.1f s", self.name, down)
                return False
            wait = self._delay if limit is None else min(self._delay, limit - down)
            if self._stop.wait(wait):
                return False
            try:
                cap = open_capture_stoppably(self.target, self.api, self.params, self.name, self._stop)
            except RunInterrupted:  # a stop signal: the run closes this source
                return False
            if cap is not None:
                self._cap = cap
                self.reconnects += 1
                log.warning("%s: reconnected (attempt after %.2f s back-off)", self.name, wait)
                self._delay = min(self._delay * 2, self.max_backoff)
                return True
            self._delay = min(self._delay * 2, self.max_backoff)

    def give_up_after(self, seconds: float) -> None:
        """End the source once it has been down ``seconds`` (a run's ``give_up_s`` for a source the caller
        opened); no effect on one that does not reconnect. Read by the capture thread once the stream is lost."""
        if self.reconnect:
            self.give_up_s = seconds

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None on timeout. StopIteration once ended, or once ``give_up_s``, an
        open and a read timeout and a second have passed without a frame (a capture stuck past its timeouts)."""
        with self._cond:
            if self._latest is None and not self._ended:
                self._cond.wait(timeout)
            f, self._latest = self._latest, None
            if f is None and not self._ended and self._stuck():
                self.gave_up = self._ended = True
                self._stop.set()
                log.warning("%s: gave up: no frame for %.1f s", self.name, time.perf_counter() - self._last_frame)
            if f is None and self._ended:
                raise StopIteration
            return f

    def _stuck(self) -> bool:
        limit = self.give_up_s
        if limit is None or not self.reconnect:
            return False
        return time.perf_counter() - self._last_frame > limit + self._timeouts_s + 1.0

    def __next__(self) -> Frame:
        while True:
            f = self.get(0.5)
            if f is not None:
                return f

    def close(self) -> None:
        """Stop the capture thread; wait a moment for it to release the capture, never for a read or an open
        in C to time out (it releases the capture itself when that returns)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=CLOSE_WAIT_S)


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
