"""``--eval``: the accuracy, per-class recall and confusion matrix of a run whose true classes are known."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import UsageError
from ..results import Result
from .base import Sink


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``path,label`` rows (a header row is allowed); paths relative to the CSV's folder."""
    p = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8"))))
    except OSError as exc:
        raise UsageError(f"--labels-csv {p}: cannot read ({exc.strerror or exc})") from None
    out = {}
    for row in rows:
        if len(row) < 2 or row[0].strip().lower() in ("path", "file", "filename"):
            continue
        q = Path(row[0].strip())
        q = q if q.is_absolute() else p.parent / q
        out[str(q.resolve())] = row[1].strip()
    return out


class EvalSink(Sink):
    """``--eval``: accuracy, per-class recall and a confusion matrix of the deployed artifact.

    The true class is the name of the image's folder (a class-folder layout), or
    comes from ``--labels-csv``. Images whose truth is unknown are counted apart.
    """

    def __init__(self, classes: Sequence[str], labels_csv: str | os.PathLike | None = None) -> None:
        self.classes = list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.truth = read_labels_csv(labels_csv) if labels_csv else None
        n = len(self.classes)
        self.confusion = np.zeros((n, n), np.int64)
        self.unknown = 0

    def _true(self, r: Result) -> int | None:
        if r.path is None:
            return None
        name = self.truth.get(str(Path(r.path).resolve())) if self.truth is not None else Path(r.path).parent.name
        return self.index.get(name) if name is not None else None

    def write(self, r: Result) -> None:
        if r.error is not None:
            return
        t = self._true(r)
        if t is None:
            self.unknown += 1
            return
        self.confusion[t, r.prediction.index] += 1  # type: ignore[union-attr]

    def report(self) -> dict[str, Any]:
        cm = self.confusion
        total = int(cm.sum())
        rows = cm.sum(axis=1)
        recall = {c: (float(cm[i, i] / rows[i]) if rows[i] else None) for i, c in enumerate(self.classes)}
        return {"images": total, "accuracy": float(np.trace(cm) / total) if total else None,
                "recall": recall, "confusion": cm.tolist(), "classes": self.classes, "unlabelled": self.unknown}

    def format(self) -> str:
        rep = self.report()
        if not rep["images"]:
            return ("eval: no image had a known true class (use a class-folder layout whose folder names are the "
                    "model's classes, or --labels-csv)")
        lines = [f"eval: {rep['images']} images, accuracy {rep['accuracy']:.4f}"
                 + (f" ({rep['unlabelled']} without a known class left out)" if rep["unlabelled"] else "")]
        used = [i for i in range(len(self.classes)) if self.confusion[i].sum() or self.confusion[:, i].sum()]
        width = max(5, *(len(self.classes[i]) for i in used))
        lines.append("per-class recall: " + ", ".join(
            f"{self.classes[i]} {rep['recall'][self.classes[i]]:.3f}" for i in used
            if rep["recall"][self.classes[i]] is not None))
        lines.append("confusion (rows: true, columns: predicted)")
        lines.append(" " * width + " " + " ".join(f"{self.classes[i]:>{width}}" for i in used))
        for i in used:
            lines.append(f"{self.classes[i]:>{width}} " + " ".join(f"{self.confusion[i, j]:>{width}d}" for j in used))
        return "\n".join(lines)
