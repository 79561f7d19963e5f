"""What a source yields: a Frame (a file to decode or a captured image), a Skipped entry in its place,
the Source base every source is built on, and the error a source that cannot open raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ...errors import DataError, ExitCode
from ...imaging.files import BROKEN_LINK, LINK_LOOP, NOT_REGULAR

HIDDEN = "hidden"
NOT_IMAGE = "not an image"
UNREADABLE = "unreadable folder"
SKIP_KINDS = (NOT_IMAGE, HIDDEN, NOT_REGULAR, BROKEN_LINK, LINK_LOOP, UNREADABLE)


class SourceError(DataError):
    """A source that cannot be opened (missing camera, unreachable URL, unknown path)."""


class SourceUnavailable(SourceError):
    """A camera, stream or pipeline that does not open now (unplugged, unreachable, a pipeline GStreamer refuses):
    a failure (exit 1) that a retry or a supervisor may get past, not a mistake in the command (exit 2)."""

    exit_code = ExitCode.FAILURE


@dataclass(frozen=True)
class Skipped:
    """A path a file source does not read: ``kind`` (one of SKIP_KINDS, what a summary counts)
    and ``reason`` (the line a report shows)."""

    path: str
    kind: str
    reason: str


@dataclass
class Frame:
    """One unit of work: a file to decode, or a captured frame."""

    source: str
    timestamp: float  # wall clock at capture / file read
    t0: float  # perf_counter at capture / file read, for latency
    frame: int | None = None
    path: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    skip: Skipped | None = None  # a path that is reported, not read


class Source:
    """Base: an iterator of Frames with ``name``, ``live``, ``total`` (None if unknown),
    ``dropped`` and ``reconnects`` counters, ``gave_up`` and ``close()``; a context manager that
    closes it (closing twice is harmless)."""

    live = False
    name = ""
    total: int | None = None
    dropped = 0
    reconnects = 0
    gave_up = False  # a live source that stayed down past its give_up_s

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
