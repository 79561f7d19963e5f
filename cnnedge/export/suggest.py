"""Which preprocessing? For a model from elsewhere whose description is missing, measure the common
conventions on the user's labelled images and list the best as flags to paste. Never chosen silently:
the export still stops until the user says.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..artifact.card import ModelCard

PREPROCESS = ("scale", "mean", "std", "rgb")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB order
CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR order, pixels 0..255
MAX_IMAGES = 500
BATCH = 64


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


def rank(predict: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], labels: np.ndarray,
         card: ModelCard, given: dict[str, Any]) -> list[tuple[Convention, float]]:
    """Each convention's top-1 accuracy on the labelled images (the user's given values kept), best first."""
    from .compare import side_by_side, slices, top1
    from .sources import source_inputs

    seen, tried, runs = set(), [], []
    for c in conventions(card.input.channels):
        c = Convention(c.name, given.get("scale", c.scale), given.get("mean", c.mean), given.get("std", c.std),
                       given.get("rgb", c.rgb))
        key = (c.scale, c.mean, c.std, c.rgb)
        if key in seen:
            continue
        seen.add(key)
        color = card.input.color if card.input.channels == 1 else ("RGB" if c.rgb else "BGR")
        trial = card.replace(input={"color": color}, preprocess={"scale": c.scale, "mean": c.mean, "std": c.std,
                                                                 "in_graph": False})
        tried.append(c)
        runs.append(lambda imgs, trial=trial: predict(source_inputs(imgs, trial)))
    classes = side_by_side(runs, slices(images, BATCH), top1)
    scored = [(c, float(np.mean(k == labels))) for c, k in zip(tried, classes)]
    return sorted(scored, key=lambda cs: -cs[1])


def hint(model_path: Path, describe: Any, missing: Sequence[str], folder: str | None, trust: bool,
         opset: int | None) -> str:
    """``; best on N labelled images: --scale 1/255 ... (97%), ...`` or "" when it cannot be measured (names
    unknown, no folder of labelled images, a model that does not load)."""
    from ..errors import CnnEdgeError
    from ..runtime.describe import ModelDescription
    from .data import load_images
    from .sources import open_source

    todo = [k for k in missing if k in PREPROCESS]
    if not todo or len(todo) != len(missing) or folder is None or not Path(folder).expanduser().is_dir():
        return ""
    d = describe or ModelDescription()
    placeholder = d.replace(**{k: v for k, v in {"scale": 1.0, "mean": (0.0,), "std": (1.0,), "rgb": True}.items()
                               if k in todo or (k == "rgb" and d.rgb is None)})
    src = None
    try:
        src = open_source(model_path, placeholder, trust, opset)
        card = src.load()
        if card.input.channels == 3 and d.rgb is None and "rgb" not in todo:  # a colour model found by the load
            todo.append("rgb")
        data = load_images(folder, card, "test", MAX_IMAGES, "--verify")
        if data.labels is None:
            return ""
        given = {k: getattr(d, k) for k in PREPROCESS if getattr(d, k) is not None}
        best = rank(src.predict, data.images, data.labels, card, given)[:3]
    except (CnnEdgeError, OSError):
        return ""
    finally:
        close = getattr(src, "close", None)
        if close is not None:
            close()
    return (f"; best on {len(data)} labelled images: "
            + ", ".join(f"{c.flags(todo)} ({acc:.0%})" for c, acc in best))
