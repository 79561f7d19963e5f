"""The Classifier: what a robot's process embeds.

    clf = Classifier("model.int8.onnx")        # .onnx, .engine or .keras; backend="auto"
    pred = clf.predict(frame)                  # BGR uint8 HxWx3 (as OpenCV gives) or an image path
    preds = clf.predict_batch(frames)          # one batched inference
    out = clf.infer(tensor)                    # raw output for an already-preprocessed batch
    for r in clf.stream("video.mp4", batch=8): # Results with source, frame/path, timestamp, prediction, latency
        ...
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..card import InputSpec, ModelCard, Preprocess, RESIZE_MODES
from ..errors import CardError, ModelLoadError, UsageError
from .backends import Backend, Slot, load_backend
from .images import decode_image, read_file, reduce_factor
from .preprocess import prepare_image, to_model_input
from .results import Prediction, Result


_UINT8 = np.dtype(np.uint8)
_get_ident = threading.get_ident


class CardMissingWarning(UserWarning):
    """The model carries no card: preprocessing comes from arguments and defaults."""


def read_labels(labels: Sequence[str] | str | os.PathLike | None) -> tuple[str, ...] | None:
    """A list of class names, or a text file with one name per line."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--labels {p}: cannot read ({exc.strerror or exc})") from None
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    else:
        names = tuple(str(x) for x in labels)
    if len(names) < 2:
        raise UsageError(f"labels: need at least 2 class names, found {len(names)}")
    if len(set(names)) != len(names):
        raise UsageError("labels: class names must be unique")
    return names


def _layout_from_shape(shape: tuple[int | None, ...]) -> str:
    a, c = shape[1], shape[3]
    if c in (1, 3) and a not in (1, 3):
        return "NHWC"
    if a in (1, 3) and c not in (1, 3):
        return "NCHW"
    return "NHWC"


def _fits(spec: InputSpec, shape: tuple[int | None, ...]) -> bool:
    return all(d is None or d == s for d, s in zip(shape[1:], spec.shape))


