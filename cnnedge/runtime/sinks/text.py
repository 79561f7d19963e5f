"""Results as lines on a terminal: one per result, or one per failure (what --quiet still prints)."""
from __future__ import annotations

import os
import re
from typing import Sequence, TextIO

from ..results import Result
from .base import Sink


#: characters that would end or break a line on a terminal or for a line reader (``str.splitlines`` splits on
#: the C1 NEL and the Unicode separators too), or move to another column (tab)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_text(text: str) -> str:
    """``text`` for one line of a terminal: control characters escaped (``\\n``, ``\\t``, ``\\x1b``), so that a
    file name or a label with a newline cannot forge a result line, nor one with ESC drive the terminal."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: _NAMED.get(m.group()) or (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                                                         else f"\\u{ord(m.group()):04x}"), text)


def display_path(text: str) -> str:
    """A path for a terminal: bytes that are not UTF-8 (kept by ``os.fsdecode`` as surrogates)
    shown as ``\xff`` escapes, so that printing never fails and the name stays recognisable, and control
    characters escaped (:func:`display_text`)."""
    try:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # not a file-system name at all (a lone surrogate from elsewhere)
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return display_text(shown)


def where(r: Result) -> str:
    """A result's file, or ``source#frame`` for a frame of a video, camera or stream."""
    return r.path if r.path is not None else f"{r.source}#{r.frame}"


def failure_line(r: Result) -> str:
    return f"skipped {display_path(where(r))}: {display_path(r.error or '')}"


class ErrorSink(Sink):
    """One line on ``err`` per result that failed (a bad file, a bad video frame with its number):
    what cnn-infer --quiet still prints."""

    def __init__(self, err: TextIO) -> None:
        self.err = err

    def write(self, r: Result) -> None:
        if r.error is not None:
            print(failure_line(r), file=self.err)


class LineSink(Sink):
    """One human-readable line per result on stdout, flushed a batch at a time (a reader in a pipe sees each
    batch as it comes, and one that went away is found now); failures on stderr."""

    def __init__(self, out: TextIO, err: TextIO, topk: int = 1) -> None:
        self.out, self.err, self.topk = out, err, topk

    def write(self, r: Result) -> None:
        self.write_batch([r])

    def write_batch(self, results: Sequence[Result]) -> None:
        lines = []
        for r in results:
            if r.error is not None:
                print(failure_line(r), file=self.err)
                continue
            p = r.prediction
            assert p is not None
            extra = ""
            if self.topk > 1:
                extra = "  [" + ", ".join(f"{display_text(lab)} {s:.3f}" for lab, s in p.topk[:self.topk]) + "]"
            lines.append(f"{display_path(where(r))}\t{display_text(p.label)}\t{p.score:.4f}\t{r.latency_ms:.1f} ms"
                         f"{extra}\n")
        if lines:
            self.out.write("".join(lines))
            self.out.flush()
