"""A folder dataset: one sub-folder per class, or ``train/`` (``val/``, ``test/``) folders of those, and the
files of each recorded split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from .folders import class_dirs, class_files, has_images
from .splits import Split, shuffled, stratified_indices


@dataclass
class Layout:
    """Class names and the folders that hold each split (``val``/``test`` None when the data has none)."""

    classes: list[str]
    train: Path
    val: Path | None
    test: Path | None
    subdirs: bool


def folder_layout(root: Path) -> Layout:
    """The layout of a dataset folder, refused when it cannot train a classifier."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    train = root / "train"
    subdirs = train.is_dir()
    base = train if subdirs else root
    classes = [d.name for d in class_dirs(base)]
    if not classes:
        raise DataError(f"{base}: empty folder; expected one sub-folder of images per class "
                        "(e.g. cats/*.jpg, dogs/*.jpg)")
    if len(classes) < 2:
        raise DataError(f"{base}: only one class folder ({classes[0]}); a classifier needs at least 2 classes")
    val = root / "val" if subdirs and (root / "val").is_dir() else None
    test = root / "test" if (root / "test").is_dir() else None
    if not subdirs and test is not None:
        # a flat layout whose classes include "test": only treat it as a split when it holds class folders
        classes = [c for c in classes if c != "test"]
        if len(classes) < 2:
            raise DataError(f"{root}: found test/ but fewer than 2 class folders beside it")
    empty = [c for c in classes if not has_images(base / c)]
    if empty:
        raise DataError(f"{base}: class folder(s) with no images: {', '.join(empty[:5])}")
    for extra in (val, test):
        if extra is not None:
            unknown = [d.name for d in class_dirs(extra) if d.name not in classes]
            if unknown:
                raise DataError(f"{extra}: class folder(s) {', '.join(unknown[:5])} are not in {base} "
                                f"({', '.join(classes[:10])})")
    return Layout(classes, base, val, test, subdirs)


def _shuffled_files(base: Path, classes: list[str], seed: int) -> tuple[list[Path], np.ndarray]:
    files, labels = class_files(base, classes)
    order = shuffled(len(files), seed)
    return [files[i] for i in order], labels[order]


def split_files(spec: dict, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files (and labels) of one split of a folder spec, in the split's fixed order."""
    root = Path(spec["path"])
    if not root.is_dir():
        raise DataError(f"{root}: the dataset folder recorded in the card is gone")
    layout = folder_layout(root)
    classes = list(spec.get("classes") or layout.classes)
    if classes != layout.classes:
        raise DataError(f"{root}: class folders changed since training (card: {', '.join(classes[:10])}; "
                        f"now: {', '.join(layout.classes[:10])})")
    seed = int(spec.get("seed", 0))
    val_split = float(spec.get("val_split", 0.2))
    test_split = float(spec.get("test_split", 0.0))
    if split == "test" and layout.test is not None:
        return (*_shuffled_files(layout.test, classes, seed), classes)
    if split == "val" and layout.val is not None:
        return (*_shuffled_files(layout.val, classes, seed), classes)
    files, labels = class_files(layout.train, classes)
    vs = 0.0 if layout.val is not None else val_split
    ts = 0.0 if layout.test is not None else test_split
    idx = stratified_indices(labels, vs, ts, seed)
    if split == "test" and layout.test is None and ts == 0.0:
        split = "val"  # no separate test set: test accuracy is measured on the validation split
        if layout.val is not None:
            return (*_shuffled_files(layout.val, classes, seed), classes)
    sel = idx[split]
    return [files[i] for i in sel], labels[sel], classes


def read_files(files: Iterable[Path], labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[tuple[str, str]]]:
    """Decode files with the runtime's reader; unreadable ones are skipped and reported."""
    from ..imaging.decode import read_image
    from ..imaging.errors import ImageError

    images, keep, skipped = [], [], []
    for i, f in enumerate(files):
        try:
            images.append(read_image(f))
            keep.append(i)
        except ImageError as exc:
            skipped.append((str(f), exc.reason))
    return images, np.asarray(labels)[keep].astype(np.int64), skipped


def folder_split(spec: dict, split: str, limit: int | None) -> Split:
    """One split of a folder spec, decoded; files that do not decode are left out and listed."""
    files, labels, classes = split_files(spec, split)
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    images, labels, skipped = read_files(files, labels)
    return Split(images, labels, classes, skipped)
