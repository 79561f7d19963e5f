"""Annotated images: a frame with its label and score drawn on it, and ``--save-dir``, which writes them."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ...staging import staged_path
from ...errors import UsageError
from ..results import Result
from .base import Sink


def annotate(img: np.ndarray, r: Result) -> np.ndarray:
    """A copy of ``img`` (BGR) with the label and score drawn on it."""
    import cv2

    from ...imaging.color import to_color

    out = to_color(img, "BGR").copy()
    p = r.prediction
    text = f"{p.label} {p.score:.2f}" if p is not None else "?"
    h, w = out.shape[:2]
    scale = max(0.35, min(w, h) / 400)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), thick, cv2.LINE_AA)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "source"


class SaveDirSink(Sink):
    """``--save-dir DIR``: annotated images, ``NNNNNN_<name>.jpg`` in arrival order. A file already there is
    replaced only with ``force``; otherwise the image takes the next free ``NNNNNN_<name>-2.jpg``..."""

    needs_images = True

    def __init__(self, folder: str | os.PathLike, force: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.force = force
        self.n = 0

    def write(self, r: Result) -> None:
        import cv2

        if r.error is not None or r.image is None:
            return
        stem = Path(r.path).stem if r.path else f"{_safe(r.source)}_{r.frame:06d}"
        name = f"{self.n:06d}_{_safe(stem)}"
        target = self.folder / f"{name}.jpg"
        k = 2
        while not self.force and os.path.lexists(target):
            target = self.folder / f"{name}-{k}.jpg"
            k += 1
        self.n += 1
        with staged_path(target) as tmp:
            if not cv2.imwrite(str(tmp), annotate(r.image, r)):
                raise UsageError(f"--save-dir: cannot write {target}")
