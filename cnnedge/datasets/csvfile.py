"""A ``.csv`` file in the Fashion-MNIST layout: a label column, then one column per pixel."""
from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, first_line
from .splits import Split, gray_to_bgr, stratified_indices, take

MAX_CSV_BYTES = 2 << 30


def csv_fields(path: Path, given_shape: Sequence[int] | None) -> dict[str, Any]:
    """What a spec records about a CSV (image shape, classes, label column), every row checked first."""
    header, labels, linenos, n_cols = _scan(path)
    return {"shape": list(_image_shape(path, n_cols, given_shape)),
            "classes": _classes(Labels(path, header, labels, linenos)),
            "label_column": header[0] if header else None}


def _scan(path: Path) -> tuple[list[str] | None, list[str], list[int], int]:
    """(header or None, label strings, their line numbers, number of pixel columns), checking every row has
    the same width."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty CSV file")
    if size > MAX_CSV_BYTES:
        raise DataError(f"{path}: {size} bytes is over the {MAX_CSV_BYTES}-byte CSV limit")
    header, labels, linenos, n_cols = None, [], [], None
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            for row in reader:
                lineno = reader.line_num
                if not row:
                    continue
                if lineno == 1 and not _is_number(row[-1]):
                    header = row
                    continue
                if n_cols is None:
                    n_cols = len(row) - 1
                elif len(row) - 1 != n_cols:
                    raise DataError(f"{path}: line {lineno} has {len(row)} columns, earlier lines {n_cols + 1}")
                labels.append(row[0].strip())
                linenos.append(lineno)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a text CSV file ({first_line(exc)}); expected a label column then pixel "
                        "columns") from None
    if not labels or not n_cols:
        raise DataError(f"{path}: no data rows; expected a label column then pixel columns")
    return header, labels, linenos, n_cols


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _image_shape(path: Path, n: int, given: Sequence[int] | None) -> tuple[int, int, int]:
    if given:
        shape = tuple(int(v) for v in given)
        if len(shape) == 2:
            shape = shape + (1,)
        if math.prod(shape) != n or shape[2] not in (1, 3):
            raise DataError(f"{path}: {n} pixel columns do not form a {'x'.join(map(str, shape))} image")
        return shape  # type: ignore[return-value]
    for c in (1, 3):
        side = int(round((n / c) ** 0.5))
        if side * side * c == n and side >= 2:
            return (side, side, c)
    raise DataError(f"{path}: {n} pixel columns do not form a square gray or colour image; "
                    "give the shape with --csv-shape HxW[xC]")


@dataclass
class Labels:
    """A CSV's label column: each data row's label and the file's line it is on."""

    path: Path
    header: list[str] | None
    values: list[str]
    linenos: list[int]

    def where(self, i: int) -> str:
        """``<file>: line N, column 1 (label)``: where row ``i``'s label is."""
        return f"{self.path}: line {self.linenos[i]}, {column(0, self.header)}"


def column(i: int, header: Sequence[str] | None) -> str:
    """``column 3 (pixel2)``: the 0-based column ``i`` as a spreadsheet numbers it, with its header name."""
    name = f" ({header[i].strip()})" if header and i < len(header) and header[i].strip() else ""
    return f"column {i + 1}{name}"


def _classes(labels: Labels) -> list[str]:
    """The class names: every label a class index (a whole number >= 0, the indices without a gap), or
    every label a name. Anything else is refused naming the line and column it is on."""
    values = labels.values
    numeric = [_is_number(v) for v in values]
    for i, v in enumerate(values):
        if not v:
            raise DataError(f"{labels.where(i)}: the label is empty; give every row a class")
    if any(numeric) and not all(numeric):
        odd = sum(numeric) * 2 < len(numeric)  # True: a number among names; the rarer kind is the mistake
        i = numeric.index(odd)
        found, most = ("a number", "class names") if odd else ("a name", "class indices (numbers)")
        raise DataError(f"{labels.where(i)}: label {values[i]!r} is {found} while most labels are {most}; give "
                        "every row a class index (0, 1, 2 ...) or every row a class name")
    if not all(numeric):
        uniq = sorted(set(values))
    else:
        uniq = [str(i) for i in _class_indices(labels)]
    if len(uniq) < 2:
        raise DataError(f"{labels.path}: the CSV has only one label ({uniq[0]!r}); a classifier needs at least "
                        "2 classes")
    return uniq


