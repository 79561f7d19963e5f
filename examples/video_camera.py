"""A video file that behaves like a camera: frames arrive at the file's frame rate, newest only.

Shows: what the other examples use when no camera is present. A camera delivers
frames in real time and a robot wants only the newest one; a video file read
with OpenCV delivers frames as fast as it can decode them. ``VideoCamera``
is cnnedge's own live source (``cnnedge.runtime.sources.LiveSource``) paced at
the file's frame rate (``fps`` overrides it): it keeps only the newest frame
(each overwritten one is counted in ``dropped``), ``get(timeout)`` gives the
newest frame, iteration feeds the pipeline (``Classifier.stream``), ``close()``.

Run (prints how many frames a slow reader would see):
    python examples/video_camera.py clip.avi --seconds 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

from cnnedge.runtime.sources import LiveSource, SourceError


def VideoCamera(path: str | Path, fps: float | None = None, name: str | None = None) -> LiveSource:
    """Replay a video file in real time as a live source (newest frame only): the
    runtime's LiveSource, paced at the file's frame rate, ending with the file."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: cannot open as a video")
    rate = fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    return LiveSource(str(path), name or str(path), cv2.CAP_ANY, timeouts=False, reconnect=False, fps=rate)


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
