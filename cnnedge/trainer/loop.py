"""The training loop.

A run directory holds ``model.keras`` (the best checkpoint so far, written
atomically), ``card.json`` beside it, ``train_config.json`` (the run's
:class:`RunSettings`, for ``--resume``), ``history.csv``, ``loss.png``,
``accuracy.png``, ``confusion.png`` and ``metrics.json``. Ctrl-C or a crash
keeps the best model so far and a valid card; ``metrics.json`` appears only
when a run completes. How ``--force`` replaces a run is in :mod:`.rundir`.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import datasets
from ..staging import staged_path, write_text
from ..artifact.card import CARD_FILENAME, InputSpec, ModelCard, Preprocess, Provenance, now_iso, sha256_file
from ..errors import DataError, ModelLoadError, UsageError, arg_name, first_line
from ..keras_io import check_model_file
from ..tfquiet import keras_warnings_off
from . import rundir
from .config import RunSettings, TrainConfig, check_crop, validate
from .prepared import Prepared, check_sizes, log_skipped, native_size, prepare_folder, skipped_files
from .presets import Preset, create_model, get_preset, weights_arg
from .report import metrics_from, plot_confusion, plot_history, read_history, write_history, write_json
from .rundir import (ARTIFACTS, CONFIG_FILE, EXPORT_PATTERNS, HISTORY_FILE, METRICS_FILE, MODEL_FILE,  # noqa: F401
                     is_complete)
from .tfdata import Augment, make_dataset, prepare_pixels, stream_dataset

__all__ = ["ARTIFACTS", "EXPORT_PATTERNS", "RunSettings", "TrainConfig", "TrainResult", "is_complete", "resume",
           "train"]


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


def _print(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, callbacks: Sequence[Any] = (), log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``cfg.preset`` on ``cfg.data`` into ``cfg.out``; returns the test metrics.

    ``callbacks`` are extra Keras callbacks, run after the checkpointing one. With ``cfg.force``, a run
    already in ``cfg.out`` is replaced only once the new one has completed (or, on Ctrl-C, has a checkpoint).
    """
    log = log or _print
    preset = get_preset(cfg.preset)
    out = Path(cfg.out)
    if isinstance(cfg.data, str) and cfg.data not in datasets.DATASETS:
        rundir.check_outside_data(out, cfg.data)
    rundir.check_out(out, cfg.force, log)
    settings = resolve(cfg, preset)
    return _Job.load(settings, out, log, resume=False).run(callbacks, cfg.verbose, staged=cfg.force
                                                           and rundir.needs_staging(out))


def resolve(cfg: TrainConfig, preset: Preset | None = None) -> RunSettings:
    """The run's settings: ``cfg`` with the preset's defaults filled in, its data found, all of it checked."""
    preset = preset or get_preset(cfg.preset)
    weights = cfg.weights if cfg.weights is not None else ("imagenet" if preset.transfer else None)
    values = dict(preset=preset.name, epochs=preset.epochs if cfg.epochs is None else cfg.epochs,
                  batch_size=preset.batch_size if cfg.batch_size is None else cfg.batch_size,
                  channels=cfg.channels, seed=cfg.seed, patience=cfg.patience,
                  learning_rate=preset.learning_rate if cfg.learning_rate is None else cfg.learning_rate,
                  img_size=tuple(cfg.img_size) if cfg.img_size is not None else None, weights=weights,
                  augment=cfg.augment, mixed_precision=cfg.mixed_precision, data=cfg.data,
                  resize=dict(cfg.resize))
    validate(values)  # before the data is looked at
    spec = datasets.make_spec(cfg.data, seed=cfg.seed, val_split=cfg.val_split, test_split=cfg.test_split,
                              size=cfg.img_size, csv_shape=cfg.csv_shape)
    if weights not in (None, "none") and not preset.transfer:
        raise UsageError(f"{arg_name('weights')} applies to the transfer presets (vgg16-transfer, vgg19-transfer, "
                         f"mobilenetv2-transfer), not to {preset.name}")
    weights_arg(weights)  # a missing weights file fails here, before the data is loaded
    return RunSettings(**values, dataset_spec=spec)  # type: ignore[arg-type]


