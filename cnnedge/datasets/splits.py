"""What every source becomes: a :class:`Split` of BGR uint8 images, and the seeded split that rebuilds it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: BGR uint8 images, int labels, class names, and the files that were skipped."""

    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.images)


def stratified_indices(labels: np.ndarray, val_split: float, test_split: float, seed: int
                       ) -> dict[str, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` into train/val/test index arrays.

    Each class keeps its share in every split (at least one image in a requested
    split when the class has three or more). Each split comes back in a fixed
    shuffled order, so its first N mix all classes.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = int(round(test_split * n))
        n_val = int(round(val_split * n))
        if test_split > 0 and n_test == 0 and n >= 3:
            n_test = 1
        if val_split > 0 and n_val == 0 and n - n_test >= 2:
            n_val = 1
        if n_test + n_val >= n:  # always leave one to train on
            n_val = max(0, min(n_val, n - n_test - 1))
            n_test = max(0, min(n_test, n - n_val - 1))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    out = {}
    for k, chunks in parts.items():
        arr = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        out[k] = arr[rng.permutation(len(arr))].astype(np.int64)
    return out


def shuffled(n: int, seed: int) -> np.ndarray:
    """A seeded order of ``range(n)``: a ready-made split (a test/ folder) still mixes its classes."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def take(idx: np.ndarray, limit: int | None) -> np.ndarray:
    """The first ``limit`` of a split's fixed order (all of it without a limit)."""
    return idx if limit is None else idx[:limit]


def gray_to_bgr(gray: np.ndarray) -> np.ndarray:
    """A gray HxW image as the HxWx3 BGR array ``cv2.imread`` gives for a gray file."""
    return np.repeat(np.asarray(gray, np.uint8)[:, :, None], 3, axis=2)
