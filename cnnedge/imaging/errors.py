"""The one error for an image file that cannot be used, raised by the reads and the decode alike."""
from __future__ import annotations

import os

from ..errors import DataError


class ImageError(DataError):
    """One image file that cannot be used; a folder run reports it and goes on.

    ``kind`` is set when the path is refused before any read: one of :mod:`cnnedge.imaging.files`'
    NOT_REGULAR, BROKEN_LINK or LINK_LOOP.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, kind: str | None = None):
        self.path = None if path is None else str(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{path}: {reason}" if path is not None else reason)
