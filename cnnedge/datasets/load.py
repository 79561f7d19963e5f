"""Rebuilding a recorded split from its spec, whatever the source."""
from __future__ import annotations

import numpy as np

from ..errors import DataError, UsageError
from .csvfile import csv_split
from .folderset import folder_split
from .readers import KERAS_DATASETS, digits_split, keras_split
from .splits import SPLITS, Split


def split_images(spec: dict, split: str, limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Rebuild one recorded split: ``(images, labels, class_names)``.

    ``images`` are BGR uint8 HxWx3 arrays as ``cv2.imread`` gives them (digits:
    the upscaled scans; folders: the decoded files at their original size),
    ``labels`` an int64 array, ``split`` one of ``train``, ``val``, ``test``.
    ``limit`` keeps the first N of the split's fixed, seeded order (already
    shuffled, so every class appears). Unreadable files are skipped.
    """
    s = load_split(spec, split, limit)
    return s.images, s.labels, s.classes


def load_split(spec: dict, split: str, limit: int | None = None) -> Split:
    """Like :func:`split_images`, with the skipped files (path, reason) as well."""
    if not isinstance(spec, dict) or "source" not in spec:
        raise DataError(f"dataset spec must be a dict with a 'source' key, found {spec!r}")
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, found {split!r}")
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, found {limit}")
    source = spec["source"]
    if source == "digits":
        return digits_split(spec, split, limit)
    if source in KERAS_DATASETS:
        return keras_split(spec, split, limit)
    if source == "folder":
        return folder_split(spec, split, limit)
    if source == "csv":
        return csv_split(spec, split, limit)
    raise DataError(f"dataset spec: unknown source {source!r}; expected digits, folder, csv or "
                    f"one of {', '.join(KERAS_DATASETS)}")
