"""The one preprocessing path: training, calibration, parity checks and the runtime all turn an image
(or an image file's bytes) into a model input through these functions, driven by the model card
(see :mod:`cnnedge.artifact.card` for the contract).
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from ..artifact.card import InputSpec, Preprocess
from .color import to_color
from .decode import decode_image
from .normalize import to_model_input
from .resize import decode_need, resize


def decode_for(data: bytes, path: str | os.PathLike | None, spec: InputSpec, pre: Preprocess,
               reduce: bool = True, rgb: bool = False) -> np.ndarray:
    """Decode image bytes for this model: a JPEG at the smallest reduced size (1/2..1/8) that the
    resize mode still needs (:func:`decode_need`), or at full size when ``reduce`` is off. The one
    decode of the Classifier and of the pipeline's worker processes, so both give the same pixels.
    BGR, or RGB with ``rgb``."""
    if not reduce:
        return decode_image(data, path, rgb=rgb)
    return decode_image(data, path, need=functools.partial(_need, spec.height, spec.width, pre), rgb=rgb)


@functools.lru_cache(maxsize=4096)
def _need(height: int, width: int, pre: Preprocess, h: int, w: int) -> tuple[int, int]:
    return decode_need(h, w, height, width, pre)


def decode_pixels(data: bytes, path: str | os.PathLike | None, spec: InputSpec, pre: Preprocess,
                  reduce: bool = True) -> np.ndarray:
    """Image bytes -> the model's HxWxC uint8 pixels: :func:`decode_for` then :func:`prepare_image`, the
    same pixels, with an RGB model's image decoded in RGB (libjpeg's own order) so no channel swap
    follows. The pipeline's path for files: every OpenCV call lets another thread take the GIL."""
    rgb = spec.color == "RGB"
    img = decode_for(data, path, spec, pre, reduce, rgb=rgb)
    return prepare_image(img, spec, pre, "RGB" if rgb else "BGR")


def prepare_image(img: np.ndarray, spec: InputSpec, pre: Preprocess, order: str = "BGR") -> np.ndarray:
    """One BGR/gray/BGRA uint8 image -> HxWxC uint8 in the card's colour and size. ``order``: "RGB" for
    3-channel image already in RGB order (:func:`decode_pixels`; never for a GRAY model)."""
    if spec.color == "GRAY":  # fewer bytes to resize after the conversion
        out = resize(to_color(img, "GRAY"), spec.height, spec.width, pre)
    else:
        # Resizing works per channel, so a channel swap (BGR->RGB, gray->RGB, dropping alpha) commutes with it
        # exactly: converting the small image instead of the full frame saves a full-size copy.
        out = resize(img, spec.height, spec.width, pre)
        if not (order == spec.color and out.ndim == 3 and out.shape[2] == 3):
            out = to_color(out, spec.color)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def preprocess_batch(images: Sequence[np.ndarray], spec: InputSpec, pre: Preprocess) -> np.ndarray:
    """OpenCV images (BGR uint8 as decoded) -> one model-input batch."""
    pixels = np.stack([prepare_image(im, spec, pre) for im in images])
    return to_model_input(pixels, spec, pre)