def resume(run_dir: str | os.PathLike, epochs: int | None = None, callbacks: Sequence[Any] = (),
           log: Callable[[str], None] | None = None, verbose: int | None = None,
           patience: int | None = None) -> TrainResult:
    """Continue an interrupted run from its best checkpoint, up to ``epochs`` in all; ``patience``
    replaces the run's early-stopping patience (0: none)."""
    log = log or _print
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(f"{arg_name('run_dir')} {d}: no such run folder")
    rundir.finish_unfinished(d, log)
    if not (d / CONFIG_FILE).is_file() or not (d / MODEL_FILE).is_file():
        raise UsageError(f"{arg_name('run_dir')} {d}: not a cnn-train run with a checkpoint (needs {CONFIG_FILE} "
                         f"and {MODEL_FILE}); start a new run instead")
    try:
        obj = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{arg_name('run_dir')} {d}: cannot read {CONFIG_FILE} ({exc})") from None
    settings = RunSettings.from_json(obj, d / CONFIG_FILE)
    read_history(d / HISTORY_FILE)  # a damaged history or checkpoint is refused before the data is read
    _check_checkpoint(d / MODEL_FILE)
    changes = {k: v for k, v in (("epochs", epochs), ("patience", patience)) if v is not None}
    return _Job.load(settings.replace(**changes), d, log, resume=True).run(callbacks, verbose, staged=False)


