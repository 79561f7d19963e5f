"""Data sources for training, and the recorded split that later tools rebuild.

Every source becomes three splits (train, val, test) of BGR uint8 HxWx3 images,
exactly as ``cv2.imread`` would give them, with integer labels and sorted class
names. A source is described by a small JSON-able *spec* (``card.provenance.
dataset_spec``) that holds everything needed to rebuild the same split
deterministically, so calibration and parity checks use the trainer's data:

>>> images, labels, classes = split_images(card.provenance.dataset_spec, "test", limit=100)

This module must not import TensorFlow: the exporter and the runtime's checks
call it. (``cifar10`` and ``cifar100`` are the exception: only Keras reads
their cache, so rebuilding those splits loads Keras.)

Sources:

- ``digits``: scikit-learn's 1,797 real 8x8 scans, upscaled to ``size``.
- ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: ``keras.datasets``.
- a folder: one sub-folder per class, or ``train/`` (``val/``, ``test/``) folders
  of those; images decoded with :func:`cnnedge.runtime.images.read_image`.
- a ``.csv`` file in the Fashion-MNIST layout: a label column, then pixels.
"""
from __future__ import annotations

import csv
import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError, UsageError, arg_name

SPLITS = ("train", "val", "test")
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
MAX_CSV_BYTES = 2 << 30

DEFAULT_SPLITS = {  # (val_split, test_split) when the user gives none
    "digits": (0.15, 0.15),
    "keras": (0.1, 0.0),
    "folder": (0.2, 0.0),
    "csv": (0.2, 0.0),
}


@dataclass
class Split:
    """One split: BGR uint8 images, int labels, class names, and the files that were skipped."""

    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.images)


# ---------------------------------------------------------------------------------------------
# public contract
# ---------------------------------------------------------------------------------------------
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
        return _digits_split(spec, split, limit)
    if source in KERAS_DATASETS:
        return _keras_split(spec, split, limit)
    if source == "folder":
        return _folder_split(spec, split, limit)
    if source == "csv":
        return _csv_split(spec, split, limit)
    raise DataError(f"dataset spec: unknown source {source!r}; expected digits, folder, csv or "
                    f"one of {', '.join(KERAS_DATASETS)}")


