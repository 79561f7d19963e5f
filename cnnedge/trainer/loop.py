"""The training loop and its run directory.

A run directory holds ``model.keras`` (the best checkpoint so far, written
atomically), ``card.json`` beside it, ``train_config.json`` (what was asked, for
``--resume``), ``history.csv``, ``loss.png``, ``accuracy.png``, ``confusion.png``
and ``metrics.json``. Ctrl-C or a crash keeps the best model so far and a valid
card; ``metrics.json`` appears only when a run completes.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..atomic import atomic_path
from ..card import CARD_FILENAME, InputSpec, ModelCard, Preprocess, Provenance, now_iso, sha256_file
from ..errors import CardError, DataError, FileExistsRefused, UsageError
from . import data as data_mod
from .tfdata import Augment, make_dataset, prepare_pixels, stream_dataset
from .presets import create_model, get_preset, weights_arg
from .report import metrics_from, plot_confusion, plot_history, read_history, write_history, write_json

MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
ARTIFACTS = (MODEL_FILE, CARD_FILENAME, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, "loss.png", "accuracy.png",
             "confusion.png")
# What cnn-export makes from model.keras in the run folder: stale once --force replaces the model.
EXPORT_PATTERNS = ("model.onnx", "model.*.onnx", "model.onnx.json", "model.*.onnx.json", "*.engine", "*.engine.json",
                   "export_report.json", "model.int8.calib-*.json")
# --force sets the old run aside here until the new run's first checkpoint, and puts it back on a failure.
REPLACED_DIR = ".cnn-train-replaced"


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
    resize: dict[str, Any] = field(default_factory=dict)  # Preprocess resize, crop_pct, pad_value, interpolation
    verbose: int | None = None         # Keras fit verbosity; None: a bar on a terminal, a line per epoch otherwise


@dataclass
class TrainResult:
    run_dir: Path
    test_accuracy: float
    metrics: dict[str, Any]
    card: ModelCard
    epochs_run: int
    skipped: list[tuple[str, str]]

    def summary(self) -> str:
        m = self.metrics
        n = len(self.skipped)
        skipped = f"; {n} unreadable image{'s' if n != 1 else ''} skipped" if n else ""
        return (f"{self.card.name}: test accuracy {self.test_accuracy:.2%} ({m['test_correct']}/{m['test_images']} "
                f"test images{skipped}) -> {self.run_dir}")


def _resize_settings(values: Any, bad: Callable[[str], Exception]) -> dict[str, Any]:
    """The resize part of the card (mode, crop_pct, pad_value, interpolation), checked as the card checks it."""
    keys = ("resize", "crop_pct", "pad_value", "interpolation")
    if not isinstance(values, dict) or set(values) - set(keys):
        raise bad(f"resize must be an object with {', '.join(keys)}, found {values!r}")
    try:
        Preprocess(**values)
    except CardError as exc:
        raise bad(str(exc).replace("model card: preprocess.", "")) from None
    return dict(values)


def is_complete(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a finished run (model, card and metrics)."""
    d = Path(run_dir)
    return all((d / f).is_file() for f in (MODEL_FILE, CARD_FILENAME, METRICS_FILE))


def _parse_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = (int(v) for v in size)
    return h, w


# ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, callbacks: Sequence[Any] = (), log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg.preset`` on ``cfg.data`` into ``cfg.out``; returns the test metrics.

    ``callbacks`` are extra Keras callbacks, run after the checkpointing one.
    """
    log = log or (lambda s: print(s, flush=True))
    preset = get_preset(cfg.preset)
    out = Path(cfg.out)
    _check_out(out, cfg.force)
    _check_numbers(cfg)
    spec = data_mod.make_spec(cfg.data, seed=cfg.seed, val_split=cfg.val_split, test_split=cfg.test_split,
                              size=cfg.img_size, csv_shape=cfg.csv_shape)
    epochs = cfg.epochs or preset.epochs
    batch = cfg.batch_size or preset.batch_size
    weights = cfg.weights if cfg.weights is not None else ("imagenet" if preset.transfer else None)
    if weights not in (None, "none") and not preset.transfer:
        raise UsageError(f"--weights applies to the transfer presets (vgg16-transfer, vgg19-transfer, "
                         f"mobilenetv2-transfer), not to {preset.name}")
    weights_arg(weights)  # a missing weights file fails here, before the data is loaded
    settings = {"preset": preset.name, "epochs": epochs, "batch_size": batch, "channels": cfg.channels,
                "img_size": list(cfg.img_size) if cfg.img_size else None, "seed": cfg.seed,
                "patience": cfg.patience, "weights": weights, "augment": cfg.augment.to_dict(),
                "learning_rate": cfg.learning_rate or preset.learning_rate,
                "mixed_precision": cfg.mixed_precision, "data": cfg.data, "dataset_spec": spec,
                "resize": _resize_settings(cfg.resize, UsageError)}
    # the old run (if any) is replaced only once the new run has loaded its data and saved a first checkpoint
    return _run(settings, out, callbacks, log, resume=False, verbose=cfg.verbose, replace=cfg.force)


def resume(run_dir: str | os.PathLike, epochs: int | None = None, callbacks: Sequence[Any] = (),
           log: Callable[[str], None] | None = None, verbose: int | None = None,
           patience: int | None = None) -> TrainResult:
    """Continue an interrupted run from its best checkpoint, up to ``epochs`` in all; ``patience``
    replaces the run's early-stopping patience (0: none)."""
    log = log or (lambda s: print(s, flush=True))
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(f"--resume {d}: no such run folder")
    _recover_replaced(d, log)
    if not (d / CONFIG_FILE).is_file() or not (d / MODEL_FILE).is_file():
        raise UsageError(f"--resume {d}: not a cnn-train run with a checkpoint (needs {CONFIG_FILE} and "
                         f"{MODEL_FILE}); start a new run instead")
    try:
        settings = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume {d}: cannot read {CONFIG_FILE} ({exc})") from None
    _check_settings(settings, d / CONFIG_FILE)
    if epochs is not None:
        _positive("--epochs", epochs)
        settings["epochs"] = int(epochs)
    if patience is not None:
        if not isinstance(patience, int) or patience < 0:
            raise UsageError(f"--patience must be >= 0 (0: no early stopping), found {patience}")
        settings["patience"] = int(patience)
    return _run(settings, d, callbacks, log, resume=True, verbose=verbose)


