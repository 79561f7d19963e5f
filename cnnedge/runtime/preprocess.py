"""Moved to :mod:`cnnedge.imaging`: this name stays for code that still imports it from here.

Colour is :mod:`cnnedge.imaging.color`, the resize modes :mod:`cnnedge.imaging.resize`, image to
pixels :mod:`cnnedge.imaging.prepare`, scale/mean/std and layout :mod:`cnnedge.imaging.normalize`.
"""
from __future__ import annotations

from ..imaging.color import to_color
from ..imaging.normalize import normalize, to_model_input
from ..imaging.prepare import decode_for, decode_pixels, prepare_image, preprocess_batch
from ..imaging.resize import decode_need, fit, interpolation_flag, resize, scaled_size

__all__ = ["decode_for", "decode_need", "decode_pixels", "fit", "interpolation_flag", "normalize", "prepare_image",
           "preprocess_batch", "resize", "scaled_size", "to_color", "to_model_input"]
