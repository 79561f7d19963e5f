"""Which preprocessing does a card-less model want? Measured on the user's labelled images, as cnn-export does:
cnn-infer refuses to guess (:class:`~cnnedge.errors.DescriptionNeeded`) and lists the common conventions that
score best, as flags to paste. Each convention runs through the runtime's own Classifier."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CnnEdgeError
from ..imaging.conventions import PREPROCESS, Convention, candidates

MAX_IMAGES = 200


def rank_conventions(model: str | os.PathLike, folder: str | os.PathLike, labels: Any, given: dict[str, Any],
                     backend: str = "auto", max_images: int = MAX_IMAGES,
                     **backend_opts: Any) -> tuple[list[tuple[Convention, float]], int]:
    """Each convention's top-1 accuracy on up to ``max_images`` images of ``folder/<class>/`` (classes named by
    ``labels``), best first, with the user's ``given`` description kept; and how many images were used."""
    from ..datasets.folders import class_files
    from .classifier import Classifier
    from .labels import read_labels

    names = read_labels(labels)
    files, truth = class_files(Path(folder), names or ())
    if not files:
        return [], 0
    pick = np.unique(np.linspace(0, len(files) - 1, min(max_images, len(files))).astype(int))
    paths, truth = [str(files[i]) for i in pick], truth[pick]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Classifier(model, backend, labels=labels, **given, **backend_opts) as clf:
            channels = clf.card.input.channels
        scored = []
        for c in candidates(channels, given):
            values = {**given, "scale": c.scale, "mean": c.mean, "std": c.std}
            if channels == 3:
                values["rgb"] = c.rgb
            with Classifier(model, backend, labels=labels, topk=1, **values, **backend_opts) as clf:
                got = np.asarray([p.index for p in clf.predict_batch(paths)])
            scored.append((c, float(np.mean(got == truth))))
    return sorted(scored, key=lambda cs: -cs[1]), len(paths)


def suggestion(model: str | os.PathLike, folder: str | os.PathLike | None, labels: Any, given: dict[str, Any],
               backend: str = "auto", **backend_opts: Any) -> str:
    """``; best on N labelled images: --scale 1/255 ... (97%), ...``, or "" when it cannot be measured (no labels,
    no class folders named after them, a model that does not load)."""
    if labels is None or folder is None or not Path(folder).is_dir():
        return ""
    try:
        best, n = rank_conventions(model, folder, labels, given, backend, **backend_opts)
    except (CnnEdgeError, OSError):
        return ""
    if not best:
        return ""
    todo = [k for k in PREPROCESS if k not in given]
    return f"; best on {n} labelled images: " + ", ".join(f"{c.flags(todo)} ({acc:.0%})" for c, acc in best[:3])
