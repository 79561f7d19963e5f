"""Decoding images from strangers: OpenCV under a pixel limit, with truncation caught first.

OpenCV returns None for garbage, a half-grey image for a truncated JPEG and
raises for a pixel bomb; each becomes an :class:`ImageError` that a folder run
reports and skips. A JPEG far larger than the model needs decodes at 1/2 to 1/8
size (libjpeg's own reduction), much faster.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ImageError
from .files import read_file
from .headers import JPEG_SOI, PNG_SIGNATURE, jpeg_header, png_size, png_truncated
from .opencv import MAX_PIXELS, opencv

_REDUCED = {1: None, 2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def _factor(size: tuple[int, int], height: int, width: int) -> int:
    """The largest reduction (1, 2, 4 or 8) that keeps a ``size`` (width, height) image at least
    ``height`` x ``width``."""
    w, h = size
    for r in (8, 4, 2):
        if w // r >= width and h // r >= height:
            return r
    return 1


def reduce_factor(data: bytes, height: int, width: int,
                  need: Callable[[int, int], tuple[int, int]] | None = None) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that keeps the image at least
    ``height`` x ``width`` (or ``need(h, w)`` for a file of ``h`` x ``w``: the size the resize
    mode scales to, which a crop makes larger than the input): a photo at least 2x that
    decodes at 1/2 to 1/8 size, much faster, before the final resize. Other formats
    decode at full size."""
    size = jpeg_header(data)[0] if data.startswith(JPEG_SOI) else None
    if size is None:
        return 1
    return _factor(size, *need(size[1], size[0])) if need is not None else _factor(size, height, width)


def decode_image(data: bytes, path: str | os.PathLike | None = None, reduce: int = 1,
                 need: Callable[[int, int], tuple[int, int]] | None = None, rgb: bool = False) -> np.ndarray:
    """Decode bytes to a BGR uint8 HxWx3 array (OpenCV's order), or RGB with ``rgb``; or raise ImageError.

    ``reduce`` (1, 2, 4 or 8) asks libjpeg to decode at 1/reduce size, which is much
    cheaper when the model input is far smaller than the photo. With ``need`` (file
    ``h, w`` -> the smallest ``h, w`` wanted) the factor is chosen as :func:`reduce_factor`
    does, from the same walk of the headers that checks the file.
    """
    cv2 = opencv()
    if not data:
        raise ImageError(path, "empty file")
    size = None
    jpeg = data.startswith(JPEG_SOI)
    if jpeg:
        size, cut = jpeg_header(data)
    elif data.startswith(PNG_SIGNATURE):
        size, cut = png_size(data), png_truncated(data)
    else:
        cut = False
    if cut:
        raise ImageError(path, "truncated image (no end marker); OpenCV would half-decode it")
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(path, f"{size[0]}x{size[1]} pixels is over the {MAX_PIXELS}-pixel decode limit "
                               "(a decompression bomb?)")
    if need is not None:
        reduce = _factor(size, *need(size[1], size[0])) if jpeg and size is not None else 1
    elif reduce not in _REDUCED:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    flag = (_FLAGS or _flags(cv2))[reduce, rgb]
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decode failed"
        raise ImageError(path, f"cannot decode ({'too many pixels' if 'pixels' in msg.lower() else msg})") from None
    if img is None:
        raise ImageError(path, "not a readable image")
    if rgb and _SWAP_RGB:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


_FLAGS: dict[tuple[int, bool], int] = {}  # imdecode's flag for (reduction, rgb), filled on first use
_SWAP_RGB = False  # an OpenCV without IMREAD_COLOR_RGB (before 4.10): decode BGR, then swap


def _flags(cv2: Any) -> dict[tuple[int, bool], int]:
    """imdecode's flag for each (reduction, rgb): the IMREAD_REDUCED_COLOR_n flags with their colour
    bit swapped for IMREAD_COLOR_RGB where this OpenCV has it."""
    global _SWAP_RGB
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)
    _SWAP_RGB = rgb is None
    flags = {}
    for r, name in _REDUCED.items():
        bgr = cv2.IMREAD_COLOR if name is None else getattr(cv2, name)
        flags[r, False] = bgr
        flags[r, True] = bgr if rgb is None else (bgr & ~cv2.IMREAD_COLOR) | rgb
    _FLAGS.update(flags)  # whole, in one step: another thread may be reading it
    return _FLAGS


def read_image(path: str | os.PathLike, reduce: int = 1) -> np.ndarray:
    """Read and decode one image file with the size and damage checks of decode_image."""
    return decode_image(read_file(path), Path(path), reduce)