def resolve_card(backend: Backend, *, labels: Any = None, scale: float | None = None,
                 mean: Sequence[float] | float | None = None, std: Sequence[float] | float | None = None,
                 rgb: bool | None = None, resize: str | None = None, output: str | None = None
                 ) -> tuple[ModelCard, bool]:
    """The card to run ``backend`` with, and whether the output kind must be detected.

    With a card in the artifact, it is checked against the graph. Without one, the
    input's layout, size and channels come from the graph and the rest from the
    arguments (the same as cnn-infer's flags); a CardMissingWarning says so.
    """
    path = backend.path
    shape = backend.input_spec.shape
    names = read_labels(labels)
    if len(shape) != 4:
        raise ModelLoadError(f"{path}: input {backend.input_spec.name!r} has shape {shape}; an image classifier "
                             "takes a 4-D NHWC or NCHW tensor")
    given = {k: v for k, v in dict(scale=scale, mean=mean, std=std, rgb=rgb, resize=resize,
                                   output=output).items() if v is not None}
    card = backend.card
    if card is not None:
        if given:
            raise UsageError(f"{path} carries a model card, which fixes {', '.join(sorted(given))}; drop "
                             f"{', '.join('--' + k for k in sorted(given))} (they are for models without a card)")
        spec = card.input
        if not _fits(spec, shape):
            other = InputSpec(spec.height, spec.width, spec.channels,
                              "NCHW" if spec.layout == "NHWC" else "NHWC", spec.dtype, spec.color)
            if not _fits(other, shape):
                raise CardError(f"{path}: the card says input {spec.layout} {spec.height}x{spec.width}x"
                                f"{spec.channels}, the graph takes {shape}; re-export the model")
            card = card.replace(input={"layout": other.layout})
        if names is not None:
            if len(names) != card.num_classes:
                raise UsageError(f"labels: {len(names)} names given, the model's card has {card.num_classes} classes")
            card = card.replace(classes=names)
        return card, False

    warnings.warn(f"{path} carries no model card; input size and layout come from the graph, preprocessing from "
                  "arguments (scale, mean, std, rgb, resize) and defaults", CardMissingWarning, stacklevel=3)
    layout = _layout_from_shape(shape)
    h, w, c = (shape[1], shape[2], shape[3]) if layout == "NHWC" else (shape[2], shape[3], shape[1])
    if h is None or w is None or c is None:
        raise ModelLoadError(f"{path}: input {backend.input_spec.name!r} has a dynamic size {shape}; cnnedge needs a "
                             "fixed height, width and channel count")
    if c not in (1, 3):
        raise ModelLoadError(f"{path}: input has {c} channels; cnnedge feeds 1 (gray) or 3 (colour)")
    dtype = backend.input_spec.dtype
    if dtype not in ("uint8", "float32", "float16"):
        raise ModelLoadError(f"{path}: input type {dtype} is not an image type (uint8, float32, float16)")
    if resize is not None and resize not in RESIZE_MODES:
        raise UsageError(f"resize {resize!r}: expected one of {', '.join(RESIZE_MODES)}")
    color = "GRAY" if c == 1 else ("BGR" if rgb is False else "RGB")

    def _tuple(v: Any, default: tuple[float, ...]) -> tuple[float, ...]:
        if v is None:
            return default
        return (float(v),) if isinstance(v, (int, float)) else tuple(float(x) for x in v)

    pre = Preprocess(resize=resize or "stretch", scale=1 / 255 if scale is None else float(scale),
                     mean=_tuple(mean, (0.0,)), std=_tuple(std, (1.0,)), in_graph=dtype == "uint8",
                     name="arguments")
    n_out = backend.output_spec.shape[-1] if len(backend.output_spec.shape) >= 2 else None
    if names is None:
        if n_out is None:
            names = ("0", "1")  # replaced after the warm-up tells the real count
        else:
            names = tuple(str(i) for i in range(n_out))
    elif n_out is not None and len(names) != n_out:
        raise UsageError(f"labels: {len(names)} names given, the model outputs {n_out} classes")
    if output is not None and output not in ("probabilities", "logits"):
        raise UsageError(f"output {output!r}: expected probabilities or logits")
    try:
        card = ModelCard(name=Path(path).stem, classes=names,
                         input=InputSpec(h, w, c, layout, dtype, color), preprocess=pre,
                         output=output or "probabilities")
    except CardError as exc:
        raise UsageError(str(exc).replace("model card: ", "")) from None
    return card, output is None


def _looks_like_probabilities(out: np.ndarray) -> bool:
    out = out.reshape(out.shape[0], -1).astype(np.float64)
    return bool(np.all(out >= -1e-6) and np.all(out <= 1 + 1e-6) and np.allclose(out.sum(1), 1.0, atol=1e-3))


