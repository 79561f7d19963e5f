"""Results as lines on a terminal: one per result, or one per failure (what --quiet still prints)."""
from __future__ import annotations

import os
from typing import TextIO

from ..results import Result
from .base import Sink


def display_path(text: str) -> str:
    """A path for a terminal: bytes that are not UTF-8 (kept by ``os.fsdecode`` as surrogates)
    shown as ``\xff`` escapes, so that printing never fails and the name stays recognisable."""
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # not a file-system name at all (a lone surrogate from elsewhere)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def where(r: Result) -> str:
    """A result's file, or ``source#frame`` for a frame of a video, camera or stream."""
    return r.path if r.path is not None else f"{r.source}#{r.frame}"


def failure_line(r: Result) -> str:
    return f"skipped {display_path(where(r))}: {r.error}"


class ErrorSink(Sink):
    """One line on ``err`` per result that failed (a bad file, a bad video frame with its number):
    what cnn-infer --quiet still prints."""

    def __init__(self, err: TextIO) -> None:
        self.err = err

    def write(self, r: Result) -> None:
        if r.error is not None:
            print(failure_line(r), file=self.err)


class LineSink(Sink):
    """One human-readable line per result on stdout; failures on stderr."""

    def __init__(self, out: TextIO, err: TextIO, topk: int = 1) -> None:
        self.out, self.err, self.topk = out, err, topk

    def write(self, r: Result) -> None:
        if r.error is not None:
            print(failure_line(r), file=self.err)
            return
        p = r.prediction
        assert p is not None
        extra = ""
        if self.topk > 1:
            extra = "  [" + ", ".join(f"{lab} {s:.3f}" for lab, s in p.topk[:self.topk]) + "]"
        print(f"{display_path(where(r))}\t{p.label}\t{p.score:.4f}\t{r.latency_ms:.1f} ms{extra}", file=self.out)
