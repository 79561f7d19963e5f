"""The `make demo` model and images for tests that run it outside the venv (a container, a ROS 2 node):
digits-cnn trained briefly with the trainer's API, exported to INT8, and its held-out digits."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


def demo_model(base: Path) -> SimpleNamespace:
    """``run`` (the run folder with model.int8.onnx), ``images`` (BGR uint8), ``labels``, ``classes``."""
    pytest.importorskip("tensorflow")
    from cnnedge.datasets import split_images
    from cnnedge.export import export
    from cnnedge.trainer.loop import TrainConfig, train

    run = base / "demo"
    result = train(TrainConfig(preset="digits-cnn", data="digits", out=str(run), epochs=8, verbose=0),
                   log=lambda s: None)
    export(run / "model.keras", int8=True)
    images, labels, classes = split_images(result.card.provenance.dataset_spec, "test")
    return SimpleNamespace(run=run, images=list(images), labels=[int(x) for x in labels], classes=list(classes))


def write_images(demo: SimpleNamespace, folder: Path) -> int:
    """The held-out digits as class folders of PNGs, as `make demo` writes runs/demo/images; returns the count."""
    import cv2

    for i, (img, label) in enumerate(zip(demo.images, demo.labels)):
        path = folder / demo.classes[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), img)
    return len(demo.images)
