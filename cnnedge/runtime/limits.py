"""Bounds on the numbers a caller may ask for: threads and decode workers (by this machine's cores), camera
indices, stream timeouts, seconds, video frame rates and benchmark seeds.

One place for each bound, so that a CLI's ``--help`` and its error, and the library's check, name the same
one. Light to import (no numpy): the CLIs read these while they build their parsers.
"""
from __future__ import annotations

import math
import os
from typing import Any

from ..errors import UsageError, arg_name

#: threads or decode workers per core of this machine: a run may ask this many times the cores, no more
#: (``--threads 20000`` would start 20,000 threads; ``--workers 10000`` as many processes)
THREADS_PER_CORE = 4
#: camera indices: V4L2 numbers its devices /dev/video0 .. /dev/video255
MAX_CAMERA_INDEX = 255
#: stream open and read timeouts, in milliseconds: one day (OpenCV takes them as 32-bit integers)
MAX_TIMEOUT_MS = 86_400_000
#: seconds (a duration, a timeout): finite, and below what a thread's wait accepts
MAX_SECONDS = 1e9
#: frame rates OpenCV's writers honour (its AVI writer clamps above 600; 0, NaN and inf fail or hang it)
MIN_FPS, MAX_FPS = 0.01, 600.0
#: seeds of cnn-bench's fixed random inputs
MAX_SEED = 2**32 - 1


def machine_cores() -> int:
    return os.cpu_count() or 1


def max_threads() -> int:
    """The most intra-op threads or decode workers one run may ask for: :data:`THREADS_PER_CORE` per core."""
    return THREADS_PER_CORE * machine_cores()


def threads_bound() -> str:
    """How ``--help`` and errors name the bound: ``1..8 (4 per core, 2 cores here)``."""
    return f"1..{max_threads()} ({THREADS_PER_CORE} per core, {machine_cores()} cores here)"


def check_threads(value: Any, name: str) -> int | None:
    """``value`` (threads or workers) when it is None or a whole number within :func:`threads_bound`, else an
    UsageError naming argument ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_threads():
        raise UsageError(f"{arg_name(name)} must be a whole number in {threads_bound()}, got {value!r}")
    return value


def check_seconds(value: Any, name: str) -> float | None:
    """``value`` when it is None or a number of seconds in (0, :data:`MAX_SECONDS`), else a UsageError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < MAX_SECONDS:
        raise UsageError(f"{arg_name(name)} must be a number of seconds > 0 and < {MAX_SECONDS:g}, got {value!r}")
    return float(value)


def check_fps(value: Any, name: str = "fps") -> float:
    """A frame rate from :data:`MIN_FPS` to :data:`MAX_FPS`, else a UsageError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not MIN_FPS <= value <= MAX_FPS:
        raise UsageError(f"{arg_name(name)} must be a frame rate from {MIN_FPS:g} to {MAX_FPS:g}, got {value!r}")
    return float(value)
