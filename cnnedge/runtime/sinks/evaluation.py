"""``--eval``: the accuracy, per-class recall and confusion matrix of a run whose true classes are known."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import UsageError
from ...imaging.errors import ImageError
from ...imaging.files import read_file
from ..results import Result
from .base import Sink
from .text import display_path


#: the largest --labels-csv read: a million rows of long paths
MAX_LABELS_CSV_BYTES = 256 << 20


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``path,label`` rows (a header row is allowed); paths relative to the CSV's folder.

    Only a regular file is read, to a bound (a FIFO or ``/dev/zero`` given here neither blocks nor fills
    memory); text that is not UTF-8, a NUL byte or a row the csv module refuses is a one-line UsageError
    naming the file and the line."""
    p = Path(path)
    flag = f"--labels-csv {p}"
    try:
        text = read_file(p, MAX_LABELS_CSV_BYTES).decode("utf-8")
    except ImageError as exc:
        raise UsageError(f"{flag}: cannot read ({exc.reason})") from None
    except UnicodeDecodeError as exc:
        line = _text_line(exc.object, exc.start)
        raise UsageError(f"{flag} line {line}: not UTF-8 text; give a CSV of path,label rows") from None
    reader = csv.reader(io.StringIO(text))
    out = {}
    try:
        for row in reader:
            out.update(_truth_row(row, p, f"{flag} line {reader.line_num}"))
    except csv.Error as exc:
        raise UsageError(f"{flag} line {reader.line_num}: not a CSV row ({exc})") from None
    return out


def _truth_row(row: list[str], csv_path: Path, where: str) -> dict[str, str]:
    """``{resolved path: label}`` for one row, empty for a header or a short row."""
    if len(row) < 2 or row[0].strip().lower() in ("path", "file", "filename"):
        return {}
    if any("\0" in field for field in row[:2]):
        raise UsageError(f"{where}: a NUL byte, which no path or class name holds; give path,label rows")
    q = Path(row[0].strip())
    q = q if q.is_absolute() else csv_path.parent / q
    try:
        return {str(q.resolve()): row[1].strip()}
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"{where}: cannot use the path {display_path(row[0].strip())} ({exc})") from None


def _text_line(data: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``data``."""
    return data.count(b"\n", 0, offset) + 1


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
