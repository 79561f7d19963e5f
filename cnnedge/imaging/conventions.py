"""The common preprocessing conventions a model from elsewhere may have been trained with (0..1, -1..1, ImageNet
mean/std, caffe means, raw 0..255; RGB or BGR), and how to write each as flags: cnn-export and cnn-infer measure
them on labelled images when a model's description is missing, and the export's card check tries them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

PREPROCESS = ("scale", "mean", "std", "rgb")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB order
CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR order, pixels 0..255


@dataclass(frozen=True)
class Convention:
    name: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rgb: bool

    def flags(self, keys: Sequence[str]) -> str:
        parts = {"scale": f"--scale {_number(self.scale)}", "mean": "--mean " + ",".join(map(_number, self.mean)),
                 "std": "--std " + ",".join(map(_number, self.std)), "rgb": "--rgb" if self.rgb else "--no-rgb"}
        return " ".join(parts[k] for k in PREPROCESS if k in keys)


def _number(x: float) -> str:
    """A flag value as a person writes it: ``1/255`` and ``1/127.5`` for scales, decimals otherwise (0.485, not
    97/200)."""
    if x and abs(1 / x) >= 10:
        r = abs(1 / x)
        if abs(r - round(r, 1)) < 1e-9 * r:
            return f"{'-' if x < 0 else ''}1/{round(r, 1):g}"
    return f"{x:g}"


def conventions(channels: int) -> list[Convention]:
    """0..1, -1..1, ImageNet mean/std, caffe means, raw 0..255; each in RGB and BGR (gray: once, channel means
    averaged)."""
    out = []
    for rgb in ((True, False) if channels == 3 else (True,)):
        def order(v: tuple[float, ...], rgb_order: bool) -> tuple[float, ...]:
            if channels == 1:
                return (round(sum(v) / len(v), 4),)
            return v if rgb == rgb_order else v[::-1]

        out += [Convention("0..1", 1 / 255, (0.0,), (1.0,), rgb),
                Convention("-1..1", 1 / 255, (0.5,), (0.5,), rgb),
                Convention("ImageNet", 1 / 255, order(IMAGENET_MEAN, True), order(IMAGENET_STD, True), rgb),
                Convention("caffe", 1.0, order(CAFFE_MEAN, False), (1.0,), rgb),
                Convention("raw 0..255", 1.0, (0.0,), (1.0,), rgb)]
    return out


def candidates(channels: int, given: "dict[str, object]") -> list[Convention]:
    """The conventions to try for a model: the user's ``given`` values kept in each, every distinct one once."""
    seen, out = set(), []
    for c in conventions(channels):
        c = Convention(c.name, given.get("scale", c.scale), given.get("mean", c.mean),  # type: ignore[arg-type]
                       given.get("std", c.std), given.get("rgb", c.rgb))  # type: ignore[arg-type]
        key = (c.scale, c.mean, c.std, c.rgb)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
