"""``--show``: annotated frames in a window, for an OpenCV built with GUI support."""
from __future__ import annotations

import re

from ...errors import UsageError
from ..results import Result
from .annotated import annotate
from .base import Sink


def has_gui() -> bool:
    import cv2

    m = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    return bool(m and m.group(1).upper() != "NONE")


class ShowSink(Sink):
    """``--show``: a window with the annotated frame (needs OpenCV with GUI support)."""

    needs_images = True

    def __init__(self) -> None:
        if not has_gui():
            raise UsageError("--show needs OpenCV with GUI support, and this one has none (opencv-python-headless); "
                             "install opencv-python instead (not both), or use --save-dir / --save-video")

    def write(self, r: Result) -> None:
        import cv2

        if r.error is not None or r.image is None:
            return
        cv2.imshow("cnn-infer", annotate(r.image, r))
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.stopped = True

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()
