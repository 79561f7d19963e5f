"""The `make demo` network for tests: digits-cnn trained briefly with the trainer's API, and its held-out digits.
conftest.py trains it once per session (``demo_trained``) and exports it once to INT8 (``demo_int8``)."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest


def train_demo(run: Path):
    """digits-cnn on the embedded digits, 8 epochs, into ``run``; returns the trainer's TrainResult."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pytest.importorskip("tensorflow")
    from cnnedge.trainer.loop import TrainConfig, train

    return train(TrainConfig(preset="digits-cnn", data="digits", out=str(run), epochs=8, verbose=0),
                 log=lambda s: None)


def held_out(result) -> SimpleNamespace:
    """The run's test split: ``images`` (BGR uint8), ``labels`` (ints) and ``classes``."""
    from cnnedge.datasets import split_images

    images, labels, classes = split_images(result.card.provenance.dataset_spec, "test")
    return SimpleNamespace(images=list(images), labels=[int(x) for x in labels], classes=list(classes))


def write_images(demo: SimpleNamespace, folder: Path) -> int:
    """The held-out digits as class folders of PNGs, as `make demo` writes runs/demo/images; returns the count."""
    import cv2

    for i, (img, label) in enumerate(zip(demo.images, demo.labels)):
        path = folder / demo.classes[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), img)
    return len(demo.images)
