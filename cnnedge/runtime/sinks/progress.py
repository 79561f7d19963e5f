"""A progress bar on stderr for runs with a known total."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ..results import Result
from .base import Sink


class Progress(Sink):
    """A progress bar on stderr for runs with a known total (redrawn at most 10 times a second)."""

    def __init__(self, total: int, err: TextIO = sys.stderr) -> None:
        self.total, self.err = total, err
        self.n = self.failed = 0
        self._last = 0.0
        self._t0 = time.perf_counter()

    def write(self, r: Result) -> None:
        self.n += 1
        self.failed += r.error is not None
        now = time.perf_counter()
        if now - self._last >= 0.1 or self.n == self.total:
            self._last = now
            frac = self.n / self.total if self.total else 1.0
            bar = "#" * int(frac * 30)
            rate = self.n / max(now - self._t0, 1e-9)
            self.err.write(f"\r[{bar:<30}] {self.n}/{self.total} {rate:.0f} img/s"
                           + (f" {self.failed} failed" if self.failed else ""))
            self.err.flush()

    def close(self) -> None:
        if self.n:
            self.err.write("\n")
            self.err.flush()
