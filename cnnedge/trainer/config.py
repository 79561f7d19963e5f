"""What a training run is asked to do.

:class:`TrainConfig` is the caller's request, with the preset's defaults left
open; :class:`RunSettings` is the request resolved against the preset and the
data, validated in one place (:func:`validate`), and stored as
``train_config.json`` so that ``--resume`` continues with exactly the same
settings. Errors name the argument (``batch_size``); a CLI maps the names to
its flags with :func:`cnnedge.errors.argument_names`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..datasets.specs import MAX_SEED
from ..errors import UsageError, arg_name, argument_names
from ..imaging.opencv import MAX_PIXELS
from .tfdata import Augment

# The bounds of every number a run takes; cnn-train's --help states each.
MAX_SIDE = 4096
MAX_EPOCHS = 100_000       # also the most --patience means anything
MAX_BATCH = 65_536
MIN_LR, MAX_LR = 1e-8, 10.0  # below 1e-8, Adam's steps vanish in float32 weights; MAX_LR excluded


@dataclass
class TrainConfig:
    """Everything one training run needs; the CLI fills it from flags."""

    preset: str
    data: str = "digits"
    out: str = "runs/train"
    epochs: int | None = None          # None: the preset's default
    batch_size: int | None = None      # None: the preset's default
    img_size: tuple[int, int] | None = None  # None: the data's own size, else the preset's
    channels: int = 3
    val_split: float | None = None
    test_split: float | None = None
    seed: int = 0
    patience: int = 5
    weights: str | None = None         # transfer presets: imagenet | none | PATH
    augment: Augment = field(default_factory=Augment)
    learning_rate: float | None = None
    mixed_precision: bool = False
    csv_shape: tuple[int, ...] | None = None
    force: bool = False
    resize: dict[str, Any] = field(default_factory=dict)  # the card's resize, crop_pct, pad_value, interpolation
    verbose: int | None = None         # Keras fit verbosity; None: a bar on a terminal, a line per epoch otherwise


@dataclass(frozen=True)
class RunSettings:
    """One run's resolved settings (train_config.json); constructing one validates it."""

    preset: str
    epochs: int
    batch_size: int
    channels: int
    seed: int
    patience: int
    learning_rate: float
    dataset_spec: dict[str, Any]
    img_size: tuple[int, int] | None = None
    weights: str | None = None
    augment: Augment = field(default_factory=Augment)
    mixed_precision: bool = False
    data: str = "digits"
    resize: dict[str, Any] = field(default_factory=dict)  # Preprocess resize, crop_pct, pad_value, interpolation

    def __post_init__(self) -> None:
        validate({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["img_size"] = list(self.img_size) if self.img_size else None
        out["augment"] = self.augment.to_dict()
        return out

    @classmethod
    def from_json(cls, obj: Any, path: Path) -> RunSettings:
        """The settings a train_config.json holds, or a one-line UsageError saying what is wrong with it."""
        def bad(what: str) -> UsageError:
            return UsageError(f"{arg_name('run_dir')}: {path} is not a valid cnn-train config ({what}); start a new "
                              f"run with {arg_name('force')} instead")

        if not isinstance(obj, dict):
            raise bad(f"expected a JSON object, found {type(obj).__name__}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in obj]
        if missing:
            raise bad(f"missing {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in obj.items() if k in known}
        with argument_names({}):  # in the file, the keys are the names
            try:
                aug = values.get("augment", {})
                values["augment"] = Augment(**aug) if isinstance(aug, dict) else None
            except (TypeError, UsageError):
                values["augment"] = None
            if values["augment"] is None:
                raise bad(f"augment must be an object of augmentation settings, found {aug!r}")
            size = values.get("img_size")
            if _is_pair(size):
                values["img_size"] = tuple(size)
            elif size is not None:
                raise bad(f"img_size must be null or [height, width], found {size!r}")
            try:
                return cls(**values)
            except UsageError as exc:
                raise bad(str(exc)) from None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_int(x) and x > 0 for x in v)


def _spec_problem(spec: Any) -> str | None:
    if not (isinstance(spec, dict) and isinstance(spec.get("source"), str)):
        return f"{arg_name('dataset_spec')} must be an object with a 'source', found {spec!r}"
    need = {"folder": ("path", "classes"), "csv": ("path", "classes", "shape")}.get(spec["source"], ())
    lacking = [k for k in need if k not in spec]
    if lacking:
        return f"{arg_name('dataset_spec')} of a {spec['source']} source lacks {', '.join(lacking)}"
    classes = spec.get("classes")
    if "classes" in need and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return f"{arg_name('dataset_spec')} classes must be a list of names, found {spec['classes']!r}"
    if "shape" in need and not (isinstance(spec["shape"], list) and len(spec["shape"]) == 3
                                and all(_int(v) and v > 0 for v in spec["shape"])):
        return f"{arg_name('dataset_spec')} shape must be [height, width, channels], found {spec['shape']!r}"
    return None


def _size_problem(size: Any) -> str | None:
    if size is None:
        return None
    if not _is_pair(size):
        return f"{arg_name('img_size')} must be null or [height, width], found {size!r}"
    h, w = size
    if not (4 <= h <= MAX_SIDE and 4 <= w <= MAX_SIDE):
        return (f"{arg_name('img_size')} {h}x{w} is impossible; give H[xW] between 4 and {MAX_SIDE} "
                "(e.g. 32 or 224x224)")
    return None


RESIZE_KEYS = ("resize", "crop_pct", "pad_value", "interpolation")


def _resize_problem(name: str, values: Any) -> str | None:
    """The resize part of the card, checked as the card checks it."""
    from ..artifact.card import Preprocess
    from ..errors import CardError

    if not isinstance(values, dict) or set(values) - set(RESIZE_KEYS):
        return f"{arg_name(name)} must be an object with {', '.join(RESIZE_KEYS)}, found {values!r}"
    try:
        Preprocess(**values)
    except CardError as exc:
        return str(exc).replace("model card: preprocess.", "")
    return None


def _simple(ok: Callable[[Any], bool], want: str) -> Callable[[str, Any], str | None]:
    return lambda name, v: None if ok(v) else f"{arg_name(name)} must be {want}, found {v!r}"


# field -> (name, value) -> a problem, or None
CHECKS: dict[str, Callable[[str, Any], str | None]] = {
    "preset": _simple(lambda v: isinstance(v, str) and bool(v), "a preset name"),
    "epochs": _simple(lambda v: _int(v) and 0 < v <= MAX_EPOCHS, f"a positive integer up to {MAX_EPOCHS}"),
    "batch_size": _simple(lambda v: _int(v) and 0 < v <= MAX_BATCH, f"a positive integer up to {MAX_BATCH}"),
    "channels": _simple(lambda v: _int(v) and v in (1, 3), "1 or 3"),
    "seed": _simple(lambda v: _int(v) and 0 <= v <= MAX_SEED, f"a whole number from 0 to {MAX_SEED}"),
    "patience": _simple(lambda v: _int(v) and 0 <= v <= MAX_EPOCHS,
                        f"an integer from 0 (no early stopping) to {MAX_EPOCHS}"),
    "learning_rate": _simple(lambda v: _num(v) and MIN_LR <= v < MAX_LR,
                             f"a number from {MIN_LR:g} to below {MAX_LR:g}"),
    "img_size": lambda name, v: _size_problem(v),
    "weights": _simple(lambda v: v is None or isinstance(v, str), "null or a string"),
    "augment": _simple(lambda v: isinstance(v, Augment), "an Augment"),
    "mixed_precision": _simple(lambda v: isinstance(v, bool), "true or false"),
    "data": _simple(lambda v: isinstance(v, str), "a string"),
    "dataset_spec": lambda name, v: _spec_problem(v),
    "resize": _resize_problem,
}


def validate(values: Mapping[str, Any]) -> None:
    """The one place run settings are checked: a UsageError naming the first bad argument."""
    for name, value in values.items():
        problem = CHECKS[name](name, value)
        if problem:
            raise UsageError(problem)


def check_crop(height: int, width: int, resize: str, crop_pct: float) -> None:
    """Refuse a crop_pct whose resize before the centre crop (input / crop_pct) passes the decode pixel limit:
    the runtime would refuse the model's card, and training would resize every image that large first."""
    if crop_pct == 1 or resize in ("letterbox", "pad"):
        return
    th, tw = height / crop_pct, width / crop_pct
    if math.isfinite(th * tw) and math.floor(th) * math.floor(tw) <= MAX_PIXELS:
        return
    least = math.sqrt(height * width / MAX_PIXELS)
    raise UsageError(f"{arg_name('crop_pct')} {crop_pct:g} resizes every image to {th:.6g}x{tw:.6g} before the "
                     f"crop to {height}x{width}, over the {MAX_PIXELS:,}-pixel limit; give the fraction of the "
                     f"resized image to keep, at least {math.ceil(least * 1e4) / 1e4:g} here (e.g. 0.875)")
