"""Training data made ready for tf.data: each split's pixels prepared once at the model's input size, or,
when they would not fit in memory, the files to decode while streaming; and the unreadable files skipped."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..artifact.card import ModelCard
from ..datasets import KERAS_DATASETS, SPLITS, describe, split_files
from ..errors import DataError, UsageError


def native_size(spec: dict, train_images: Sequence[np.ndarray]) -> tuple[int, int] | None:
    src = spec["source"]
    if src == "digits":
        h, w = spec["size"]
        return int(h), int(w)
    if src == "csv":
        return int(spec["shape"][0]), int(spec["shape"][1])
    if src in KERAS_DATASETS and train_images:
        return tuple(train_images[0].shape[:2])  # type: ignore[return-value]
    return None  # folders: images of any size; the preset's size



@dataclass
class Prepared:
    """One split ready for tf.data: prepared pixels in memory, or files decoded while streaming."""

    pixels: np.ndarray | None
    labels: np.ndarray
    files: list[Path] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def max_train_bytes() -> int:
    """Prepared pixels above this size stream from the files each epoch instead of living in memory."""
    try:
        return int(os.environ.get("CNNEDGE_MAX_TRAIN_BYTES", 3 << 30))
    except ValueError:
        raise UsageError("CNNEDGE_MAX_TRAIN_BYTES must be a number of bytes") from None


def prepare_folder(spec: dict, card: ModelCard) -> dict[str, Prepared]:
    """Decode and prepare each file once, keeping only the model-size pixels (or stream them)."""
    from ..imaging.decode import read_image
    from ..imaging.errors import ImageError
    from ..imaging.prepare import prepare_image

    lists = {k: split_files(spec, k)[:2] for k in SPLITS}
    n = len({f for files, _ in lists.values() for f in files})
    if n * card.input.height * card.input.width * card.input.channels > max_train_bytes():
        return {k: Prepared(None, np.asarray(lab, np.int64), list(files)) for k, (files, lab) in lists.items()}
    def load(f: Path) -> np.ndarray | tuple[str, str]:
        try:
            return prepare_image(read_image(f), card.input, card.preprocess)
        except ImageError as exc:
            return (str(f), exc.reason)

    unique = list(dict.fromkeys(f for files, _ in lists.values() for f in files))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV releases the GIL
        cache = dict(zip(unique, pool.map(load, unique, chunksize=64)))
    out = {}
    for k, (files, lab) in lists.items():
        arrays, keep, skipped = [], [], []
        for i, f in enumerate(files):
            item = cache[f]
            if isinstance(item, tuple):
                skipped.append(item)
            else:
                arrays.append(item)
                keep.append(i)
        shape = (0, card.input.height, card.input.width, card.input.channels)
        pixels = np.stack(arrays).astype(np.uint8, copy=False) if arrays else np.zeros(shape, np.uint8)
        out[k] = Prepared(pixels, np.asarray(lab, np.int64)[keep], None, skipped)
    return out


def skipped_files(data: dict[str, Prepared]) -> list[tuple[str, str]]:
    # the test split may be the validation split: name each skipped file once
    return list(dict.fromkeys(s for sp in data.values() for s in sp.skipped))


def log_skipped(skipped: list[tuple[str, str]], log: Callable[[str], None]) -> None:
    if skipped:
        names = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log(f"data: skipped {len(skipped)} unreadable image(s): {names}{more}")


def check_sizes(spec: dict, data: dict[str, Prepared], n_classes: int, log: Callable[[str], None],
                 seconds: float) -> None:
    if not len(data["train"]):
        raise DataError(f"{describe(spec)}: no readable training images")
    if not len(data["val"]):
        raise DataError(f"{describe(spec)}: the validation split is empty; give --val-split (e.g. 0.2) "
                        "or a val/ folder")
    counts = ", ".join(f"{k} {len(v)}" for k, v in data.items())
    streamed = " (streamed from the files each epoch)" if data["train"].files is not None else ""
    log(f"data: {describe(spec)}: {n_classes} classes; {counts} images{streamed} ({seconds:.1f}s)")
    log_skipped(skipped_files(data), log)
