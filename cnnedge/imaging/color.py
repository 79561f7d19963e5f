"""Colour order: an OpenCV image (gray, BGR or BGRA) to the order the model card names."""
from __future__ import annotations

import numpy as np

from .opencv import opencv


def to_color(img: np.ndarray, color: str) -> np.ndarray:
    """Convert an OpenCV image (gray, BGR or BGRA) to the card's colour order."""
    cv2 = opencv()
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        if color == "GRAY":
            return img
        code = cv2.COLOR_GRAY2RGB if color == "RGB" else cv2.COLOR_GRAY2BGR
        return cv2.cvtColor(img, code)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}")
    if img.shape[2] == 4:
        code = {"RGB": cv2.COLOR_BGRA2RGB, "BGR": cv2.COLOR_BGRA2BGR, "GRAY": cv2.COLOR_BGRA2GRAY}[color]
        return cv2.cvtColor(img, code)
    if color == "BGR":
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB if color == "RGB" else cv2.COLOR_BGR2GRAY)
