"""Moved to :mod:`cnnedge.imaging`: this name stays for code that still imports it from here.

Reads are :mod:`cnnedge.imaging.files`, header walks :mod:`cnnedge.imaging.headers`, the decode
:mod:`cnnedge.imaging.decode`. Importing it sets no process state (see :mod:`cnnedge.imaging.opencv`).
"""
from __future__ import annotations

from ..imaging.decode import decode_image, read_image, reduce_factor
from ..imaging.errors import ImageError
from ..imaging.files import (BROKEN_LINK, IMAGE_SUFFIXES, LINK_LOOP, MAX_FILE_BYTES, NOT_REGULAR, is_image_file,
                             read_file, require_regular, stat_path)
from ..imaging.headers import image_size, jpeg_header
from ..imaging.opencv import MAX_PIXELS

__all__ = ["BROKEN_LINK", "IMAGE_SUFFIXES", "LINK_LOOP", "MAX_FILE_BYTES", "MAX_PIXELS", "NOT_REGULAR", "ImageError",
           "decode_image", "image_size", "is_image_file", "jpeg_header", "read_file", "read_image", "reduce_factor",
           "require_regular", "stat_path"]
