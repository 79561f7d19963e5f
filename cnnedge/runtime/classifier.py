"""The Classifier: what a robot's process embeds.

    clf = Classifier("model.int8.onnx")        # .onnx, .engine or .keras; backend="auto"
    pred = clf.predict(frame)                  # BGR uint8 HxWx3 (as OpenCV gives) or an image path
    preds = clf.predict_batch(frames)          # one batched inference
    out = clf.infer(tensor)                    # raw output for an already-preprocessed batch
    for r in clf.stream("video.mp4", batch=8): # Results with source, frame/path, timestamp, prediction, latency
        ...
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..artifact.card import InputSpec, ModelCard
from ..errors import CardError, CnnEdgeError, ModelLoadError, UsageError, arg_name, first_line
from ..imaging.files import read_file
from ..imaging.normalize import to_model_input
from ..imaging.opencv import opencv
from ..imaging.prepare import decode_for, decode_pixels
from .backends import Backend, Slot, load_backend
from .backends.sizing import check_batch_pixels
from .card_resolution import OutputKindWarning, check_crop, check_scores_shape, resolve_card
from .describe import check_description
from .interrupt import DEFAULT_LOAD_TIMEOUT_S, Deadline, RunInterrupted, load_timeout_error
from .pipeline.postprocessor import DEFAULT_TOPK, Postprocessor, check_topk
from .pipeline.preprocessor import Preprocessor
from .results import Prediction, Result


_UINT8 = np.dtype(np.uint8)
_get_ident = threading.get_ident


def _timeout(v: Any) -> float | None:
    """``v`` when it is a positive number of seconds or None, else a UsageError naming the argument."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e9:
        raise UsageError(f"{arg_name('load_timeout_s')} must be a positive number of seconds, got {v!r}")
    return float(v)


