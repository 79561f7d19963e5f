"""Built-in datasets: scikit-learn's digits, ``keras.datasets`` (read from Keras' cache without Keras where
it can be) and MNIST's IDX files. Only cifar10 and cifar100 need Keras itself, and load it when read."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError
from .splits import Split, gray_to_bgr, shuffled, stratified_indices, take

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
# Where keras.datasets caches each dataset, relative to ~/.keras/datasets/ (or $KERAS_HOME/datasets).
KERAS_CACHE = {
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion-mnist/ (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
    "cifar10": "cifar-10-batches-py-target/ (from cifar-10-python.tar.gz)",
    "cifar100": "cifar-100-python-target/ (from cifar-100-python.tar.gz)",
}
KERAS_ORIGIN = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "fashion_mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
FASHION_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")


def digits_split(spec: dict, split: str, limit: int | None) -> Split:
    """scikit-learn's 1,797 real 8x8 scans, upscaled to the spec's size."""
    from .._lazy import require
    from ..imaging.opencv import opencv

    cv2 = opencv()

    datasets = require("sklearn.datasets", "the embedded digits")
    d = datasets.load_digits()
    h, w = (int(v) for v in spec.get("size", [32, 32]))
    idx = stratified_indices(d.target, float(spec.get("val_split", 0.15)), float(spec.get("test_split", 0.15)),
                             int(spec.get("seed", 0)))
    sel = take(idx[split], limit)
    images = []
    for i in sel:
        g = np.clip(np.round(d.images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        up = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) if (h, w) != (8, 8) else g
        images.append(gray_to_bgr(up))
    return Split(images, d.target[sel].astype(np.int64), [str(c) for c in range(10)])


def keras_cache_dir() -> Path:
    """Where keras.datasets keeps its downloads; an offline machine is told to place them here."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "datasets"


def _offline_error(name: str, exc: BaseException | None) -> DataError:
    why = f" ({str(exc).strip().splitlines()[0][:160]})" if exc is not None and str(exc).strip() else ""
    return DataError(f"cannot load {name}: not in the Keras cache and the download failed{why}; "
                     f"place {KERAS_CACHE[name]} in {keras_cache_dir()}/ (from {KERAS_ORIGIN[name]}) and run again")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not, to a uint8 array."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{p}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{p}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{p}: IDX header says {dims} but holds {body.size} values")
    return body.reshape(dims)


def keras_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); the cache is read directly where that needs no Keras."""
    cache = keras_cache_dir()
    if name == "mnist" and (cache / "mnist.npz").is_file():
        with np.load(cache / "mnist.npz", allow_pickle=False) as f:
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    fm = cache / "fashion-mnist"
    if name == "fashion_mnist" and all((fm / f).is_file() for f in FASHION_FILES):
        a = [read_idx(fm / f) for f in FASHION_FILES]
        return a[0], a[1], a[2], a[3]
    try:
        from .._lazy import require

        keras = require("keras", f"the {name} dataset")
        (xtr, ytr), (xte, yte) = getattr(keras.datasets, name).load_data()
    except DataError:
        raise
    except Exception as exc:  # offline: URL errors of many kinds
        raise _offline_error(name, exc) from None
    return xtr, ytr.reshape(-1), xte, yte.reshape(-1)


def keras_split(spec: dict, split: str, limit: int | None) -> Split:
    """A keras.datasets split: its own test set; val taken from train, stratified and seeded."""
    name = spec["source"]
    xtr, ytr, xte, yte = keras_arrays(name)
    ytr = np.asarray(ytr).reshape(-1).astype(np.int64)
    yte = np.asarray(yte).reshape(-1).astype(np.int64)
    seed = int(spec.get("seed", 0))
    if split == "test":
        x, y, sel = xte, yte, take(shuffled(len(yte), seed), limit)
    else:
        idx = stratified_indices(ytr, float(spec.get("val_split", 0.1)), 0.0, seed)
        x, y, sel = xtr, ytr, take(idx[split], limit)
    images = []
    for i in sel:
        im = x[i]
        images.append(gray_to_bgr(im) if im.ndim == 2 else np.ascontiguousarray(im[:, :, ::-1]))  # RGB -> BGR
    if name == "fashion_mnist":
        classes = list(FASHION_CLASSES)
    elif name == "cifar10":
        classes = list(CIFAR10_CLASSES)
    else:
        classes = [str(c) for c in range(int(max(ytr.max(), yte.max())) + 1)]
    return Split(images, y[sel], classes)
