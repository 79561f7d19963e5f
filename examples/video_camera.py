"""A video file that behaves like a camera: frames arrive at the file's frame rate, newest only.

Shows: what the other examples use when no camera is present. A camera delivers
frames in real time and a robot wants only the newest one; a video file read
with OpenCV delivers frames as fast as it can decode them. ``VideoCamera``
reads the file in its own thread at its own frame rate (``--fps`` overrides it),
keeps only the newest frame (each overwritten one is counted in ``dropped``),
and has the interface of cnnedge's live sources: ``get(timeout)`` for the
newest frame, iteration for the pipeline (``Classifier.stream``), ``close()``.

Run (prints how many frames a slow reader would see):
    python examples/video_camera.py clip.avi --seconds 3
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import cv2

from cnnedge.runtime.sources import Frame, Source, SourceError


class VideoCamera(Source):
    """Replay a video file in real time as a live source (newest frame only)."""

    live = True

    def __init__(self, path: str | Path, fps: float | None = None, name: str | None = None) -> None:
        self.name = name or str(path)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise SourceError(f"{path}: cannot open as a video")
        rate = fps or self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        self.period = 1.0 / rate
        self.frames = self.dropped = 0
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"replay {self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        due = time.perf_counter()
        try:
            while not self._stop.is_set():
                ok, img = self._cap.read()
                if not ok or img is None:
                    break
                delay = due - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):  # deliver at the file's pace
                    break
                due += self.period
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = Frame(self.name, time.time(), time.perf_counter(), frame=self.frames, image=img)
                    self.frames += 1
                    self._cond.notify_all()
        finally:
            self._cap.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None on timeout; StopIteration once the file has ended."""
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
            self._thread.join(timeout=2.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Replay a video as a live camera and count what a 5 Hz reader sees.")
    p.add_argument("video", help="a video file, e.g. clip.avi")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to read (e.g. --seconds 5)")
    args = p.parse_args(argv)
    cam = VideoCamera(args.video)
    seen, end = 0, time.perf_counter() + args.seconds
    try:
        while time.perf_counter() < end:
            time.sleep(0.2)
            try:
                f = cam.get(0)
            except StopIteration:
                break
            seen += f is not None
    finally:
        cam.close()
    print(f"{cam.frames} frames delivered, {seen} taken, {cam.dropped} dropped (newest-frame-only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
