"""The card's resize modes: scale with its interpolation, then crop or pad to the model's input size.

Also the smallest image a mode still needs, which bounds a reduced-size JPEG decode.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..artifact.card import RESIZE_MODES, Preprocess
from ..errors import UsageError
from .opencv import opencv

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
    cv2 = opencv()
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
    cv2 = opencv()
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