# ---------------------------------------------------------------------------------------------
@dataclass
class _Job:
    """One run being trained: its settings, card and prepared data, and where it writes."""

    settings: RunSettings
    out: Path
    log: Callable[[str], None]
    resume: bool
    card: ModelCard
    data: dict[str, Prepared]
    work: Path = Path()  # out, or the staging folder beside the run a --force run replaces
    ckpt: Any = None
    stream_skips: dict[tuple[str, str], None] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: RunSettings, out: Path, log: Callable[[str], None], resume: bool) -> _Job:
        """Read and prepare the data (nothing is written yet)."""
        if settings.mixed_precision:
            _require_gpu()
        spec = settings.dataset_spec
        t0 = time.perf_counter()
        raw = None if spec["source"] == "folder" else {k: datasets.load_split(spec, k) for k in datasets.SPLITS}
        classes = list(spec["classes"]) if raw is None else raw["train"].classes
        if resume:
            card = ModelCard.load(out / CARD_FILENAME)
            if card.classes != tuple(classes):
                raise DataError(f"{arg_name('run_dir')} {out}: the data's classes changed since the run started")
        else:
            card = _new_card(settings, classes, native_size(spec, raw["train"].images) if raw else None)
        check_crop(card.input.height, card.input.width, card.preprocess.resize, card.preprocess.crop_pct)
        if raw is not None:
            data = {k: Prepared(prepare_pixels(v.images, card.input, card.preprocess), v.labels, None, v.skipped)
                    for k, v in raw.items()}
        else:
            data = prepare_folder(spec, card)
        check_sizes(spec, data, len(classes), log, time.perf_counter() - t0)
        log(f"data: model input {card.input.height}x{card.input.width}x{card.input.channels} {card.input.color}")
        return cls(settings, out, log, resume, card, data, out)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def dataset(self, split: str, shuffle: bool = False, augment: Augment | None = None) -> Any:
        d, s = self.data[split], self.settings
        if d.pixels is not None:
            return make_dataset(d.pixels, d.labels, s.batch_size, shuffle=shuffle, seed=s.seed, augment=augment)
        return stream_dataset(d.files or [], d.labels, self.card.input, self.card.preprocess, s.batch_size,
                              shuffle=shuffle, seed=s.seed, augment=augment, skipped=self.stream_skips)

    def run(self, callbacks: Sequence[Any], verbose: int | None, staged: bool) -> TrainResult:
        """Train, test and write the run; a staged run replaces the one in ``out`` at the end."""
        from .._lazy import require

        keras = require("keras", "training")
        keras.utils.set_random_seed(self.settings.seed)
        policy = keras.mixed_precision.global_policy().name
        if self.settings.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            self.work = rundir.start_staging(self.out) if staged else self.out
            try:
                model = self._fit(keras, callbacks, verbose)
                metrics = self._test(model)
            except BaseException as exc:
                from ..runtime.interrupt import as_stop

                stop = as_stop(exc)
                self._stopped(stop)
                if stop is exc:
                    raise
                raise stop from exc
        finally:
            keras.mixed_precision.set_global_policy(policy)
        if staged:
            rundir.swap_in(self.work, self.out)
            self.log(f"train: {self.out} now holds the new run; the previous run and the exports made from it "
                     "are replaced")
        skipped = list(dict.fromkeys(skipped_files(self.data) + list(self.stream_skips)))
        log_skipped(skipped, self.log)  # again at the end, next to the summary (streamed splits find theirs only now)
        return TrainResult(self.out, metrics["test_accuracy"], metrics, ModelCard.load(self.out / CARD_FILENAME),
                           len(self.ckpt.history), skipped)

    def _model(self, keras: Any) -> Any:
        s = self.settings
        if self.resume:
            path = self.work / MODEL_FILE
            try:
                with keras_warnings_off():
                    model = keras.saving.load_model(path, compile=True, safe_mode=True)
            except (ValueError, TypeError, KeyError, OSError, AttributeError, zipfile.BadZipFile) as exc:
                raise _bad_checkpoint(path, first_line(exc)) from None
        else:
            with keras_warnings_off():
                model = create_model(s.preset, self.card.input.shape, len(self.classes), s.weights)
            write_text(self.work / CONFIG_FILE, json.dumps(s.to_json(), indent=2, sort_keys=True) + "\n")
        if not self.resume or getattr(model, "optimizer", None) is None or not model.compiled:
            model.compile(optimizer=keras.optimizers.Adam(float(s.learning_rate)),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def _fit(self, keras: Any, callbacks: Sequence[Any], verbose: int | None) -> Any:
        s, work = self.settings, self.work
        work.mkdir(parents=True, exist_ok=True)
        history = read_history(work / HISTORY_FILE) if self.resume else []
        model = self._model(keras)
        raise_if_stopped()
        done = len(history)
        if self.resume:
            self.log(f"resume: {work}: {done} epoch(s) done, training to {s.epochs}")
        self.ckpt = _BestCheckpoint(work, self.card, s.patience, history, self.log)
        if done >= s.epochs:
            self.log(f"train: {work}: all {s.epochs} epochs already done")
        else:
            self.log(f"train: {s.preset} ({model.count_params():,} parameters) for up to {s.epochs} epochs, batch "
                     f"{s.batch_size}, patience {s.patience} -> {self.out}")
            with warnings.catch_warnings():  # streamed data has no known length until the first epoch ends
                warnings.filterwarnings("ignore", message="Your input ran out of data")
                with keras_warnings_off():
                    model.fit(self.dataset("train", shuffle=True, augment=s.augment),
                              validation_data=self.dataset("val"), epochs=s.epochs, initial_epoch=done,
                              callbacks=[self.ckpt, _StopOnSignal(), *callbacks], shuffle=False,
                              verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
            if self.ckpt.best_weights is not None:
                model.set_weights(self.ckpt.best_weights)
            elif (work / MODEL_FILE).is_file():  # resumed and never improved: the best is on disk
                model = keras.saving.load_model(work / MODEL_FILE, compile=False, safe_mode=True)
        _finish_history(work, self.ckpt.history, s.preset)
        if not (work / MODEL_FILE).is_file():
            self.ckpt.save(model)
        return model

    def _test(self, model: Any) -> dict[str, Any]:
        """Test metrics of the best model, written as metrics.json with the confusion plot."""
        ys, preds = [], []
        for x, y in self.dataset("test"):
            ys.append(np.asarray(y))
            with keras_warnings_off():
                preds.append(np.argmax(np.asarray(model.predict_on_batch(x)), axis=1))
        test_y = np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, np.int64)
        y_pred = np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)
        metrics = metrics_from(test_y, y_pred, self.classes)
        spec = self.settings.dataset_spec
        same_as_val = spec["source"] in ("folder", "csv") and not spec.get("test_split") \
            and not spec.get("has_test_dir")
        skipped = list(dict.fromkeys(skipped_files(self.data) + list(self.stream_skips)))
        metrics.update({
            "preset": self.settings.preset, "classes": self.classes, "test_split": "val" if same_as_val else "test",
            "train_images": int(len(self.data["train"])), "val_images": int(len(self.data["val"])),
            "epochs_run": len(self.ckpt.history), "best_epoch": self.ckpt.best_epoch,
            "skipped_images": len(skipped), "skipped": [{"path": p, "reason": r} for p, r in skipped],
            "dataset_spec": spec,
        })
        plot_confusion(np.asarray(metrics["confusion_matrix"]), self.classes, self.work / "confusion.png",
                       f"{self.settings.preset}: test accuracy {metrics['test_accuracy']:.2%}")
        write_json(self.work / METRICS_FILE, metrics)
        return metrics

    def _stopped(self, exc: BaseException) -> None:
        """After a failure or Ctrl-C: keep the checkpoint (a staged run replaces the old run only on Ctrl-C),
        or leave the folder as it was; say which run the folder now holds."""
        if self.resume and self.ckpt is None:
            return  # stopped before its first epoch (e.g. a checkpoint Keras cannot load): nothing was written
        kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
        staged, has_model = self.work != self.out, (self.work / MODEL_FILE).is_file()
        ckpt = self.ckpt
        if has_model and (not staged or isinstance(exc, KeyboardInterrupt)):
            if ckpt is not None:
                _finish_history(self.work, ckpt.history, self.settings.preset)
            if staged:
                rundir.swap_in(self.work, self.out)
            best = (f"best model so far (epoch {ckpt.best_epoch}, val_loss {ckpt.best:.4f}) kept in "
                    f"{self.out / MODEL_FILE}" if ckpt is not None and ckpt.best_epoch
                    else f"the checkpoint in {self.out / MODEL_FILE} is kept")
            now = f"{self.out} now holds the new run, the previous run is replaced; " if staged else ""
            self.log(f"train: {kind}: {now}{best}; continue with cnn-train --resume {self.out}")
        elif staged:
            rundir.discard(self.work)
            when = "" if has_model else " before the new run had a checkpoint"
            self.log(f"train: {kind}{when}: {self.out} still holds the previous run, unchanged; start again with "
                     "the same command")
        elif not self.resume:
            for name in ARTIFACTS:  # a new run with no checkpoint: leave the folder as it was found
                (self.out / name).unlink(missing_ok=True)
            if ckpt is not None:
                self.log(f"train: {kind} before the first epoch finished: no model saved in {self.out}; start "
                         "again with the same command")


