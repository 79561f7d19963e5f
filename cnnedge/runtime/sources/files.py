"""Sources that read files in order: image files (decoded later, in the pool) and every frame of a video."""
from __future__ import annotations

import os
import time
from typing import Sequence

from .capture import OPEN_TIMEOUT_MS, READ_TIMEOUT_MS, cv2_module, open_capture
from .frames import Frame, Skipped, Source, SourceError


class FileSource(Source):
    """Image files, each yielded once in the given order (decoding happens in the pool);
    :class:`Skipped` entries are yielded in their place as Frames with ``skip`` set."""

    def __init__(self, paths: Sequence[str | os.PathLike | Skipped], name: str) -> None:
        self._entries = [p if isinstance(p, Skipped) else str(p) for p in paths]
        self.paths = [p for p in self._entries if isinstance(p, str)]
        self.skips = [p for p in self._entries if isinstance(p, Skipped)]
        self.name = name
        self.total = len(self._entries)
        self._i = 0

    @property
    def skipped(self) -> int:
        return len(self.skips)

    def __next__(self) -> Frame:
        if self._i >= len(self._entries):
            raise StopIteration
        e = self._entries[self._i]
        self._i += 1
        if isinstance(e, Skipped):
            return Frame(self.name, time.time(), time.perf_counter(), path=e.path, skip=e)
        return Frame(self.name, time.time(), time.perf_counter(), path=e)


class VideoFileSource(Source):
    """Every frame of a video file, in order (not live: nothing is dropped)."""

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        cv2 = cv2_module()
        self.name = name or str(path)
        self.cap = open_capture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
        if self.cap is None:
            raise SourceError(f"{path}: cannot open as a video (not a video file, or a codec OpenCV lacks)")
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = n if n > 0 else None
        self._i = 0

    def __next__(self) -> Frame:
        if self.cap is None:
            raise StopIteration
        ok, img = self.cap.read()
        if not ok or img is None:
            self.close()
            raise StopIteration
        f = Frame(self.name, time.time(), time.perf_counter(), frame=self._i, image=img)
        self._i += 1
        return f

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
