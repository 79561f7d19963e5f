"""A dataset *spec*: the small JSON-able dict a card records (``provenance.dataset_spec``) that holds
everything needed to rebuild the same split, made from what the user typed after ``--data``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError, UsageError, arg_name
from .csvfile import csv_fields
from .folderset import folder_layout
from .readers import KERAS_DATASETS

DATASETS = ("digits", *KERAS_DATASETS)
MAX_SEED = 2**32 - 1  # Keras' set_random_seed takes 0 .. 2**32 - 1
DEFAULT_SPLITS = {  # (val_split, test_split) when the user gives none
    "digits": (0.15, 0.15),
    "keras": (0.1, 0.0),
    "folder": (0.2, 0.0),
    "csv": (0.2, 0.0),
}


def _pick(value: float | None, default: float) -> float:
    return float(default if value is None else value)


def make_spec(data: str, *, seed: int = 0, val_split: float | None = None, test_split: float | None = None,
              size: tuple[int, int] | None = None, csv_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The spec for what the user typed after ``--data`` (validated; paths made absolute)."""
    if not isinstance(data, str) or not data:
        raise UsageError(f"{arg_name('data')} is empty; give digits, mnist, fashion_mnist, cifar10, cifar100, a folder "
                         "or a .csv")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{arg_name('seed')} must be a whole number from 0 to {MAX_SEED}, found {seed!r}")
    for name, frac in (("--val-split", val_split), ("--test-split", test_split)):  # tests hold these names
        if frac is not None and not 0.0 <= frac < 1.0:
            raise UsageError(f"{name} must be a fraction in [0, 1), found {frac}")
    if (val_split or 0) + (test_split or 0) >= 0.9:
        raise UsageError(f"{arg_name('val_split')} {val_split} plus {arg_name('test_split')} {test_split} leaves too "
                         "little to train on; "
                         "keep their sum below 0.9")
    if csv_shape is not None and (data in DATASETS or Path(data).expanduser().is_dir()):
        raise UsageError(f"{arg_name('csv_shape')} applies to a .csv {arg_name('data')}, not to {data}; drop it")
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
        spec.update(csv_fields(p, csv_shape))
        return spec
    return _folder_spec(p, seed, val_split, test_split)


def _folder_spec(p: Path, seed: int, val_split: float | None, test_split: float | None) -> dict[str, Any]:
    dv, dt = DEFAULT_SPLITS["folder"]
    spec = {"source": "folder", "path": str(p), "seed": int(seed), "val_split": _pick(val_split, dv),
            "test_split": _pick(test_split, dt)}
    layout = folder_layout(p)
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


def _close_dataset_name(name: str) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, list(DATASETS), n=1, cutoff=0.6)
    return m[0] if m else None