class Classifier:
    """Load a model and classify images with it. See the module docstring.

    ``backend``: ``"auto"``, ``"ort-cpu"``, ``"ort-cuda"``, ``"ort-trt"``, ``"trt"`` or ``"keras"``.
    ``labels``, ``scale``, ``mean``, ``std``, ``rgb``, ``resize``, ``output``: for models
    without a card. ``topk``: length of each prediction's top-k list.
    ``reduce_decode``: decode large JPEG files at 1/2..1/8 size when they are at
    least twice the model input. Other keyword arguments go to the backend
    (``threads``, ``fp16``, ``cache_dir``, ``device_id``, ``trust``).
    """

    def __init__(self, model: str | os.PathLike, backend: str = "auto", *, labels: Any = None,
                 scale: float | None = None, mean: Any = None, std: Any = None, rgb: bool | None = None,
                 resize: str | None = None, output: str | None = None, topk: int = 5, warmup: bool = True,
                 reduce_decode: bool = True, **backend_opts: Any) -> None:
        if topk < 1:
            raise UsageError(f"topk must be at least 1, got {topk}")
        self.backend: Backend = load_backend(model, backend, **backend_opts)
        try:
            self.card, detect = resolve_card(self.backend, labels=labels, scale=scale, mean=mean, std=std,
                                             rgb=rgb, resize=resize, output=output)
            be = self.backend
            self._spec = InputSpec(self.card.input.height, self.card.input.width, self.card.input.channels,
                                   self.card.input.layout, be.input_spec.dtype, self.card.input.color)
            self._pre = self.card.preprocess
            self._logits = self.card.output == "logits"
            self.topk = topk
            self.reduce_decode = reduce_decode
            import cv2

            self._cv2 = cv2
            self._hwc = (self._spec.height, self._spec.width, 3)
            self._cvt = {"RGB": cv2.COLOR_BGR2RGB, "BGR": None, "GRAY": cv2.COLOR_BGR2GRAY}[self._spec.color]
            if self._spec.color == "GRAY":
                self._hwc = (-1,)  # gray models take the general path
            self._direct = (self._pre.in_graph and self._spec.layout == "NHWC" and self._spec.dtype == "uint8")
            # predict()'s per-frame path: one reusable batch-of-one slot per calling thread, filled in place
            self._slots: dict[int, Slot] | None = None
            if self._direct:
                first = be.slot()
                if first is not None and first.input.shape[1:] == self._hwc:
                    self._slots = {threading.get_ident(): first}
            self._closed = False
            if warmup or detect or self.card.classes == ("0", "1") and be.output_spec.shape[-1] is None:
                self._warmup(detect, labels is not None)
        except BaseException:
            self.backend.close()
            raise

    # properties ----------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def input_size(self) -> tuple[int, int]:
        return self._spec.height, self._spec.width

    def __repr__(self) -> str:
        return f"<Classifier {self.card.name} on {self.backend_name}: {self.card.num_classes} classes>"

    # core ----------------------------------------------------------------------------
    def _warmup(self, detect: bool, labelled: bool) -> None:
        n = self.backend.fixed_batch or 1
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (n, self._spec.height, self._spec.width, self._spec.channels), np.uint8)
        out = self.backend.infer(to_model_input(pixels, self._spec, self._pre))
        out = out.reshape(out.shape[0], -1)
        if out.shape[1] != self.card.num_classes:
            if labelled or self.backend.card is not None:
                raise CardError(f"{self.backend.path}: the model outputs {out.shape[1]} classes, its labels name "
                                f"{self.card.num_classes}")
            self.card = self.card.replace(classes=tuple(str(i) for i in range(out.shape[1])))
        if detect:
            kind = "probabilities" if _looks_like_probabilities(out) else "logits"
            self.card = self.card.replace(output=kind)
            self._logits = kind == "logits"

    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        """Read an image file (decode limits, damage flagged), at reduced size when that is safe."""
        return self.decode(read_file(path), Path(path))

    def decode(self, data: bytes, path: str | os.PathLike | None = None) -> np.ndarray:
        """Decode image bytes, at reduced size for a JPEG at least twice the model input."""
        r = reduce_factor(data, self._spec.height, self._spec.width) if self.reduce_decode else 1
        return decode_image(data, path, r)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One BGR/gray/BGRA uint8 image -> HxWxC uint8 in the model's colour order and size."""
        if type(image) is not np.ndarray and not isinstance(image, np.ndarray):
            raise UsageError(f"expected an image array or a path, got {type(image).__name__}")
        if image.dtype != _UINT8:
            raise UsageError(f"expected a uint8 image (as OpenCV decodes), got {image.dtype}")
        if image.ndim < 2 or image.size == 0:
            raise UsageError(f"empty image (shape {'x'.join(map(str, image.shape)) or 'scalar'}): nothing to "
                             "classify (a camera read that returned no frame?)")
        return prepare_image(image, self._spec, self._pre)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Raw model output for an already-preprocessed batch (the model's layout and dtype)."""
        return self.backend.infer(tensor)

    def infer_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Raw output for an NHWC uint8 batch of prepared images (see :meth:`prepare`)."""
        return self.backend.infer(to_model_input(pixels, self._spec, self._pre))

    def postprocess(self, out: np.ndarray, topk: int | None = None) -> list[Prediction]:
        """Model output -> Predictions (softmax only when the card says logits)."""
        k = min(topk or self.topk, self.card.num_classes)
        out = out.reshape(out.shape[0], -1)
        if out.shape[1] != self.card.num_classes:
            raise CardError(f"{self.backend.path}: the model output has {out.shape[1]} values per image, the card "
                            f"names {self.card.num_classes} classes")
        if self._logits:
            z = out.astype(np.float32) - out.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            out = z / z.sum(axis=1, keepdims=True)
        else:
            out = out.astype(np.float32, copy=False)
        if k == 1:
            idx = out.argmax(axis=1)[:, None]
        else:
            idx = np.argsort(-out, axis=1, kind="stable")[:, :k]
        classes = self.card.classes
        preds = []
        rows = np.take_along_axis(out, idx, axis=1).tolist()
        for ids, scores in zip(idx.tolist(), rows):
            top = [(classes[i], s) for i, s in zip(ids, scores)]
            preds.append(Prediction(top[0][0], top[0][1], ids[0], top))
        return preds

    def predict(self, image: np.ndarray | str | os.PathLike, topk: int | None = None) -> Prediction:
        """Classify one image: a BGR uint8 HxWx3 array (gray and BGRA are converted) or a path."""
        if type(image) is not np.ndarray and not isinstance(image, np.ndarray):
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
            return self._post_one(slot.run().reshape(-1), topk or self.topk)
        if sh == self._hwc and image.dtype == _UINT8:  # type: ignore[union-attr]
            # already the model's size: only the colour order changes (the common camera-at-size case)
            pixels = (self._cv2.cvtColor(image, self._cvt) if self._cvt is not None else image)[None]
        else:
            pixels = self.prepare(image)[None]
        if self._direct:  # uint8 NHWC with normalisation in the graph: the pixels are the input
            out = self.backend.infer(pixels)
        else:
            out = self.backend.infer(to_model_input(pixels, self._spec, self._pre))
        return self._post_one(out.reshape(-1), topk or self.topk)

    def _new_slot(self) -> Slot:
        """This thread's slot (threads get their own: a slot's buffers are reused by each call)."""
        slot = self.backend.slot()
        assert slot is not None and self._slots is not None
        if len(self._slots) > 256:  # short-lived threads: forget the old ones (a running call keeps its own)
            self._slots.clear()
        self._slots[_get_ident()] = slot
        return slot

    def _post_one(self, row: np.ndarray, k: int) -> Prediction:
        """postprocess for one image, in plain Python for small class counts (fewer numpy calls)."""
        n = self.card.num_classes
        if row.shape[0] != n or n > 64:
            return self.postprocess(row[None], k)[0]
        vals = row.tolist()
        if self._logits:
            m = max(vals)
            e = [math.exp(v - m) for v in vals]
            t = sum(e)
            vals = [v / t for v in e]
        k = min(k, n)
        if k == 1:
            i = vals.index(max(vals))
            order = [i]
        else:
            order = sorted(range(n), key=vals.__getitem__, reverse=True)[:k]
        classes = self.card.classes
        top = [(classes[i], vals[i]) for i in order]
        return Prediction(top[0][0], top[0][1], order[0], top)

    def predict_batch(self, images: Iterable[np.ndarray | str | os.PathLike], topk: int | None = None
                      ) -> list[Prediction]:
        """Classify several images in one batched inference; a list in, a list out."""
        imgs = [im if isinstance(im, np.ndarray) else self.load_image(im) for im in images]
        if not imgs:
            return []
        pixels = np.stack([self.prepare(im) for im in imgs])
        return self.postprocess(self.infer_pixels(pixels), topk)

    def stream(self, source: Any, batch: int = 8, **options: Any) -> Iterator[Result]:
        """Classify a source (path, folder, list file, video, camera index, URL, GStreamer
        string, or a list of these) through the batched pipeline; yields Results.

        Options: ``max_wait_ms``, ``workers``, ``glob``, ``max_frames``, ``duration``,
        ``keep_images``, ``open_timeout_ms``, ``read_timeout_ms``, ``give_up_s``, ``topk``,
        ``decode`` (``auto``/``cpu``/``gpu``), ``processes`` (see :func:`cnnedge.runtime.stream.iter_batches`).
        """
        from .stream import run_pipeline

        return run_pipeline(self, source, batch=batch, **options)

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