# ---------------------------------------------------------------------------------------------
def _check_settings(settings: Any, path: Path) -> None:
    """A one-line UsageError unless ``settings`` (a train_config.json) is what :func:`train` writes."""
    def bad(what: str) -> UsageError:
        return UsageError(f"--resume: {path} is not a valid cnn-train config ({what}); start a new run with "
                          f"--force instead")

    if not isinstance(settings, dict):
        raise bad(f"expected a JSON object, found {type(settings).__name__}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "preset": (lambda v: isinstance(v, str) and bool(v), "a preset name"),
        "epochs": (lambda v: is_int(v) and v > 0, "a positive integer"),
        "batch_size": (lambda v: is_int(v) and v > 0, "a positive integer"),
        "channels": (lambda v: v in (1, 3) and is_int(v), "1 or 3"),
        "seed": (is_int, "an integer"),
        "patience": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        "learning_rate": (lambda v: is_num(v) and 0 < v < 10, "a small positive number"),
        "dataset_spec": (lambda v: isinstance(v, dict) and isinstance(v.get("source"), str),
                         "an object with a 'source'"),
    }
    missing = [k for k in checks if k not in settings]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    for key, (ok, want) in checks.items():
        if not ok(settings[key]):
            raise bad(f"{key} must be {want}, found {settings[key]!r}")
    spec = settings["dataset_spec"]
    need = {"folder": ("path", "classes"), "csv": ("path", "classes", "shape")}.get(spec["source"], ())
    lacking = [k for k in need if k not in spec]
    if lacking:
        raise bad(f"dataset_spec of a {spec['source']} source lacks {', '.join(lacking)}")
    if "classes" in need and not (isinstance(spec["classes"], list) and all(isinstance(c, str) for c in spec["classes"])):
        raise bad(f"dataset_spec classes must be a list of names, found {spec['classes']!r}")
    if "shape" in need and not (isinstance(spec["shape"], list) and len(spec["shape"]) == 3
                                and all(is_int(v) and v > 0 for v in spec["shape"])):
        raise bad(f"dataset_spec shape must be [height, width, channels], found {spec['shape']!r}")
    size = settings.get("img_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and v > 0 for v in size)):
        raise bad(f"img_size must be null or [height, width], found {size!r}")
    if not isinstance(settings.get("weights"), (str, type(None))):
        raise bad(f"weights must be null or a string, found {settings['weights']!r}")
    if not isinstance(settings.get("mixed_precision", False), bool):
        raise bad(f"mixed_precision must be true or false, found {settings['mixed_precision']!r}")
    _resize_settings(settings.get("resize", {}), bad)
    aug = settings.get("augment", {})
    try:
        if not isinstance(aug, dict):
            raise TypeError
        Augment(**aug)
    except (TypeError, ValueError, UsageError):
        raise bad(f"augment must be an object of augmentation settings, found {aug!r}") from None


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir():
        _recover_replaced(out, None)
    # a run is a folder with a checkpoint; one interrupted before its first (train_config.json and perhaps
    # history.csv only) is not, and a new run simply starts over in it
    if out.is_dir() and not force and (out / MODEL_FILE).exists():
        ours = [n for n in ARTIFACTS if (out / n).exists()]
        if ours:
            raise FileExistsRefused(f"--out {out}: already holds a run ({', '.join(ours[:4])}); pass --force to "
                                    f"overwrite it, --resume {out} to continue it, or choose another --out")


def _export_outputs(out: Path) -> list[Path]:
    found: dict[Path, None] = {}
    for pattern in EXPORT_PATTERNS:
        for p in sorted(out.glob(pattern)):
            if p.is_file() or p.is_symlink():
                found[p] = None
    return list(found)


def _set_aside(out: Path, exports: bool) -> Path | None:
    """Move the run files already in ``out`` (and, with ``exports``, the export outputs made from its model)
    into ``out/REPLACED_DIR``; None when there were none. Nothing else in ``out`` is touched."""
    if not out.is_dir():
        return None
    move = [out / n for n in ARTIFACTS if (out / n).is_file()] + (_export_outputs(out) if exports else [])
    if not move:
        return None
    aside = out / REPLACED_DIR
    aside.mkdir(exist_ok=True)
    for p in move:
        os.replace(p, aside / p.name)
    return aside


def _restore(out: Path, aside: Path) -> None:
    """Undo :func:`_set_aside`: drop what the failed new run wrote, put the old files back."""
    for name in ARTIFACTS:
        (out / name).unlink(missing_ok=True)
    for p in sorted(aside.iterdir()):
        target = out / p.name
        if not target.exists():
            os.replace(p, target)
    shutil.rmtree(aside, ignore_errors=True)


def _recover_replaced(out: Path, log: Callable[[str], None] | None) -> None:
    """A run killed between setting the old run aside and its first checkpoint: put the old run back."""
    aside = out / REPLACED_DIR
    if not aside.is_dir():
        return
    if (out / MODEL_FILE).is_file() and (out / CARD_FILENAME).is_file():
        shutil.rmtree(aside, ignore_errors=True)  # the new run had its checkpoint: the old one was replaced
        return
    _restore(out, aside)
    if log:
        log(f"train: restored the run in {out} that an unfinished --force run had set aside")


def _positive(name: str, v: Any) -> None:
    if v is not None and (not isinstance(v, int) or v <= 0):
        raise UsageError(f"{name} must be a positive integer, found {v}")


def _check_numbers(cfg: TrainConfig) -> None:
    _positive("--epochs", cfg.epochs)
    _positive("--batch-size", cfg.batch_size)
    if cfg.patience < 0:
        raise UsageError(f"--patience must be >= 0 (0: no early stopping), found {cfg.patience}")
    if cfg.channels not in (1, 3):
        raise UsageError(f"--channels must be 1 or 3, found {cfg.channels}")
    if cfg.img_size is not None:
        h, w = cfg.img_size
        if not (4 <= h <= 4096 and 4 <= w <= 4096):
            raise UsageError(f"--img-size {h}x{w} is impossible; give H[xW] between 4 and 4096 (e.g. 32 or 224x224)")
    if cfg.learning_rate is not None and not 0 < cfg.learning_rate < 10:
        raise UsageError(f"--learning-rate must be a small positive number, found {cfg.learning_rate}")


def _native_size(spec: dict, train_images: Sequence[np.ndarray]) -> tuple[int, int] | None:
    src = spec["source"]
    if src == "digits":
        return _parse_size(spec["size"])
    if src == "csv":
        return int(spec["shape"][0]), int(spec["shape"][1])
    if src in data_mod.KERAS_DATASETS and train_images:
        return tuple(train_images[0].shape[:2])  # type: ignore[return-value]
    return None  # folders: images of any size; the preset's size


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("cnnedge", "tensorflow", "keras", "numpy", "cv2"):
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m else None
        if v:
            out["opencv" if mod == "cv2" else mod] = str(v)
    return out


def _require_gpu() -> None:
    from .._lazy import require

    tf = require("tensorflow", "training")
    if not tf.config.list_physical_devices("GPU"):
        raise UsageError("--mixed-precision needs a GPU, and TensorFlow sees none here; drop the flag to train "
                         "in float32 on the CPU (install 'cnnedge[train-gpu]' on a GPU machine)")


@dataclass
class _Prepared:
    """One split ready for tf.data: prepared pixels in memory, or files decoded while streaming."""

    pixels: np.ndarray | None
    labels: np.ndarray
    files: list[Path] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def max_train_bytes() -> int:
    """Prepared pixels above this size stream from the files each epoch instead of living in memory."""
    try:
        return int(os.environ.get("CNNEDGE_MAX_TRAIN_BYTES", 3 << 30))
    except ValueError:
        raise UsageError("CNNEDGE_MAX_TRAIN_BYTES must be a number of bytes") from None


def _prepare_folder(spec: dict, card: ModelCard) -> dict[str, _Prepared]:
    """Decode and prepare each file once, keeping only the model-size pixels (or stream them)."""
    from ..runtime.images import ImageError, read_image
    from ..runtime.preprocess import prepare_image

    lists = {k: data_mod.split_files(spec, k)[:2] for k in data_mod.SPLITS}
    n = len({f for files, _ in lists.values() for f in files})
    if n * card.input.height * card.input.width * card.input.channels > max_train_bytes():
        return {k: _Prepared(None, np.asarray(lab, np.int64), list(files)) for k, (files, lab) in lists.items()}
    def load(f: Path) -> np.ndarray | tuple[str, str]:
        try:
            return prepare_image(read_image(f), card.input, card.preprocess)
        except ImageError as exc:
            return (str(f), exc.reason)

    unique = list(dict.fromkeys(f for files, _ in lists.values() for f in files))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV releases the GIL
        cache = dict(zip(unique, pool.map(load, unique, chunksize=64)))
    out = {}
    for k, (files, lab) in lists.items():
        arrays, keep, skipped = [], [], []
        for i, f in enumerate(files):
            item = cache[f]
            if isinstance(item, tuple):
                skipped.append(item)
            else:
                arrays.append(item)
                keep.append(i)
        shape = (0, card.input.height, card.input.width, card.input.channels)
        pixels = np.stack(arrays).astype(np.uint8, copy=False) if arrays else np.zeros(shape, np.uint8)
        out[k] = _Prepared(pixels, np.asarray(lab, np.int64)[keep], None, skipped)
    return out


def _skipped(data: dict[str, _Prepared]) -> list[tuple[str, str]]:
    # the test split may be the validation split: name each skipped file once
    return list(dict.fromkeys(s for sp in data.values() for s in sp.skipped))


def _log_skipped(skipped: list[tuple[str, str]], log: Callable[[str], None]) -> None:
    if skipped:
        names = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log(f"data: skipped {len(skipped)} unreadable image(s): {names}{more}")


def _check_sizes(spec: dict, data: dict[str, _Prepared], n_classes: int, log: Callable[[str], None],
                 seconds: float) -> None:
    if not len(data["train"]):
        raise DataError(f"{data_mod.describe(spec)}: no readable training images")
    if not len(data["val"]):
        raise DataError(f"{data_mod.describe(spec)}: the validation split is empty; give --val-split (e.g. 0.2) "
                        "or a val/ folder")
    counts = ", ".join(f"{k} {len(v)}" for k, v in data.items())
    streamed = " (streamed from the files each epoch)" if data["train"].files is not None else ""
    log(f"data: {data_mod.describe(spec)}: {n_classes} classes; {counts} images{streamed} ({seconds:.1f}s)")
    _log_skipped(_skipped(data), log)


def _run(settings: dict[str, Any], out: Path, callbacks: Sequence[Any], log: Callable[[str], None], *,
         resume: bool, verbose: int | None, replace: bool = False) -> TrainResult:
    from .._lazy import require

    preset = get_preset(settings["preset"])
    spec = settings["dataset_spec"]
    if settings.get("mixed_precision"):
        _require_gpu()
    t0 = time.perf_counter()
    raw: dict[str, data_mod.Split] | None = None
    if spec["source"] == "folder":
        classes = list(spec["classes"])
        native = None
    else:  # small images: load, then prepare
        raw = {k: data_mod.load_split(spec, k) for k in data_mod.SPLITS}
        classes = raw["train"].classes
        native = _native_size(spec, raw["train"].images)
    channels = int(settings["channels"])
    if resume:
        card = ModelCard.load(out / CARD_FILENAME)
        if card.classes != tuple(classes):
            raise DataError(f"--resume {out}: the data's classes changed since the run started")
    else:
        size = _parse_size(settings.get("img_size")) or native or tuple(preset.size)
        color = "GRAY" if channels == 1 else preset.color
        card = ModelCard(
            name=preset.name,
            classes=tuple(classes),
            input=InputSpec(height=int(size[0]), width=int(size[1]), channels=channels, layout="NHWC",
                            dtype="float32", color=color),
            preprocess=Preprocess(scale=preset.scale, mean=preset.mean, std=preset.std, in_graph=True,
                                  name=preset.preprocess_name, **settings.get("resize", {})),
            output="probabilities",
            precision="mixed" if settings.get("mixed_precision") else "fp32",
            provenance=Provenance(dataset=data_mod.describe(spec), dataset_spec=spec, created=now_iso()),
        )
    if raw is not None:
        data = {k: _Prepared(prepare_pixels(v.images, card.input, card.preprocess), v.labels, None, v.skipped)
                for k, v in raw.items()}
        del raw
    else:
        data = _prepare_folder(spec, card)
    _check_sizes(spec, data, len(classes), log, time.perf_counter() - t0)
    log(f"data: model input {card.input.height}x{card.input.width}x{card.input.channels} {card.input.color}")
    stream_skips: dict[tuple[str, str], None] = {}

    def dataset(split: str, shuffle: bool = False, augment: Augment | None = None) -> Any:
        d = data[split]
        if d.pixels is not None:
            return make_dataset(d.pixels, d.labels, batch, shuffle=shuffle, seed=seed, augment=augment)
        return stream_dataset(d.files or [], d.labels, card.input, card.preprocess, batch, shuffle=shuffle,
                              seed=seed, augment=augment, skipped=stream_skips)

    batch = int(settings["batch_size"])
    seed = int(settings["seed"])

    keras = require("keras", "training")
    keras.utils.set_random_seed(int(settings["seed"]))
    policy = keras.mixed_precision.global_policy().name
    if settings.get("mixed_precision"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    aside: list[Path | None] = [None]  # the old run set aside until the first checkpoint (a list: the callback clears it)

    def replaced() -> None:  # the new run has its first checkpoint: the old run and its exports go for good
        if aside[0] is not None:
            shutil.rmtree(aside[0], ignore_errors=True)
            aside[0] = None

    try:
        if not resume:
            aside[0] = _set_aside(out, exports=replace)
        out.mkdir(parents=True, exist_ok=True)
        history = read_history(out / HISTORY_FILE) if resume else []
        if resume:
            model = keras.saving.load_model(out / MODEL_FILE, compile=True, safe_mode=True)
        else:
            model = create_model(preset.name, card.input.shape, len(classes), settings.get("weights"))
            from ..atomic import write_text

            write_text(out / CONFIG_FILE, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        if not resume or getattr(model, "optimizer", None) is None or not model.compiled:
            model.compile(optimizer=keras.optimizers.Adam(float(settings["learning_rate"])),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        epochs = int(settings["epochs"])
        done = len(history)
        if resume:
            log(f"resume: {out}: {done} epoch(s) done, training to {epochs}")
        aug = Augment(**settings.get("augment", {}))
        train_ds = dataset("train", shuffle=True, augment=aug)
        val_ds = dataset("val")
        ckpt = _BestCheckpoint(out, card, settings, int(settings["patience"]), history, log, replaced)
        if done < epochs:
            n_params = model.count_params()
            log(f"train: {preset.name} ({n_params:,} parameters) for up to {epochs} epochs, batch {batch}, "
                f"patience {settings['patience']} -> {out}")
            if verbose is None:
                verbose = 1 if sys.stdout.isatty() else 2
            try:
                with warnings.catch_warnings():  # streamed data has no known length until the first epoch ends
                    warnings.filterwarnings("ignore", message="Your input ran out of data")
                    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=done,
                              callbacks=[ckpt, *callbacks], verbose=verbose, shuffle=False)
            except BaseException as exc:
                kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
                if (out / MODEL_FILE).is_file() and aside[0] is None:
                    _finish_history(out, ckpt.history, preset.name)
                    where = (f"best model so far (epoch {ckpt.best_epoch}, val_loss {ckpt.best:.4f}) kept in "
                             f"{out / MODEL_FILE}" if ckpt.best_epoch else f"the checkpoint in {out / MODEL_FILE} "
                             "is kept")
                    log(f"train: {kind}: {where}; continue with cnn-train --resume {out}")
                else:
                    back = "; the previous run there is restored" if aside[0] is not None else ""
                    log(f"train: {kind} before the first epoch finished: no model saved in {out}{back}; "
                        "start again with the same command")
                raise
            if ckpt.best_weights is not None:
                model.set_weights(ckpt.best_weights)
            elif (out / MODEL_FILE).is_file():  # resumed and never improved: the best is on disk
                model = keras.saving.load_model(out / MODEL_FILE, compile=False, safe_mode=True)
        else:
            log(f"train: {out}: all {epochs} epochs already done")
        _finish_history(out, ckpt.history, preset.name)
        if not (out / MODEL_FILE).is_file():
            ckpt.save(model)

        # test metrics on the best model
        ys, preds = [], []
        for x, y in dataset("test"):
            ys.append(np.asarray(y))
            preds.append(np.argmax(np.asarray(model.predict_on_batch(x)), axis=1))
        test_y = np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, np.int64)
        y_pred = np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)
        metrics = metrics_from(test_y, y_pred, classes)
        same_as_val = spec["source"] in ("folder", "csv") and not spec.get("test_split") \
            and not spec.get("has_test_dir")
        skipped = list(dict.fromkeys(_skipped(data) + list(stream_skips)))
        metrics.update({
            "preset": preset.name, "classes": list(classes), "test_split": "val" if same_as_val else "test",
            "train_images": int(len(data["train"])), "val_images": int(len(data["val"])),
            "epochs_run": len(ckpt.history), "best_epoch": ckpt.best_epoch,
            "skipped_images": len(skipped), "skipped": [{"path": p, "reason": r} for p, r in skipped],
            "dataset_spec": spec,
        })
        plot_confusion(np.asarray(metrics["confusion_matrix"]), classes, out / "confusion.png",
                       f"{preset.name}: test accuracy {metrics['test_accuracy']:.2%}")
        write_json(out / METRICS_FILE, metrics)
    except BaseException:
        if not resume and not (out / MODEL_FILE).is_file():  # failed before its first checkpoint
            if aside[0] is not None:
                _restore(out, aside[0])
            else:
                for name in ARTIFACTS:  # leave the folder as it was found
                    (out / name).unlink(missing_ok=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy(policy)
    result = TrainResult(out, metrics["test_accuracy"], metrics, ModelCard.load(out / CARD_FILENAME),
                         len(ckpt.history), skipped)
    _log_skipped(skipped, log)  # again at the end, next to the summary (streamed splits find theirs only now)
    return result


def _finish_history(out: Path, rows: list[dict[str, Any]], title: str) -> None:
    if rows:
        write_history(out / HISTORY_FILE, rows)
        plot_history(rows, out, title)


def _BestCheckpoint(out: Path, card: ModelCard, settings: dict, patience: int, history: list, log: Callable,
                    on_saved: Callable[[], None] = lambda: None) -> Any:
    """A Keras callback: save the best model (lowest val_loss) atomically with its card, write
    history.csv every epoch, and stop after ``patience`` epochs without improvement."""
    from .._lazy import require

    keras = require("keras", "training")

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history = list(history)
            prev = [r for r in self.history if "val_loss" in r]
            best_row = min(prev, key=lambda r: r["val_loss"]) if prev else None
            self.best = best_row["val_loss"] if best_row else np.inf
            self.best_epoch = int(best_row["epoch"]) if best_row else 0
            self.best_weights = None
            self.wait = len(self.history) - self.best_epoch if best_row else 0

        def save(self, model: Any) -> None:
            path = out / MODEL_FILE
            with atomic_path(path) as tmp:
                model.save(tmp)
            sha = sha256_file(path)
            c = card.replace(provenance={"source_sha256": sha, "versions": _versions()})
            c.save(out / CARD_FILENAME)
            on_saved()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items() if np.isscalar(v)}}
            self.history.append(row)
            write_history(out / HISTORY_FILE, self.history)
            val = float(logs.get("val_loss", np.inf))
            if val < self.best:
                self.best, self.best_epoch, self.wait = val, epoch + 1, 0
                self.best_weights = self.model.get_weights()
                self.save(self.model)
            else:
                self.wait += 1
                if patience and self.wait >= patience:
                    log(f"train: no val_loss improvement in {patience} epochs; stopping (best epoch "
                        f"{self.best_epoch})")
                    self.model.stop_training = True

    return BestCheckpoint()
