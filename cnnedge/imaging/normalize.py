"""The host's share of the arithmetic: scale, mean and std, and the artifact's dtype and layout.

A model that normalises in its graph takes the uint8 pixels as they are.
"""
from __future__ import annotations

import numpy as np

from ..artifact.card import InputSpec, Preprocess


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