def _class_indices(labels: Labels) -> list[int]:
    """The sorted class indices of an all-number label column: whole numbers >= 0 without a gap."""
    ints: list[int] = []
    for i, v in enumerate(labels.values):
        f = float(v)
        if not (math.isfinite(f) and f.is_integer()):
            raise DataError(f"{labels.where(i)}: label {v!r} is not a whole number; numeric labels are class "
                            "indices (0, 1, 2 ...): fix the row, or give class names")
        if f < 0:
            raise DataError(f"{labels.where(i)}: label {v!r} is negative; class indices count from 0: fix the "
                            "row or remove it")
        ints.append(int(f))
    counts = Counter(ints)
    runs: list[list[int]] = []
    for c in sorted(counts):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    if len(runs) > 1:  # the indices with the most rows are the range; a label beyond a gap is out of it
        main = max(runs, key=lambda r: sum(counts[c] for c in r))
        i = next(i for i, c in enumerate(ints) if not main[0] <= c <= main[-1])
        gap = (main[-1] + 1, ints[i] - 1) if ints[i] > main[-1] else (ints[i] + 1, main[0] - 1)
        missing = str(gap[0]) if gap[0] == gap[1] else f"{gap[0]}..{gap[1]}"
        raise DataError(f"{labels.where(i)}: label {ints[i]} is out of range: the other labels are class indices "
                        f"{main[0]}..{main[-1]} and no row is labelled {missing}; fix the row, or number the "
                        "classes without a gap")
    return sorted(counts)


def _rows(path: Path, classes: list[str], n_pixels: int
          ) -> tuple[list[list[str]], np.ndarray, list[int], list[str] | None]:
    """(pixel strings, labels, line numbers, header or None) of every data row, labels checked against the
    recorded classes."""
    index = {name: i for i, name in enumerate(classes)}
    rows, labels, linenos, header = [], [], [], None
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        for row in reader:
            lineno = reader.line_num  # the file's line number (a quoted field may span lines)
            if lineno == 1 and row and not _is_number(row[-1]):
                header = row
                continue
            if not row:
                continue
            lab = row[0].strip()
            if _is_number(lab) and float(lab).is_integer():
                lab = str(int(float(lab)))
            if lab not in index:
                raise DataError(f"{path}: line {lineno}, {column(0, header)}: label {lab!r} is not one of the "
                                "recorded classes")
            if len(row) - 1 != n_pixels:
                raise DataError(f"{path}: line {lineno} has {len(row) - 1} pixel columns; expected {n_pixels}")
            rows.append(row[1:])
            labels.append(index[lab])
            linenos.append(lineno)
    return rows, np.asarray(labels, np.int64), linenos, header


def csv_split(spec: dict, split: str, limit: int | None) -> Split:
    """One split of a recorded CSV spec; without a test fraction the test split is the validation split."""
    path = Path(spec["path"])
    if not path.is_file():
        raise DataError(f"{path}: the CSV recorded in the card is gone")
    h, w, c = (int(v) for v in spec["shape"])
    classes = list(spec["classes"])
    rows, y, linenos, header = _rows(path, classes, h * w * c)
    idx = stratified_indices(y, float(spec.get("val_split", 0.2)), float(spec.get("test_split", 0.0)),
                             int(spec.get("seed", 0)))
    part = split
    if split == "test" and float(spec.get("test_split", 0.0)) == 0.0:
        part = "val"
    sel = take(idx[part], limit)
    images = []
    for i in sel:
        px = _pixels(path, rows[i], linenos[i], header)
        im = np.round(px).astype(np.uint8).reshape(h, w, c)
        images.append(gray_to_bgr(im[:, :, 0]) if c == 1 else np.ascontiguousarray(im[:, :, ::-1]))
    return Split(images, y[sel], classes)


def _pixels(path: Path, row: Sequence[str], lineno: int, header: Sequence[str] | None) -> np.ndarray:
    """One row's pixel values, each a number from 0 to 255 (NaN and infinity are not), or a DataError naming
    the line and column of the first that is not."""
    try:
        px = np.asarray(row, dtype=np.float64)
    except ValueError:  # text among the numbers: NaN in its place
        px = np.asarray([float(v) if _is_number(v) else np.nan for v in row], np.float64)
    bad = ~((px >= 0) & (px <= 255))  # NaN compares false: it is bad too
    if not bad.any():
        return px
    j = int(np.argmax(bad))
    raise DataError(f"{path}: line {lineno}, {column(j + 1, header)}: pixel value {row[j].strip()!r} is not a "
                    "number from 0 to 255; fix the row or remove it")
