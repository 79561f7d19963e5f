"""What a user says about a model that carries no card, checked once for the API and the CLIs.

The values arrive as cnn-infer/cnn-bench/cnn-export flags or as Classifier keyword
arguments; :func:`check_description` turns them into typed values or raises a
one-line :class:`~cnnedge.errors.UsageError` that names the flag (or argument) and
shows the accepted form, e.g. ``--std: must not contain 0 (...), e.g. --std 0.229,0.224,0.225``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, Mapping

from ..artifact.card import INTERPOLATIONS, MAX_SIDE, OUTPUT_KINDS, RESIZE_MODES
from ..errors import UsageError

#: each value: (flag, CLI example, API example)
FIELDS: dict[str, tuple[str, str, str]] = {
    "labels": ("--labels", "--labels labels.txt", "labels=['cat', 'dog']"),
    "scale": ("--scale", "--scale 1/255", "scale=1/255"),
    "mean": ("--mean", "--mean 0.485,0.456,0.406", "mean=(0.485, 0.456, 0.406)"),
    "std": ("--std", "--std 0.229,0.224,0.225", "std=(0.229, 0.224, 0.225)"),
    "rgb": ("--rgb", "--no-rgb", "rgb=False"),
    "resize": ("--resize", "--resize shorter", "resize='shorter'"),
    "crop_pct": ("--crop-pct", "--crop-pct 0.875", "crop_pct=0.875"),
    "pad_value": ("--pad-value", "--pad-value 127", "pad_value=127"),
    "interpolation": ("--interpolation", "--interpolation cubic", "interpolation='cubic'"),
    "output": ("--output", "--output logits", "output='logits'"),
    "input_size": ("--input-size", "--input-size 224x224", "input_size=(224, 224)"),
}
#: the values that describe preprocessing (``labels`` and ``input_size`` say what, not how)
PREPROCESS_KEYS = ("scale", "mean", "std", "rgb", "resize", "crop_pct", "pad_value", "interpolation")


class _Bad(Exception):
    """A value that does not fit; the message is what it must be."""


def _name(key: str, cli: bool) -> str:
    return FIELDS[key][0] if cli else key


def _example(key: str, cli: bool) -> str:
    return FIELDS[key][1] if cli else FIELDS[key][2]


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise _Bad("must be a number, not a boolean")
    try:
        x = float(Fraction(v.strip())) if isinstance(v, str) and "/" in v else float(v)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise _Bad(f"must be a number or a fraction such as 1/255, got {v!r}") from None
    except TypeError:
        raise _Bad(f"must be a number, got {type(v).__name__} {v!r}") from None
    if not math.isfinite(x):
        raise _Bad(f"must be finite, got {v!r}")
    return x


def _numbers(v: Any) -> tuple[float, ...]:
    items = v.split(",") if isinstance(v, str) else [v] if isinstance(v, (int, float)) else v
    try:
        values = tuple(_number(x) for x in items)
    except TypeError:
        raise _Bad(f"must be one number or one per channel, got {type(v).__name__}") from None
    if len(values) not in (1, 3):
        raise _Bad(f"takes one value or one per channel (3), got {len(values)}")
    return values


def _choice(v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise _Bad(f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def parse_size(v: Any) -> tuple[int, int]:
    """``"48x192"``, ``"224"`` (square), ``(48, 192)`` or ``224`` -> (height, width)."""
    if isinstance(v, str):
        parts = v.lower().replace("*", "x").split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise _Bad(f"must be HEIGHTxWIDTH in pixels, got {v!r}") from None
    elif isinstance(v, int) and not isinstance(v, bool):
        nums = [v]
    elif isinstance(v, (tuple, list)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        nums = list(v)
    else:
        raise _Bad(f"must be (height, width) in pixels, got {v!r}")
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2:
        raise _Bad(f"must be a height and a width, got {len(nums)} numbers")
    if not all(0 < n <= MAX_SIDE for n in nums):
        raise _Bad(f"sides must be from 1 to {MAX_SIDE} pixels, got {nums[0]}x{nums[1]}")
    return nums[0], nums[1]


def _check_one(key: str, v: Any) -> Any:
    if key == "labels":
        if not isinstance(v, (str, os.PathLike, list, tuple)):
            raise _Bad(f"must be a file of names, one a line, or a list of names, got {type(v).__name__}")
        return v
    if key == "scale":
        x = _number(v)
        if x == 0:
            raise _Bad("must not be 0 (a negative value inverts pixels)")
        return x
    if key == "mean":
        return _numbers(v)
    if key == "std":
        xs = _numbers(v)
        if any(x == 0 for x in xs):
            raise _Bad("must not contain 0 (a negative value inverts pixels)")
        return xs
    if key == "rgb":
        if type(v).__name__ not in ("bool", "bool_"):
            raise _Bad(f"must be True or False, got {type(v).__name__} {v!r}")
        return bool(v)
    if key == "resize":
        return _choice(v, RESIZE_MODES)
    if key == "interpolation":
        return _choice(v, INTERPOLATIONS)
    if key == "output":
        return _choice(v, OUTPUT_KINDS)
    if key == "crop_pct":
        x = _number(v)
        if not 0 < x <= 1:
            raise _Bad(f"must be above 0 and at most 1, got {v!r}")
        return x
    if key == "pad_value":
        x = _number(v)
        if not 0 <= x <= 255:
            raise _Bad(f"must be a pixel value from 0 to 255, got {v!r}")
        return x
    if key == "input_size":
        return parse_size(v)
    raise UsageError(f"unknown model description {key!r}; expected one of {', '.join(FIELDS)}")


def check_description(values: Mapping[str, Any], cli: bool = False) -> dict[str, Any]:
    """The given (non-None) values, typed; UsageError naming the flag (``cli``) or the argument."""
    out: dict[str, Any] = {}
    for key, v in values.items():
        if v is None:
            continue
        try:
            out[key] = _check_one(key, v)
        except _Bad as exc:
            raise UsageError(f"{_name(key, cli)}: {exc}, e.g. {_example(key, cli)}") from None
    _check_range(out, cli)
    resize = out.get("resize", "stretch")
    if out.get("crop_pct", 1.0) != 1.0 and resize in ("letterbox", "pad"):
        raise UsageError(f"{_name('crop_pct', cli)} applies to --resize stretch, center-crop and shorter, not "
                         f"{resize}" if cli else f"crop_pct applies to resize='stretch', 'center-crop' and "
                         f"'shorter', not {resize!r}")
    return out


FLOAT32_MAX = 3.4028234663852886e38


def _check_range(out: Mapping[str, Any], cli: bool) -> None:
    """UsageError naming the value to blame when pixels 0..255 normalised as ``(x * scale - mean) / std``
    leave float32: the model would see inf, and every score would be NaN."""
    if not any(k in out for k in ("scale", "mean", "std")):
        return
    scale, mean, std = out.get("scale", 1 / 255), out.get("mean", (0.0,)), out.get("std", (1.0,))
    n = max(len(mean), len(std))
    ends = [(p * scale - mean[i % len(mean)]) / std[i % len(std)] for p in (0.0, 255.0) for i in range(n)]
    worst = max(abs(v) for v in ends)
    if worst <= FLOAT32_MAX:
        return
    if 255 * scale > FLOAT32_MAX:
        key = "scale"
    elif max(abs(m) for m in mean) > FLOAT32_MAX:
        key = "mean"
    else:
        key = "std" if min(abs(s) for s in std) < 1 else "scale" if "scale" in out else "mean"
    raise UsageError(f"{_name(key, cli)}: the normalised pixel range (0..255 * scale - mean) / std reaches "
                     f"{worst:.3g}, beyond float32's {FLOAT32_MAX:.3g}; the model would see inf and score NaN, "
                     f"e.g. {_example(key, cli)}")


def flag_names(keys: Any) -> str:
    """``--scale (scale=), --std (std=)``: given values named for the CLI and the API at once."""
    return ", ".join(f"{_name(k, True)} ({k}=)" for k in keys)


#: what a model without a card must be told: a graph says neither its class names nor its arithmetic
REQUIRED = ("labels", "scale", "mean", "std", "rgb")


@dataclass(frozen=True)
class ModelDescription:
    """What a user says about a model that carries no card: the runtime's keyword arguments and the
    export's description are this one type, checked on construction by :func:`check_description`."""

    labels: Any = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    rgb: bool | None = None
    resize: str | None = None
    crop_pct: float | None = None
    pad_value: float | None = None
    interpolation: str | None = None
    output: str | None = None
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for key, v in check_description(self.as_dict()).items():
            object.__setattr__(self, key, v)

    def as_dict(self) -> dict[str, Any]:
        """The given values by name (what :class:`~cnnedge.runtime.classifier.Classifier` takes as keywords)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def given(self) -> list[str]:
        return list(self.as_dict())

    def missing(self, channels: int | None = None, names_known: bool = False) -> list[str]:
        """The values a card needs that are not given: no colour order for a gray model, no labels when the
        file names its classes."""
        skip = {"rgb"} if channels == 1 else set()
        if names_known:
            skip.add("labels")
        return [k for k in REQUIRED if k not in skip and getattr(self, k) is None]

    def replace(self, **values: Any) -> "ModelDescription":
        return ModelDescription(**{**self.as_dict(), **values})