def _batch_items(images: Any) -> list[Any]:
    """predict_batch's images as a list: a list or any iterable of images, or the images of an NxHxWxC array;
    a UsageError for what is not a batch (None, one path, the bytes of a file, one image: iterating those
    would give characters, byte values or pixel rows)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        raise UsageError(f"predict_batch() takes a list of images or an NxHxWxC array, got an array of shape "
                         f"{'x'.join(map(str, images.shape)) or '()'}; for one image use predict(image) or "
                         "predict_batch([image])")
    what = "None" if images is None else type(images).__name__
    if images is None or isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, dict)):
        raise UsageError(f"predict_batch() takes a list of images (BGR uint8 arrays or paths), got {what}"
                         f"{_hint(images)}")
    try:
        return list(images)
    except TypeError:
        raise UsageError(f"predict_batch() takes a list of images (BGR uint8 arrays or paths), got {what}") from None


def _hint(v: Any) -> str:
    """What to do with a value that is not an image: a path alone, or the bytes of an encoded file."""
    if isinstance(v, (str, os.PathLike)):
        return "; for one file use predict(path) or predict_batch([path])"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "; for the bytes of an image file (PNG, JPEG) use decode(data) first, or give its path"
    if isinstance(v, (list, tuple)):
        return "; for pixels in nested lists use np.asarray(pixels, np.uint8)"
    return ""


def output_kind(out: np.ndarray) -> str:
    """``probabilities`` when every row is non-negative and sums to 1, else ``logits``: what a model's raw
    output looks like (cnn-infer's detection and cnn-export's check of a declared kind)."""
    out = out.reshape(out.shape[0], -1).astype(np.float64)
    probs = np.all(out >= -1e-6) and np.all(out <= 1 + 1e-6) and np.allclose(out.sum(1), 1.0, atol=1e-3)
    return "probabilities" if probs else "logits"


def _check_int8_kernels(backend: Backend, card: ModelCard) -> None:
    """Warn when an INT8 file without cnnedge's no-saturation guarantee (7-bit weights, checked at export and
    recorded in its card) runs on ONNX Runtime's CPU kernels on a CPU whose pair sums saturate (x86 without VNNI):
    its answers there can differ from those it was checked with."""
    if card.precision != "int8" or backend.name != "ort-cpu":
        return
    from .cpu_kernels import int8_kernels

    kernels = int8_kernels()
    held = ((card.provenance.calibration or {}).get("saturation") or {}).get("holds")
    if not kernels.exact and not held:
        warnings.warn(f"{backend.path}: this INT8 file's weights are not shown to stay within 16-bit pair sums, "
                      f"and this CPU's integer kernels ({kernels.name}) saturate there: its answers may be wrong "
                      "here; export it again with cnn-export --int8 (7-bit weights, checked)", stacklevel=3)


class Classifier:
    """Load a model and classify images with it. See the module docstring.

    ``model``: a model file, or a :class:`Backend` already opened (the Classifier closes it).
    ``backend``: ``"auto"``, ``"ort-cpu"``, ``"ort-cuda"``, ``"ort-trt"``, ``"openvino"``, ``"trt"`` or ``"keras"``.
    ``labels``, ``scale``, ``mean``, ``std``, ``rgb``, ``resize``, ``crop_pct``, ``pad_value``,
    ``interpolation``, ``output``: for models without a card (checked as cnn-infer checks its
    flags: a bad value is a UsageError). ``input_size=(h, w)``: the image size of a graph
    whose height and width are dynamic. ``topk``: length of each prediction's top-k list.
    ``reduce_decode``: decode large JPEG files at 1/2..1/8 size when they are at
    least twice the model input. ``assume_preprocessing``: a model without a card runs on 0..1 RGB
    pixels where no argument says otherwise, with a CardMissingWarning naming what was assumed; False
    refuses it with a UsageError unless scale, mean or std is given (what cnn-infer does).
    ``load_timeout_s``: the warm-up run may take this long (None: no limit) before the model is
    refused: a model that never finishes. ``batch``: the batch this Classifier will mostly run (None: 1, as
    ``predict``), at which ``backend="auto"`` times the CPU engines of an ONNX file (``self.backend.choice`` says
    what it picked and why). Other keyword arguments go to the backend
    (``threads``, ``fp16``, ``cache_dir``, ``device_id``, ``hint``, ``trust``).
    """

    def __init__(self, model: str | os.PathLike | Backend, backend: str = "auto", *, labels: Any = None,
                 scale: Any = None, mean: Any = None, std: Any = None, rgb: bool | None = None,
                 resize: str | None = None, crop_pct: Any = None, pad_value: Any = None,
                 interpolation: str | None = None, output: str | None = None, input_size: Any = None,
                 topk: int = DEFAULT_TOPK, warmup: bool = True, reduce_decode: bool = True,
                 load_timeout_s: float | None = DEFAULT_LOAD_TIMEOUT_S, assume_preprocessing: bool = True,
                 batch: int | None = None, **backend_opts: Any) -> None:
        topk = check_topk(topk)
        self.load_timeout_s = _timeout(load_timeout_s)
        described = dict(labels=labels, scale=scale, mean=mean, std=std, rgb=rgb, resize=resize, crop_pct=crop_pct,
                         pad_value=pad_value, interpolation=interpolation, output=output)
        size = check_description({"input_size": input_size}).get("input_size")
        check_description(described)  # before loading: a bad value costs no model load
        if isinstance(model, Backend):  # an opened backend (the Classifier closes it), e.g. a ReplayBackend
            if backend != "auto" or backend_opts or size is not None or batch is not None:
                raise UsageError("Classifier(backend_instance) takes no backend name, backend options, "
                                 "input_size or batch; give them to load_backend")
            self.backend: Backend = model
        else:
            self.backend = load_backend(model, backend, input_size=size, batch=batch, **backend_opts)
        try:
            self.card, detect, self.labels_from = resolve_card(self.backend, **described,
                                                               assume_preprocessing=assume_preprocessing)
            be = self.backend
            self._spec = InputSpec(self.card.input.height, self.card.input.width, self.card.input.channels,
                                   self.card.input.layout, be.input_spec.dtype, self.card.input.color)
            self._pre = self.card.preprocess
            check_crop(be.path, self.card, be.card is not None)
            _check_int8_kernels(be, self.card)
            self.topk = topk
            self.reduce_decode = reduce_decode
            cv2 = opencv()  # with the decode limits set, before this process or its decode workers load it
            self._cv2 = cv2
            self._hwc = (self._spec.height, self._spec.width, 3)
            self._cvt = {"RGB": cv2.COLOR_BGR2RGB, "BGR": None, "GRAY": cv2.COLOR_BGR2GRAY}[self._spec.color]
            if self._spec.color == "GRAY" or self._pre.crop_pct != 1:
                self._hwc = (-1,)  # gray models, and crops of an image already at the input size, take the general path
            self.preprocessor = Preprocessor(self._spec, self._pre, reduce_decode)
            self._direct = self.preprocessor.pixels_are_input
            # predict()'s per-frame path: one reusable batch-of-one slot per calling thread, filled in place
            self._slots: dict[int, Slot] | None = None
            if self._direct:
                first = be.slot()
                if first is not None and first.input.shape[1:] == self._hwc:
                    self._slots = {threading.get_ident(): first}
            self._closed = False
            if warmup or detect or self.card.classes == ("0", "1") and be.output_spec.shape[-1] is None:
                self._warmup(detect, self.labels_from != "indices (no labels given)",
                             None if detect or be.card is not None else self.card.output)
            self.postprocessor = Postprocessor.from_card(self.card, topk, be.path)
        except BaseException:
            self.backend.close()
            raise

    # properties ----------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) images are resized to: the card's, or the one given for a dynamic-size graph."""
        return self._spec.height, self._spec.width

    def __repr__(self) -> str:
        return f"<Classifier {self.card.name} on {self.backend_name}: {self.card.num_classes} classes>"

    # core ----------------------------------------------------------------------------
    def _warmup(self, detect: bool, labelled: bool, said: str | None) -> None:
        """Run noise through the model at batch 1 and 2 (or its fixed batch): a wrong input size
        or a batch-dependent output is refused here, at load, not midway through a run; the
        class count and (``detect``) the output kind are read off the output, and an output
        kind the user ``said`` that does not look like the output is warned about once."""
        be = self.backend
        sizes = [be.fixed_batch] if be.fixed_batch else [1] if (be.max_batch or 2) < 2 else [1, 2]
        rng = np.random.default_rng(0)
        widths, out = [], None
        for n in sizes:
            shape = (n, self._spec.height, self._spec.width, self._spec.channels)
            try:
                x = to_model_input(rng.integers(0, 256, shape, np.uint8), self._spec, self._pre)
            except MemoryError:
                raise ModelLoadError(f"{be.path}: a warm-up batch of {'x'.join(map(str, shape))} pixels (the "
                                     "input its graph and card declare) does not fit in memory") from None
            try:
                with Deadline(self.load_timeout_s, be.stop_runs) as deadline:
                    out = np.asarray(be.infer(x))
            except RunInterrupted:
                if not deadline.expired:
                    raise
                raise load_timeout_error(be.path, self.load_timeout_s or 0) from None
            except CnnEdgeError as exc:
                if type(exc) is not ModelLoadError:
                    raise
                self._refuse_warmup(n, str(exc).removeprefix(f"{be.path}: "))
            except Exception as exc:  # noqa: BLE001 - the engine's own error classes, mapped to one line
                self._refuse_warmup(n, first_line(exc))
            if out.ndim == 0 or out.shape[0] != n:
                raise ModelLoadError(f"{be.path}: the model returns {out.shape[0] if out.ndim else 'no'} rows for a "
                                     f"batch of {n}; cnnedge needs one row of scores per image")
            check_scores_shape(be.path, be.output_spec.name, tuple(out.shape[1:]))
            out = out.reshape(n, -1)
            widths.append(out.shape[1])
        if len(set(widths)) > 1:
            raise ModelLoadError(f"{be.path}: the output width depends on the batch ({widths[0]} values per image at "
                                 f"batch 1, {widths[1]} at batch 2); cnnedge needs one score per class")
        assert out is not None
        if out.shape[1] != self.card.num_classes:
            if labelled or be.card is not None:
                raise CardError(f"{be.path}: the model outputs {out.shape[1]} classes, its labels "
                                f"({self.labels_from}) name {self.card.num_classes}")
            self.card = self.card.replace(classes=tuple(str(i) for i in range(out.shape[1])))
        kind = output_kind(out)
        if detect:
            self.card = self.card.replace(output=kind)
        elif said is not None and said != kind:
            warnings.warn(f"{be.path}: output is said to be {said}, but the model's rows "
                          + ("are non-negative and sum to 1: they look like probabilities already, and a softmax "
                             "over them flattens the scores; drop --output logits" if said == "logits" else
                             "do not sum to 1: they look like logits; use --output logits"), OutputKindWarning,
                          stacklevel=3)

    def _refuse_warmup(self, n: int, why: str) -> None:
        """The warm-up batch failed in the engine: one line saying where the size came from."""
        be = self.backend
        where = (f"the input size {self._spec.height}x{self._spec.width} comes from {be.size_from}: is it "
                 "right?" if be.size_from else "re-export the model" if be.card is not None else "check the model file")
        raise (CardError if be.card is not None else ModelLoadError)(
            f"{be.path}: the model fails on a batch of {n} at {self._spec.height}x{self._spec.width} ({why}); "
            f"{where}") from None

    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        """Read an image file (decode limits, damage flagged), at reduced size when that is safe."""
        return self.decode(read_file(path), Path(path))

    def decode(self, data: bytes, path: str | os.PathLike | None = None) -> np.ndarray:
        """Decode image bytes, at reduced size for a JPEG at least twice the model input."""
        return decode_for(data, path, self._spec, self._pre, self.reduce_decode)

    def decode_pixels(self, data: bytes, path: str | os.PathLike | None = None) -> np.ndarray:
        """Image bytes -> pixels ready for :meth:`infer_pixels`: :meth:`prepare` of :meth:`decode` in one
        step, with fewer OpenCV calls (the pipeline's path for files)."""
        return decode_pixels(data, path, self._spec, self._pre, self.reduce_decode)

    def check_batch(self, batch: int, flag: str = "--batch") -> None:
        """UsageError naming ``flag`` when ``batch`` images of a dynamic-size graph would exceed
        the pixels-per-batch cap (:data:`~cnnedge.runtime.backends.sizing.MAX_BATCH_PIXELS`)."""
        check_batch_pixels(self.backend, batch, flag)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One BGR/gray/BGRA uint8 image -> HxWxC uint8 in the model's colour order and size."""
        return self.preprocessor.prepare(image)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Raw model output for an already-preprocessed batch (the model's layout and dtype)."""
        return self.backend.infer(tensor)

    def infer_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Raw output for an NHWC uint8 batch of prepared images (see :meth:`prepare`)."""
        return self.backend.infer(to_model_input(pixels, self._spec, self._pre))

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        """Model output -> one float32 row of class probabilities per image (a softmax only when the card says
        logits)."""
        return self.postprocessor.probabilities(out)

    def postprocess(self, out: np.ndarray, topk: int | None = None) -> list[Prediction]:
        """Model output -> Predictions (softmax only when the card says logits)."""
        return self.postprocessor(out, self.topk if topk is None else topk)

    def predict(self, image: np.ndarray | str | os.PathLike, topk: int | None = None) -> Prediction:
        """Classify one image: a BGR uint8 HxWx3 array (gray and BGRA are converted) or a path."""
        k = self.topk if topk is None else topk if type(topk) is int and topk > 0 else check_topk(topk)
        if type(image) is not np.ndarray and not isinstance(image, np.ndarray):
            if not isinstance(image, (str, os.PathLike)):
                raise UsageError(f"predict() takes an image array (HxWx3 BGR uint8) or a path, got "
                                 f"{type(image).__name__}")
            image = self.load_image(image)
        sh = image.shape  # type: ignore[union-attr]
        if sh == self._hwc and image.dtype == _UINT8 and self._slots is not None:  # type: ignore[union-attr]
            # a frame at the model's size: converted straight into this thread's bound input buffer
            slot = self._slots.get(_get_ident()) or self._new_slot()
            dst = slot.input[0]
            if self._cvt is None:
                np.copyto(dst, image)
            else:
                got = self._cv2.cvtColor(image, self._cvt, dst=dst)
                if got is not dst:  # OpenCV allocated a new array instead (it never has for these buffers)
                    np.copyto(dst, got)
            return self.postprocessor.one(slot.run().reshape(-1), k)
        if sh == self._hwc and image.dtype == _UINT8:  # type: ignore[union-attr]
            # already the model's size: only the colour order changes (the common camera-at-size case)
            pixels = (self._cv2.cvtColor(image, self._cvt) if self._cvt is not None else image)[None]
        else:
            pixels = self.prepare(image)[None]
        if self._direct:  # uint8 NHWC with normalisation in the graph: the pixels are the input
            out = self.backend.infer(pixels)
        else:
            out = self.backend.infer(to_model_input(pixels, self._spec, self._pre))
        return self.postprocessor.one(out.reshape(-1), k)

    def _new_slot(self) -> Slot:
        """This thread's slot (threads get their own: a slot's buffers are reused by each call)."""
        slot = self.backend.slot()
        assert slot is not None and self._slots is not None
        if len(self._slots) > 256:  # short-lived threads: forget the old ones (a running call keeps its own)
            self._slots.clear()
        self._slots[_get_ident()] = slot
        return slot

    def predict_batch(self, images: Iterable[np.ndarray | str | os.PathLike], topk: int | None = None
                      ) -> list[Prediction]:
        """Classify several images in one batched inference: a list (any iterable) of images, each a BGR uint8
        array or a path, or one NxHxWxC array; a list of Predictions out, in order. Anything else (None, one
        path, the bytes of a file, an item that is neither) is a UsageError saying what to give."""
        imgs = [self._batch_image(im, i) for i, im in enumerate(_batch_items(images))]
        if not imgs:
            return []
        self.check_batch(len(imgs), "predict_batch: images per call")
        pixels = np.stack([self.prepare(im) for im in imgs])
        return self.postprocess(self.infer_pixels(pixels), topk)

    def _batch_image(self, im: Any, i: int) -> np.ndarray:
        if isinstance(im, np.ndarray):
            return im
        if isinstance(im, (str, os.PathLike)):
            return self.load_image(im)
        raise UsageError(f"predict_batch() image {i}: expected an image array (HxWx3 BGR uint8) or a path, got "
                         f"{type(im).__name__}{_hint(im)}")

    def stream(self, source: Any, batch: int | None = None, **options: Any) -> Iterator[Result]:
        """Classify a source (path, folder, list file, video, camera index, URL, GStreamer
        string, or a list of these) through the batched pipeline; yields Results. ``batch``: images
        per inference call; None: 32 for image files, 8 with a camera, stream or video.

        Options: ``max_wait_ms``, ``workers``, ``glob``, ``max_frames``, ``duration``,
        ``keep_images``, ``open_timeout_ms``, ``read_timeout_ms``, ``give_up_s``, ``topk``,
        ``decode`` (``auto``/``cpu``/``gpu``), ``processes`` (see :func:`cnnedge.runtime.pipeline.run`,
        which this runs with the Classifier's backend, card, ``topk`` and ``reduce_decode``).
        """
        from .pipeline.wiring import run

        if batch is not None:
            self.check_batch(batch, "batch")
        topk = options.pop("topk", None)
        return _one_at_a_time(run(self.backend, self.card, source, batch, topk=self.topk if topk is None else topk,
                                  reduce_decode=self.reduce_decode, **options))

    # lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self.backend.close()
            if self._slots is not None:
                self._slots.clear()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _one_at_a_time(batches: Iterator[list[Result]]) -> Iterator[Result]:
    """The pipeline's lists of Results, one Result at a time; stopping early ends the run."""
    try:
        for rs in batches:
            yield from rs
    finally:
        batches.close()  # type: ignore[attr-defined]
