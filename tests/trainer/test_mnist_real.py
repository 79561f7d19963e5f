"""The trainer reproduces the MNIST tutorial on real scans, not only on the embedded digits.

The 10,000 real MNIST test digits (../shared/data/mnist, IDX format) are written
out as a class folder of PNGs with OpenCV, then `cnn-train --preset mnist-cnn
--data DIR --val-split 0.2 --epochs 5` must reach at least 95.5% test accuracy
(a plain Keras script with the tutorial's network on the same 8,000/2,000 split
gets about 96%).
"""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
IMAGES = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
LABELS = MNIST_DIR / "t10k-labels-idx1-ubyte.gz"


@pytest.mark.slow
@pytest.mark.skipif(not (IMAGES.is_file() and LABELS.is_file()),
                    reason=f"real MNIST test digits not found in {MNIST_DIR} (t10k-*-ubyte.gz)")
def test_mnist_cnn_on_real_mnist_folder(tmp_path: Path) -> None:
    import cv2

    from cnnedge.cli._run import run_cli
    from cnnedge.cli.train import main
    from cnnedge.datasets import read_idx

    x, y = read_idx(IMAGES), read_idx(LABELS)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    data = tmp_path / "mnist_png"
    for c in range(10):
        (data / str(c)).mkdir(parents=True)
    for i, (img, label) in enumerate(zip(x, y)):
        assert cv2.imwrite(str(data / str(int(label)) / f"{i:05d}.png"), img)

    out = tmp_path / "run"
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = run_cli("cnn-train", main, ["--preset", "mnist-cnn", "--data", str(data), "--out", str(out),
                                           "--val-split", "0.2", "--epochs", "5", "--quiet"])
    assert code == 0, buf.getvalue()[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"mnist-cnn on 8,000 real MNIST scans: test accuracy {metrics['test_accuracy']:.4f} "
          f"on {metrics['test_images']} images")
    assert metrics["test_images"] == 2000
    assert metrics["train_images"] == 8000
    assert metrics["test_accuracy"] >= 0.955
    assert "test accuracy" in buf.getvalue() and str(out) in buf.getvalue()
