"""The one preprocessing path: training, calibration, parity checks and the runtime
all turn a BGR uint8 image into a model input through these functions, driven by
the model card (see :mod:`cnnedge.card` for the contract).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Sequence

import numpy as np

from ..card import RESIZE_MODES, InputSpec, Preprocess
from ..errors import UsageError


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


_INTERP = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "cubic": "INTER_CUBIC", "lanczos": "INTER_LANCZOS4"}


def scaled_size(h: int, w: int, height: int, width: int, pre: Preprocess) -> tuple[int, int]:
    """The size an ``h`` x ``w`` image is resized to before the crop or pad to ``height`` x ``width``.

    - ``stretch``: both sides to ``input / crop_pct`` (then a centre crop when crop_pct < 1);
    - ``center-crop``: keep aspect, cover ``input / crop_pct``; then a centre crop;
    - ``shorter``: the shorter side to ``min(input) / crop_pct``, the longer in proportion
      (torchvision's ``Resize(int)``); then a centre crop (the ImageNet convention);
    - ``letterbox``: keep aspect, fit inside; centred on ``pad_value``;
    - ``pad``: keep aspect, fit inside; top-left on ``pad_value`` (OCR text lines, documents).
    """
    mode, c = pre.resize, pre.crop_pct
    th, tw = math.floor(height / c), math.floor(width / c)
    if mode == "stretch":
        return th, tw
    if mode == "shorter":
        short = min(th, tw)
        if h <= w:
            return short, max(1, int(short * w / h))
        return max(1, int(short * h / w)), short
    if mode == "center-crop":
        s = max(th / h, tw / w)
        return max(th, round(h * s)), max(tw, round(w * s))
    if mode in ("letterbox", "pad"):
        s = min(height / h, width / w)
        return max(1, min(height, round(h * s))), max(1, min(width, round(w * s)))
    raise UsageError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")


def interpolation_flag(pre: Preprocess, src: tuple[int, int], dst: tuple[int, int]) -> int:
    """OpenCV's flag for ``pre.interpolation``; ``auto`` is area when shrinking both sides, else linear."""
    import cv2

    if pre.interpolation == "auto":
        return cv2.INTER_AREA if src[0] > dst[0] and src[1] > dst[1] else cv2.INTER_LINEAR
    return getattr(cv2, _INTERP[pre.interpolation])


def fit(img: np.ndarray, height: int, width: int, top_left: bool = False, pad_value: float = 0.0) -> np.ndarray:
    """Crop the sides longer than ``height`` x ``width`` and pad the shorter ones with ``pad_value``:
    centred (the extra or missing pixels split as ``d // 2`` before, the rest after, as
    torchvision's CenterCrop), or at the top-left corner."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    (sy, dy, ch), (sx, dx, cw) = (_axis(h, height, top_left), _axis(w, width, top_left))
    if h >= height and w >= width:
        return img[sy:sy + ch, sx:sx + cw]
    out = np.full((height, width) + img.shape[2:], round(pad_value), dtype=img.dtype)
    out[dy:dy + ch, dx:dx + cw] = img[sy:sy + ch, sx:sx + cw]
    return out


def _axis(size: int, target: int, start: bool) -> tuple[int, int, int]:
    """(first source pixel kept, where it lands, how many) along one axis."""
    if size >= target:
        return (0 if start else (size - target) // 2), 0, target
    return 0, (0 if start else (target - size) // 2), size


def resize(img: np.ndarray, height: int, width: int, pre: Preprocess | str = "stretch") -> np.ndarray:
    """Resize to ``height`` x ``width`` by the card's mode (see :func:`scaled_size`): scale with
    the card's interpolation, then crop or pad. A mode name alone means its defaults."""
    import cv2

    if isinstance(pre, str):
        pre = Preprocess(resize=pre)
    h, w = img.shape[:2]
    if h == height and w == width and pre.crop_pct == 1:
        return img
    nh, nw, interp = _scale_plan(h, w, height, width, pre)
    scaled = img if nh == h and nw == w else cv2.resize(img, (nw, nh), interpolation=interp)
    if scaled.ndim == 2 and img.ndim == 3:
        scaled = scaled[:, :, None]
    if nh == height and nw == width:
        return scaled
    return fit(scaled, height, width, pre.resize == "pad", pre.pad_value)


@functools.lru_cache(maxsize=4096)
def _scale_plan(h: int, w: int, height: int, width: int, pre: Preprocess) -> tuple[int, int, int]:
    """(scaled height, scaled width, OpenCV interpolation flag) for an ``h`` x ``w`` image: worked out
    once per image size, since a folder run asks the same for every file."""
    nh, nw = scaled_size(h, w, height, width, pre)
    return nh, nw, interpolation_flag(pre, (h, w), (nh, nw))


def decode_need(h: int, w: int, height: int, width: int, pre: Preprocess) -> tuple[int, int]:
    """The smallest image a reduced-size JPEG decode may give for an ``h`` x ``w`` file: the
    size the mode scales to, capped by the file's own (either orientation, for EXIF rotation)."""
    a = scaled_size(h, w, height, width, pre)
    b = scaled_size(w, h, height, width, pre)[::-1]
    return min(h, max(a[0], b[0])), min(w, max(a[1], b[1]))


def decode_for(data: bytes, path: str | os.PathLike | None, spec: InputSpec, pre: Preprocess,
               reduce: bool = True, rgb: bool = False) -> np.ndarray:
    """Decode image bytes for this model: a JPEG at the smallest reduced size (1/2..1/8) that the
    resize mode still needs (:func:`decode_need`), or at full size when ``reduce`` is off. The one
    decode of the Classifier and of the pipeline's worker processes, so both give the same pixels.
    BGR, or RGB with ``rgb``."""
    from .images import decode_image

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
