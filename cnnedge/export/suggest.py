"""Which preprocessing? For a model from elsewhere whose description is missing, measure the common
conventions on the user's labelled images and list the best as flags to paste. Never chosen silently:
the export still stops until the user says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..artifact.card import ModelCard
from ..imaging.conventions import PREPROCESS, Convention, candidates

MAX_IMAGES = 500
BATCH = 64


def rank(predict: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], labels: np.ndarray,
         card: ModelCard, given: dict[str, Any]) -> list[tuple[Convention, float]]:
    """Each convention's top-1 accuracy on the labelled images (the user's given values kept), best first."""
    from .compare import side_by_side, slices, top1
    from .sources import source_inputs

    tried, runs = [], []
    for c in candidates(card.input.channels, given):
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
