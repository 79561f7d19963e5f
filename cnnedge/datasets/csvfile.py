"""A ``.csv`` file in the Fashion-MNIST layout: a label column, then one column per pixel."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .splits import Split, gray_to_bgr, stratified_indices, take

MAX_CSV_BYTES = 2 << 30


def csv_fields(path: Path, given_shape: Sequence[int] | None) -> dict[str, Any]:
    """What a spec records about a CSV (image shape, classes, label column), every row checked first."""
    header, labels, n_cols = _scan(path)
    return {"shape": list(_image_shape(path, n_cols, given_shape)), "classes": _classes(labels),
            "label_column": header[0] if header else None}


def _scan(path: Path) -> tuple[list[str] | None, list[str], int]:
    """(header or None, label strings, number of pixel columns), checking every row has the same width."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty CSV file")
    if size > MAX_CSV_BYTES:
        raise DataError(f"{path}: {size} bytes is over the {MAX_CSV_BYTES}-byte CSV limit")
    header, labels, n_cols = None, [], None
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
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
    if not labels or not n_cols:
        raise DataError(f"{path}: no data rows; expected a label column then pixel columns")
    return header, labels, n_cols


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
        if int(np.prod(shape)) != n or shape[2] not in (1, 3):
            raise DataError(f"{path}: {n} pixel columns do not form a {'x'.join(map(str, shape))} image")
        return shape  # type: ignore[return-value]
    for c in (1, 3):
        side = int(round((n / c) ** 0.5))
        if side * side * c == n and side >= 2:
            return (side, side, c)
    raise DataError(f"{path}: {n} pixel columns do not form a square gray or colour image; "
                    "give the shape with --csv-shape HxW[xC]")


def _classes(labels: Sequence[str]) -> list[str]:
    uniq = sorted(set(labels), key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    if len(uniq) < 2:
        raise DataError(f"the CSV has only one label ({uniq[0]!r}); a classifier needs at least 2 classes")
    if all(_is_number(u) and float(u).is_integer() for u in uniq):
        ints = sorted(int(float(u)) for u in uniq)
        return [str(i) for i in ints]
    return list(uniq)


def _rows(path: Path, classes: list[str], n_pixels: int) -> tuple[list[list[str]], np.ndarray, list[int]]:
    """(pixel strings, labels, line numbers) of every data row, labels checked against the recorded classes."""
    index = {name: i for i, name in enumerate(classes)}
    rows, labels, linenos = [], [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        for row in reader:
            lineno = reader.line_num  # the file's line number (a quoted field may span lines)
            if not row or (lineno == 1 and not _is_number(row[-1])):
                continue
            lab = row[0].strip()
            if _is_number(lab) and float(lab).is_integer():
                lab = str(int(float(lab)))
            if lab not in index:
                raise DataError(f"{path}: line {lineno}: label {lab!r} is not one of the recorded classes")
            if len(row) - 1 != n_pixels:
                raise DataError(f"{path}: line {lineno} has {len(row) - 1} pixel columns; expected {n_pixels}")
            rows.append(row[1:])
            labels.append(index[lab])
            linenos.append(lineno)
    return rows, np.asarray(labels, np.int64), linenos


def csv_split(spec: dict, split: str, limit: int | None) -> Split:
    """One split of a recorded CSV spec; without a test fraction the test split is the validation split."""
    path = Path(spec["path"])
    if not path.is_file():
        raise DataError(f"{path}: the CSV recorded in the card is gone")
    h, w, c = (int(v) for v in spec["shape"])
    classes = list(spec["classes"])
    rows, y, linenos = _rows(path, classes, h * w * c)
    idx = stratified_indices(y, float(spec.get("val_split", 0.2)), float(spec.get("test_split", 0.0)),
                             int(spec.get("seed", 0)))
    part = split
    if split == "test" and float(spec.get("test_split", 0.0)) == 0.0:
        part = "val"
    sel = take(idx[part], limit)
    images = []
    for i in sel:
        try:
            px = np.asarray(rows[i], dtype=np.float64)
        except ValueError:
            raise DataError(f"{path}: line {linenos[i]} holds a value that is not a number") from None
        if px.min() < 0 or px.max() > 255:
            raise DataError(f"{path}: line {linenos[i]}: pixel values must be 0..255, found "
                            f"{px.min():g}..{px.max():g}")
        im = np.round(px).astype(np.uint8).reshape(h, w, c)
        images.append(gray_to_bgr(im[:, :, 0]) if c == 1 else np.ascontiguousarray(im[:, :, ::-1]))
    return Split(images, y[sel], classes)
