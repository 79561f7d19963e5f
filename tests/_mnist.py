"""Real MNIST test digits (../shared/data/mnist, IDX format) written out as class folders of PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pytest

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
IMAGES = MNIST / "t10k-images-idx3-ubyte.gz"
LABELS = MNIST / "t10k-labels-idx1-ubyte.gz"


def load() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 scans and labels; skips the test when the files are not there."""
    if not (IMAGES.is_file() and LABELS.is_file()):
        pytest.skip(f"real MNIST digits not found in {MNIST}")
    from cnnedge.datasets import read_idx

    return read_idx(IMAGES), read_idx(LABELS)


def write_folder(root: Path, x: np.ndarray, y: np.ndarray, indices: Iterable[int]) -> list[Path]:
    """``root/<label>/<index>.png`` for each index; returns the files in that order."""
    import cv2

    files = []
    for i in indices:
        f = root / str(int(y[i])) / f"{i:05d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(f), x[i])
        files.append(f)
    return files