def make_spec(data: str, *, seed: int = 0, val_split: float | None = None, test_split: float | None = None,
              size: tuple[int, int] | None = None, csv_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The spec for what the user typed after ``--data`` (validated; paths made absolute)."""
    if not isinstance(data, str) or not data:
        raise UsageError(f"{arg_name('data')} is empty; give digits, mnist, fashion_mnist, cifar10, cifar100, a folder "
                         "or a .csv")
    for name, frac in (("--val-split", val_split), ("--test-split", test_split)):  # tests hold these names
        if frac is not None and not 0.0 <= frac < 1.0:
            raise UsageError(f"{name} must be a fraction in [0, 1), found {frac}")
    if (val_split or 0) + (test_split or 0) >= 0.9:
        raise UsageError(f"{arg_name('val_split')} {val_split} plus {arg_name('test_split')} {test_split} leaves too "
                         "little to train on; "
                         "keep their sum below 0.9")
    if data == "digits":
        dv, dt = DEFAULT_SPLITS["digits"]
        h, w = size or (32, 32)
        if h < 8 or w < 8:
            raise UsageError(f"digits are 8x8 scans; {arg_name('img_size')} must be at least 8x8, found {h}x{w}")
        return {"source": "digits", "size": [int(h), int(w)], "seed": int(seed),
                "val_split": _pick(val_split, dv), "test_split": _pick(test_split, dt)}
    if data in KERAS_DATASETS:
        if test_split:
            raise UsageError(f"{data} has its own test set; {arg_name('test_split')} applies to folders and CSV "
                             "files only")
        return {"source": data, "seed": int(seed), "val_split": _pick(val_split, DEFAULT_SPLITS["keras"][0])}
    p = Path(data).expanduser()
    if not p.exists():
        close = _close_dataset_name(data)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise DataError(f"{arg_name('data')} {data}: no such file or folder{hint}; give digits, mnist, fashion_mnist, "
                        "cifar10, cifar100, a folder with one sub-folder per class, or a .csv file")
    p = p.resolve()
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DataError(f"{arg_name('data')} {data}: a file must be a .csv in the Fashion-MNIST layout (label, "
                            "then pixels)")
        dv, dt = DEFAULT_SPLITS["csv"]
        spec = {"source": "csv", "path": str(p), "seed": int(seed), "val_split": _pick(val_split, dv),
                "test_split": _pick(test_split, dt), "shape": list(csv_shape) if csv_shape else None}
        header, labels, n_cols = _csv_scan(p)
        spec["shape"] = list(_csv_image_shape(p, n_cols, csv_shape))
        spec["classes"] = _csv_classes(labels)
        spec["label_column"] = header[0] if header else None
        return spec
    dv, dt = DEFAULT_SPLITS["folder"]
    spec = {"source": "folder", "path": str(p), "seed": int(seed), "val_split": _pick(val_split, dv),
            "test_split": _pick(test_split, dt)}
    layout = _folder_layout(p)
    spec["classes"] = layout.classes
    spec["has_val_dir"] = layout.val is not None
    spec["has_test_dir"] = layout.test is not None
    spec["subdirs"] = layout.subdirs
    if layout.val is not None and val_split:
        spec["val_split"] = 0.0  # the val/ folder is the validation set
    if layout.test is not None:
        spec["test_split"] = 0.0
    return spec


def describe(spec: dict) -> str:
    """A short human name for a spec (card.provenance.dataset)."""
    src = spec.get("source")
    if src in ("folder", "csv"):
        return str(spec.get("path"))
    if src == "digits":
        h, w = spec.get("size", [32, 32])
        return f"digits (scikit-learn, upscaled to {h}x{w})"
    return str(src)


# ---------------------------------------------------------------------------------------------
# splitting
# ---------------------------------------------------------------------------------------------
def _pick(value: float | None, default: float) -> float:
    return float(default if value is None else value)


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


def _shuffled(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def _take(idx: np.ndarray, limit: int | None) -> np.ndarray:
    return idx if limit is None else idx[:limit]


def _gray_to_bgr(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray, np.uint8)[:, :, None], 3, axis=2)


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def _digits_split(spec: dict, split: str, limit: int | None) -> Split:
    import cv2

    from .._lazy import require

    datasets = require("sklearn.datasets", "the embedded digits")
    d = datasets.load_digits()
    h, w = (int(v) for v in spec.get("size", [32, 32]))
    idx = stratified_indices(d.target, float(spec.get("val_split", 0.15)), float(spec.get("test_split", 0.15)),
                             int(spec.get("seed", 0)))
    sel = _take(idx[split], limit)
    images = []
    for i in sel:
        g = np.clip(np.round(d.images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        up = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) if (h, w) != (8, 8) else g
        images.append(_gray_to_bgr(up))
    return Split(images, d.target[sel].astype(np.int64), [str(c) for c in range(10)])


# ---------------------------------------------------------------------------------------------
# keras.datasets
# ---------------------------------------------------------------------------------------------
def keras_cache_dir() -> Path:
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


def _keras_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); the cache is read directly where that needs no Keras."""
    cache = keras_cache_dir()
    if name == "mnist" and (cache / "mnist.npz").is_file():
        with np.load(cache / "mnist.npz", allow_pickle=False) as f:
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    fm = cache / "fashion-mnist"
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    if name == "fashion_mnist" and all((fm / f).is_file() for f in files):
        a = [read_idx(fm / f) for f in files]
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


def _keras_split(spec: dict, split: str, limit: int | None) -> Split:
    name = spec["source"]
    xtr, ytr, xte, yte = _keras_arrays(name)
    ytr = np.asarray(ytr).reshape(-1).astype(np.int64)
    yte = np.asarray(yte).reshape(-1).astype(np.int64)
    seed = int(spec.get("seed", 0))
    if split == "test":
        x, y, sel = xte, yte, _take(_shuffled(len(yte), seed), limit)
    else:
        idx = stratified_indices(ytr, float(spec.get("val_split", 0.1)), 0.0, seed)
        x, y, sel = xtr, ytr, _take(idx[split], limit)
    images = []
    for i in sel:
        im = x[i]
        images.append(_gray_to_bgr(im) if im.ndim == 2 else np.ascontiguousarray(im[:, :, ::-1]))  # RGB -> BGR
    if name == "fashion_mnist":
        classes = list(FASHION_CLASSES)
    elif name == "cifar10":
        classes = list(CIFAR10_CLASSES)
    else:
        classes = [str(c) for c in range(int(max(ytr.max(), yte.max())) + 1)]
    return Split(images, y[sel], classes)


# ---------------------------------------------------------------------------------------------
# class folders
# ---------------------------------------------------------------------------------------------
@dataclass
class _Layout:
    classes: list[str]
    train: Path
    val: Path | None
    test: Path | None
    subdirs: bool


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _folder_layout(root: Path) -> _Layout:
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    train = root / "train"
    subdirs = train.is_dir()
    base = train if subdirs else root
    classes = [d.name for d in _class_dirs(base)]
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
    empty = [c for c in classes if not any(is_image_path(f) for f in (base / c).iterdir())]
    if empty:
        raise DataError(f"{base}: class folder(s) with no images: {', '.join(empty[:5])}")
    for extra in (val, test):
        if extra is not None:
            unknown = [d.name for d in _class_dirs(extra) if d.name not in classes]
            if unknown:
                raise DataError(f"{extra}: class folder(s) {', '.join(unknown[:5])} are not in {base} "
                                f"({', '.join(classes[:10])})")
    return _Layout(classes, base, val, test, subdirs)


def is_image_path(p: Path) -> bool:
    from ..runtime.images import is_image_file

    return p.is_file() and is_image_file(p)


def _list_files(base: Path, classes: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        d = base / c
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir(), key=lambda f: f.name):
            if is_image_path(f):
                files.append(f)
                labels.append(i)
    return files, np.asarray(labels, np.int64)


def split_files(spec: dict, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files (and labels) of one split of a folder spec, in the split's fixed order."""
    root = Path(spec["path"])
    if not root.is_dir():
        raise DataError(f"{root}: the dataset folder recorded in the card is gone")
    layout = _folder_layout(root)
    classes = list(spec.get("classes") or layout.classes)
    if classes != layout.classes:
        raise DataError(f"{root}: class folders changed since training (card: {', '.join(classes[:10])}; "
                        f"now: {', '.join(layout.classes[:10])})")
    seed = int(spec.get("seed", 0))
    val_split = float(spec.get("val_split", 0.2))
    test_split = float(spec.get("test_split", 0.0))
    if split == "test" and layout.test is not None:
        files, labels = _list_files(layout.test, classes)
        order = _shuffled(len(files), seed)
        return [files[i] for i in order], labels[order], classes
    if split == "val" and layout.val is not None:
        files, labels = _list_files(layout.val, classes)
        order = _shuffled(len(files), seed)
        return [files[i] for i in order], labels[order], classes
    files, labels = _list_files(layout.train, classes)
    vs = 0.0 if layout.val is not None else val_split
    ts = 0.0 if layout.test is not None else test_split
    idx = stratified_indices(labels, vs, ts, seed)
    if split == "test" and layout.test is None and ts == 0.0:
        split = "val"  # no separate test set: test accuracy is measured on the validation split
        if layout.val is not None:
            vfiles, vlabels = _list_files(layout.val, classes)
            order = _shuffled(len(vfiles), seed)
            return [vfiles[i] for i in order], vlabels[order], classes
    sel = idx[split]
    return [files[i] for i in sel], labels[sel], classes


def read_files(files: Iterable[Path], labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, list[tuple[str, str]]]:
    """Decode files with the runtime's reader; unreadable ones are skipped and reported."""
    from ..runtime.images import ImageError, read_image

    images, keep, skipped = [], [], []
    for i, f in enumerate(files):
        try:
            images.append(read_image(f))
            keep.append(i)
        except ImageError as exc:
            skipped.append((str(f), exc.reason))
    return images, np.asarray(labels)[keep].astype(np.int64), skipped


def _folder_split(spec: dict, split: str, limit: int | None) -> Split:
    files, labels, classes = split_files(spec, split)
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    images, labels, skipped = read_files(files, labels)
    return Split(images, labels, classes, skipped)


# ---------------------------------------------------------------------------------------------
# CSV (Fashion-MNIST layout)
# ---------------------------------------------------------------------------------------------
def _csv_scan(path: Path) -> tuple[list[str] | None, list[str], int]:
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


def _csv_image_shape(path: Path, n: int, given: Sequence[int] | None) -> tuple[int, int, int]:
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


def _csv_classes(labels: Sequence[str]) -> list[str]:
    uniq = sorted(set(labels), key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    if len(uniq) < 2:
        raise DataError(f"the CSV has only one label ({uniq[0]!r}); a classifier needs at least 2 classes")
    if all(_is_number(u) and float(u).is_integer() for u in uniq):
        ints = sorted(int(float(u)) for u in uniq)
        return [str(i) for i in ints]
    return list(uniq)


def _csv_split(spec: dict, split: str, limit: int | None) -> Split:
    path = Path(spec["path"])
    if not path.is_file():
        raise DataError(f"{path}: the CSV recorded in the card is gone")
    h, w, c = (int(v) for v in spec["shape"])
    classes = list(spec["classes"])
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
            if len(row) - 1 != h * w * c:
                raise DataError(f"{path}: line {lineno} has {len(row) - 1} pixel columns; expected {h * w * c}")
            rows.append(row[1:])
            labels.append(index[lab])
            linenos.append(lineno)
    y = np.asarray(labels, np.int64)
    idx = stratified_indices(y, float(spec.get("val_split", 0.2)), float(spec.get("test_split", 0.0)),
                             int(spec.get("seed", 0)))
    part = split
    if split == "test" and float(spec.get("test_split", 0.0)) == 0.0:
        part = "val"
    sel = _take(idx[part], limit)
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
        images.append(_gray_to_bgr(im[:, :, 0]) if c == 1 else np.ascontiguousarray(im[:, :, ::-1]))
    return Split(images, y[sel], classes)


def _close_dataset_name(name: str) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, ["digits", *KERAS_DATASETS], n=1, cutoff=0.6)
    return m[0] if m else None
