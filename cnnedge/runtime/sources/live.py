"""Live sources: a capture read in its own thread that keeps only the newest frame, reconnecting with
back-off, its open and reads bounded by the timeouts whether or not OpenCV applies them."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..interrupt import RunInterrupted
from .capture import OPEN_POLL_S, OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, Opener, cv2_module, timeout_params
from .frames import Frame, Source, SourceUnavailable

log = logging.getLogger("cnnedge.runtime")

#: how long closing a live source waits for its capture thread (one blocked in C ends on its own timeout)
CLOSE_WAIT_S = 1.0


#: how many reads a live source leaves blocked in C (past a read timeout that OpenCV does not apply) before it ends
#: instead of reconnecting once more: each holds a thread and a pipeline until OpenCV returns
MAX_STUCK_READS = 3


class LiveSource(Source):
    """A capture read in its own thread; ``get`` returns the newest frame not yet taken.

    ``reconnect``: reopen with back-off (``backoff`` seconds, doubling up to
    ``max_backoff``) when reads fail; a file target ends at its last frame instead.
    ``give_up_s``: end the source (``gave_up`` set) when it has delivered no frame for this long (a stream
    that opens but sends only garbage is down too), at most one open and one read timeout later; None keeps
    trying until closed.
    ``fps``: deliver no faster than this (a video file replayed as a camera would
    deliver it); None reads as fast as the capture gives frames.
    ``every_frame``: drop nothing: the capture waits until its frame is taken (a finite GStreamer pipeline,
    read like a video file; ``live`` is then False).
    ``timeouts``: the open and read timeouts apply. OpenCV is handed them where its back-end takes them
    (:func:`~.capture.opencv_applies_timeouts`); cnnedge bounds the open itself in every case, and a read
    where OpenCV cannot: one blocked past the read timeout counts as a lost stream (``stuck_reads``).
    """

    live = True

    def __init__(self, target: Any, name: str, api: int | None = None, *, timeouts: bool = True,
                 open_timeout_ms: int = OPEN_TIMEOUT_MS, read_timeout_ms: int = READ_TIMEOUT_MS,
                 reconnect: bool = True, backoff: float = 0.25, max_backoff: float = 4.0,
                 fps: float | None = None, give_up_s: float | None = None, every_frame: bool = False) -> None:
        cv2 = cv2_module()
        self.target, self.name = target, name
        self.api = cv2.CAP_ANY if api is None else api
        self.params = timeout_params(self.api, open_timeout_ms, read_timeout_ms) if timeouts else []
        #: who bounds a read: "opencv", "cnnedge" (OpenCV's back-end takes no read timeout) or None (no timeouts)
        self.read_timeout_by = None if not timeouts else "opencv" if self.params else "cnnedge"
        self._read_limit_s = read_timeout_ms / 1000 if self.read_timeout_by == "cnnedge" else None
        self.reconnect, self.backoff, self.max_backoff = reconnect, backoff, max_backoff
        self.every_frame = every_frame
        self.live = not every_frame
        self.period = 1.0 / fps if fps else 0.0
        self.give_up_s = give_up_s
        self.gave_up = False
        self.dropped = self.reconnects = self.frames = self.size_changes = self.stuck_reads = 0
        self.size: tuple[int, ...] | None = None
        self._timeouts_s = (open_timeout_ms + read_timeout_ms) / 1000 if timeouts else 0.0
        if timeouts:
            log.info("%s: open timeout %d ms applied by %s; read timeout %d ms applied by %s", name,
                     open_timeout_ms, "OpenCV and cnnedge" if self.params else "cnnedge", read_timeout_ms,
                     self.read_timeout_by)
        self._opener = Opener(target, self.api, self.params, name, open_timeout_ms / 1000 if timeouts else None)
        cap = self._opener.open()
        if cap is None:
            raise SourceUnavailable(f"{name}: cannot open (no such camera, unreachable address, a pipeline "
                                    "GStreamer refuses, or a format OpenCV cannot read)")
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._last_frame = time.perf_counter()  # what "down for give_up_s" counts from
        self._lost_at = 0.0
        self._delay = backoff  # the back-off before the next reopen; reset by a frame, not by an open
        self._gen = 0  # the reader thread of this generation owns the capture; older ones were given up on
        self._reading: tuple[int, float] | None = None  # (generation, when its read started)
        self._stale: list[threading.Thread] = []
        self._thread = self._start_reader(cap)
        if self._read_limit_s is not None:
            threading.Thread(target=self._watch, name=f"watch {name}", daemon=True).start()

    def _start_reader(self, cap: Any) -> threading.Thread:
        t = threading.Thread(target=self._loop, args=(cap, self._gen), name=f"capture {self.name}", daemon=True)
        t.start()
        return t

    def _loop(self, cap: Any, gen: int) -> None:
        due = time.perf_counter()
        try:
            while not self._stop.is_set() and gen == self._gen:
                ok, img = self._read(cap, gen) if cap is not None else (False, None)
                if gen != self._gen:
                    break  # given up on while blocked in the read: a newer reader has the stream now
                if not ok or img is None or img.size == 0:
                    if cap is not None:
                        cap.release()
                        cap = None
                    if not self.reconnect:
                        break
                    cap = self._reopen()
                    if cap is None:
                        break
                    continue
                if self.period:
                    if self._stop.wait(max(0.0, due - time.perf_counter())):
                        break
                    due = max(due, time.perf_counter()) + self.period  # late frames never burst
                self._publish(img, gen)
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                if gen == self._gen:
                    self._ended = True
                    self._cond.notify_all()

    def _read(self, cap: Any, gen: int) -> tuple[bool, Any]:
        self._reading = (gen, time.perf_counter())
        try:
            return cap.read()
        finally:
            if self._reading is not None and self._reading[0] == gen:
                self._reading = None

    def _watch(self) -> None:
        """A read blocked past the read timeout that OpenCV does not apply: its reader is given up on (it
        releases its capture when OpenCV returns) and the stream counts as lost from then on."""
        limit = self._read_limit_s or 0.0
        while not self._stop.wait(min(OPEN_POLL_S, limit / 4)):
            reading = self._reading
            if reading is None or reading[0] != self._gen or time.perf_counter() - reading[1] < limit:
                continue
            with self._cond:
                if self._ended:
                    return
                self._gen += 1
                self.stuck_reads += 1
                self._stale = [t for t in (*self._stale, self._thread) if t.is_alive()]
                end = not self.reconnect or len(self._stale) >= MAX_STUCK_READS
                if end:
                    self.gave_up = self._ended = True
                    self._cond.notify_all()
            log.warning("%s: a read blocked for more than %g ms (this OpenCV's back-end takes no read timeout); %s",
                        self.name, limit * 1000,
                        "ended" if not self.reconnect else
                        f"gave up: {len(self._stale)} reads still blocked in OpenCV" if end else "counted as lost")
            if end:
                return
            self._thread = self._start_reader(None)

    def _publish(self, img: np.ndarray, gen: int) -> None:
        ts, t0 = time.time(), time.perf_counter()
        if self.size is None:
            self.size = img.shape
        elif img.shape != self.size:
            self.size_changes += 1
            log.warning("%s: frame size changed from %s to %s; frames are resized to the model input",
                        self.name, "x".join(map(str, self.size)), "x".join(map(str, img.shape)))
            self.size = img.shape
        with self._cond:
            while self.every_frame and self._latest is not None and not self._stop.is_set() and gen == self._gen:
                self._cond.wait(0.1)  # the last frame is not taken yet: wait for it, drop nothing
            if gen != self._gen or self._stop.is_set():
                return
            if self._latest is not None:
                self.dropped += 1
            self._latest = Frame(self.name, ts, t0, frame=self.frames, image=img)
            self.frames += 1
            self._last_frame = t0
            self._delay = self.backoff
            self._cond.notify_all()

    def _reopen(self) -> Any:
        """Reopen with back-off until a capture opens (returned), the source is closed, or it has been without
        a frame for ``give_up_s`` (None, ``gave_up`` set). An open that gives no frame (garbage on the wire)
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
                return None
            wait = self._delay if limit is None else min(self._delay, limit - down)
            if self._stop.wait(wait):
                return None
            try:
                cap = self._opener.open(self._stop)
            except RunInterrupted:  # a stop signal: the run closes this source
                return None
            if cap is not None:
                self.reconnects += 1
                log.warning("%s: reconnected (attempt after %.2f s back-off)", self.name, wait)
                self._delay = min(self._delay * 2, self.max_backoff)
                return cap
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
            if f is not None:
                self._cond.notify_all()  # an every-frame capture waits for its frame to be taken
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
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=CLOSE_WAIT_S)
