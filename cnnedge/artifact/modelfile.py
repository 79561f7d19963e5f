"""The one check that a path given as a model is a file that can be read: before any library opens it.

A FIFO would block the load for ever and a device would never end, and a folder or a missing path gets a
library's own message (or a traceback) instead of one that says what to give; the runtime, the export, the
trainer's resume and the benchmarks ask here first.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError


def require_model_file(path: str | os.PathLike, *, folder_hint: str | None = None, folders: bool = False) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a regular file (or a link to one), else a UsageError
    naming it. ``folder_hint``: what the folder error suggests giving instead (default: the model suffixes).
    ``folders``: a folder is taken too (a run folder of model files) and returned as it is."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file{' or folder' if folders else ''}")
    if not p.is_file() and not p.is_dir():  # a FIFO would block the load for ever, a device never end
        raise UsageError(f"{p}: not a regular file (a FIFO, device or socket); give "
                         f"{'a model file or run folder' if folders else 'the model file'}")
    if p.is_dir() and not folders:
        if folder_hint is None:
            from .kinds import describe_suffixes

            folder_hint = describe_suffixes()
        raise UsageError(f"{p}: is a folder; give the model file ({folder_hint})")
    return p
