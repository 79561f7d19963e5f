"""Where an export's temporary files go: inside its staging folder, not the system's temporary folder.

The steps write models to disk to open them as cnn-infer does, to read ONNX Runtime's optimized graph and to
hand pixels to the emulated CPU. In ``/tmp`` such a folder outlives a kill -9 and is nobody's to remove; inside
the staging folder it goes with the staging folder: removed when the export ends, however it ends, and by
the next export into that folder when the exporting process was killed (see :mod:`cnnedge.staging`).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

_ROOT: ContextVar[Path | None] = ContextVar("cnnedge_export_scratch", default=None)


@contextlib.contextmanager
def inside(folder: str | os.PathLike) -> Iterator[None]:
    """Within this block, :func:`folder` makes its folders in ``folder`` (the export's staging folder)."""
    token = _ROOT.set(Path(folder))
    try:
        yield
    finally:
        _ROOT.reset(token)


@contextlib.contextmanager
def folder(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed on leaving the block: in the running export's staging folder, or the
    system's temporary folder outside an export (a step called on its own)."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=_ROOT.get()) as tmp:
        yield Path(tmp)
