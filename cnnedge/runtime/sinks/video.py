"""``--save-video``: annotated frames written to one video file, staged until commit."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...staging import OutputError, StagedFile, refuse_overwrite, refuse_special, sweep_files
from ...errors import UsageError
from ...imaging.files import IMAGE_SUFFIXES
from ..limits import check_fps
from ..results import Result
from .annotated import annotate
from .base import Sink


def video_codec(path: str | os.PathLike) -> str:
    """The FourCC VideoSink writes for a file name: mp4v for MP4/MOV, MJPG otherwise."""
    return "mp4v" if Path(path).suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"


def check_video_format(path: str | os.PathLike, flag: str = "--save-video") -> None:
    """Raise a one-line UsageError when OpenCV cannot write a video with this file's
    extension, found by opening a writer on a scratch file of the same suffix (no frames)."""
    import tempfile

    import cv2

    p = Path(path)
    suffix = p.suffix
    if not suffix:
        raise UsageError(f"{flag} {p}: name the container with an extension (e.g. .mp4 or .avi)")
    if suffix.lower() in IMAGE_SUFFIXES:  # OpenCV would write a numbered image sequence, not a video
        raise UsageError(f"{flag} {p}: {suffix} is an image extension; use .mp4, .avi, .mkv or .mov "
                         "(--save-dir writes annotated images)")
    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    level = logging_.getLogLevel() if logging_ is not None else None
    if level is not None:  # the probe's failure is reported below, not as OpenCV's console noise
        logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
    try:
        with tempfile.TemporaryDirectory(prefix="cnnedge-video-") as d:
            probe = Path(d) / f"probe{suffix}"
            writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*video_codec(p)), 25.0, (64, 48))
            ok = writer.isOpened()
            if ok:  # one frame, read back: a container OpenCV writes but cannot read (MJPEG in .mpg) is refused
                writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.release()
            ok = ok and video_is_whole(probe, 1)
    except cv2.error:
        ok = False
    finally:
        if level is not None:
            logging_.setLogLevel(level)
    if not ok:
        raise UsageError(f"{flag} {p}: OpenCV cannot write {suffix!r} videos; use .mp4, .avi, .mkv or .mov")


def video_is_whole(path: str | os.PathLike, frames: int) -> bool:
    """Whether the video at ``path`` opens, counts ``frames`` frames and reads its last one. OpenCV's writer
    reports no failed write: a full disk leaves a file with no index (AVI), no moov atom (MP4) or cut short."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened() or int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) != frames:
            return False
        cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        return bool(cap.read()[0])
    finally:
        cap.release()


class VideoSink(Sink):
    """``--save-video out.mp4``: annotated frames; every frame resized to the first one's size."""

    needs_images = True

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, force: bool = False) -> None:
        fps = check_fps(fps)  # OpenCV's writers fail on 0 and NaN after the run, and hang on inf
        refuse_overwrite(path, force, "--force")
        refuse_special(path)
        self.path, self.fps, self.force = Path(path), fps, force
        check_video_format(self.path)  # before any frame is classified, not at the first one
        sweep_files(self.path)  # a killed run's leftover goes now, even if no frame comes
        self._staged: StagedFile | None = None
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, r: Result) -> None:
        import cv2

        if r.error is not None or r.image is None:
            return
        img = annotate(r.image, r)
        if self._writer is None:
            self._staged = StagedFile(self.path, replace=self.force)
            self._size = (img.shape[1], img.shape[0])
            codec = video_codec(self.path)
            self._writer = cv2.VideoWriter(str(self._staged.path), cv2.VideoWriter_fourcc(*codec), self.fps,
                                           self._size)
            if not self._writer.isOpened():
                raise UsageError(f"--save-video {self.path}: OpenCV cannot write this format; use .mp4 or .avi")
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size)
        self._writer.write(img)
        self.frames += 1

    def commit(self) -> None:
        """Put the video in place once it reads back whole; otherwise keep it as partial and fail, naming it."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._staged is not None:
            staged, self._staged = self._staged, None
            if not video_is_whole(staged.path, self.frames):
                self.partial = staged.keep_partial()
                old = "the old file is left as it was" if self.path.exists() else "nothing was replaced"
                raise OutputError(f"--save-video {self.path}: the video written cannot be read back whole "
                                  f"({self.frames} frames were written; a full disk?); {old}")
            staged.commit()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._staged is not None:
            self.partial = self._staged.keep_partial()
            self._staged = None
