"""The one preprocessing path: training, calibration, parity checks and the runtime
all turn a BGR uint8 image into a model input through these functions, driven by
the model card (see :mod:`cnnedge.card` for the contract).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..card import InputSpec, Preprocess


def to_color(img: np.ndarray, color: str) -> np.ndarray:
    """Convert an OpenCV image (gray, BGR or BGRA) to the card's colour order."""
    import cv2

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


def resize(img: np.ndarray, height: int, width: int, mode: str = "stretch") -> np.ndarray:
    """Resize to height x width: ``stretch`` (the tutorials), ``center-crop`` (keep
    aspect, crop the long side) or ``letterbox`` (keep aspect, pad with black)."""
    import cv2

    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    if mode == "stretch":
        interp = cv2.INTER_AREA if h > height and w > width else cv2.INTER_LINEAR
        return cv2.resize(img, (width, height), interpolation=interp)
    if mode == "center-crop":
        s = max(height / h, width / w)
    elif mode == "letterbox":
        s = min(height / h, width / w)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(img, (nw, nh), interpolation=interp)
    if mode == "center-crop":
        y, x = (nh - height) // 2, (nw - width) // 2
        return scaled[y:y + height, x:x + width]
    out = np.zeros((height, width) + img.shape[2:], dtype=img.dtype)
    y, x = (height - nh) // 2, (width - nw) // 2
    out[y:y + nh, x:x + nw] = scaled
    return out


def prepare_image(img: np.ndarray, spec: InputSpec, pre: Preprocess) -> np.ndarray:
    """One BGR/gray/BGRA uint8 image -> HxWxC uint8 in the card's colour and size."""
    if spec.color == "GRAY":  # fewer bytes to resize after the conversion
        out = resize(to_color(img, spec.color), spec.height, spec.width, pre.resize)
    else:
        # Resizing works per channel, so a channel swap (BGR->RGB, gray->RGB, dropping alpha) commutes with it
        # exactly: converting the small image instead of the full frame saves a full-size copy.
        out = to_color(resize(img, spec.height, spec.width, pre.resize), spec.color)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def normalize(batch: np.ndarray, pre: Preprocess, dtype: str = "float32") -> np.ndarray:
    """``(x * scale - mean) / std`` per channel on an NHWC batch."""
    x = batch.astype(np.float32) * np.float32(pre.scale)
    x -= np.asarray(pre.mean, np.float32)
    x /= np.asarray(pre.std, np.float32)
    return x.astype(dtype, copy=False)


def to_model_input(pixels: np.ndarray, spec: InputSpec, pre: Preprocess) -> np.ndarray:
    """An NHWC uint8 batch of prepared images -> the tensor the artifact takes."""
    if pre.in_graph:
        x = pixels if spec.dtype == "uint8" else pixels.astype(spec.dtype)
    else:
        x = normalize(pixels, pre, "float32" if spec.dtype == "uint8" else spec.dtype)
    if spec.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def preprocess_batch(images: Sequence[np.ndarray], spec: InputSpec, pre: Preprocess) -> np.ndarray:
    """OpenCV images (BGR uint8 as decoded) -> one model-input batch."""
    pixels = np.stack([prepare_image(im, spec, pre) for im in images])
    return to_model_input(pixels, spec, pre)