def _new_card(s: RunSettings, classes: list[str], native: tuple[int, int] | None) -> ModelCard:
    preset = get_preset(s.preset)
    h, w = s.img_size or native or tuple(preset.size)
    return ModelCard(
        name=preset.name,
        classes=tuple(classes),
        input=InputSpec(height=int(h), width=int(w), channels=s.channels, layout="NHWC", dtype="float32",
                        color="GRAY" if s.channels == 1 else preset.color),
        preprocess=Preprocess(scale=preset.scale, mean=preset.mean, std=preset.std, in_graph=True,
                              name=preset.preprocess_name, **s.resize),
        output="probabilities",
        precision="mixed" if s.mixed_precision else "fp32",
        provenance=Provenance(dataset=datasets.describe(s.dataset_spec), dataset_spec=s.dataset_spec,
                              created=now_iso()),
    )


def _bad_checkpoint(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: the run's checkpoint cannot be loaded ({why}); restore it, or start the run "
                          f"again with {arg_name('force')} (its settings are in {path.parent / CONFIG_FILE})")


def _check_checkpoint(path: Path) -> None:
    """The checks of a .keras file that need no Keras (a zip archive within bounds), before the data is read."""
    try:
        check_model_file(path)
    except (ModelLoadError, UsageError) as exc:
        raise _bad_checkpoint(path, str(exc).removeprefix(f"{path}: ")) from None


def _versions() -> dict[str, str]:
    from ..host import loaded_versions

    return {"python": platform.python_version(), **loaded_versions(
        {"cnnedge": "cnnedge", "tensorflow": "tensorflow", "keras": "keras", "numpy": "numpy", "cv2": "opencv"})}


def _require_gpu() -> None:
    from .._lazy import require

    tf = require("tensorflow", "training")
    if not tf.config.list_physical_devices("GPU"):
        raise UsageError(f"{arg_name('mixed_precision')} needs a GPU, and TensorFlow sees none here; drop the flag "
                         "to train in float32 on the CPU (install 'cnnedge[train-gpu]' on a GPU machine)")


def _finish_history(out: Path, rows: list[dict[str, Any]], title: str) -> None:
    if rows:
        write_history(out / HISTORY_FILE, rows)
        plot_history(rows, out, title)


def raise_if_stopped() -> None:
    """Raise KeyboardInterrupt when a stop signal came but its handler's exception was swallowed (library code with
    a bare ``except:`` around the moment it landed): the run then went on to the end and exited 0 after Ctrl-C."""
    from ..runtime.interrupt import stop_requested

    if stop_requested():
        raise KeyboardInterrupt


def _StopOnSignal() -> Any:
    """A Keras callback that checks :func:`raise_if_stopped` after every batch, so a stop always ends the fit."""
    from .._lazy import require

    keras = require("keras", "training")

    class StopOnSignal(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            raise_if_stopped()

        def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
            raise_if_stopped()

    return StopOnSignal()


def _BestCheckpoint(out: Path, card: ModelCard, patience: int, history: list, log: Callable) -> Any:
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
            with staged_path(path) as tmp:
                model.save(tmp)
            sha = sha256_file(path)
            c = card.replace(provenance={"source_sha256": sha, "versions": _versions()})
            c.save(out / CARD_FILENAME)

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
