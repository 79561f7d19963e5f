"""What an export starts from: a Keras model (``.keras``, or ``.h5`` with trust) or an ONNX classifier, with its card.

A source knows three things: its card (from ``card.json``, the ONNX metadata, or a :class:`Description` the
user gives for a model from elsewhere), its reference outputs on decoded images (the model fed the way it
expects them), and the FP32 ONNX graph the artifacts are made from (uint8 NHWC pixels in, the declared
normalisation folded in, unless ``input_dtype`` is float32).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..card import CARD_FILENAME, InputSpec, ModelCard, Preprocess, card_path_for
from ..errors import CardError, ExportError, ModelLoadError, OptionError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
REQUIRED = ("labels", "scale", "mean", "std", "rgb")  # what a card needs that a graph cannot say


@dataclass(frozen=True)
class Description:
    """A model from elsewhere, described by the user (cnn-infer's flags): what its card would say."""

    labels: Any = None  # a text file with one class name a line, or the names
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    rgb: bool | None = None
    resize: str | None = None
    crop_pct: float | None = None
    pad_value: float | None = None
    interpolation: str | None = None
    output: str | None = None  # probabilities | logits; None: detected from the outputs
    input_size: tuple[int, int] | None = None  # for a graph whose height and width are dynamic

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            v = getattr(self, name)
            if isinstance(v, (int, float)):
                object.__setattr__(self, name, (float(v),))
            elif v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))

    def given(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def missing(self) -> list[str]:
        return [name for name in REQUIRED if getattr(self, name) is None]


def open_source(path: Path, describe: Description | None, trust: bool) -> "KerasSource | OnnxSource":
    """The source for ``path``; its card is read (or the description checked) before any model is loaded."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxSource(path, describe)
    if suffix in KERAS_SUFFIXES:
        from ..keras_io import check_model_file

        check_model_file(path, trust)
        return KerasSource(path, describe, trust)
    raise ModelLoadError(f"{path}: not a Keras model or an ONNX file (expected .keras, .h5/.hdf5, or .onnx)")


MAX_DEPTH = 32  # nesting in the card's free-form fields (dataset_spec, calibration, versions)


def check_depth(card: ModelCard, where: str) -> ModelCard:
    """Refuse a card whose free-form fields nest deeper than :data:`MAX_DEPTH` (copying or writing it would
    exhaust Python's recursion limit)."""
    stack: list[tuple[Any, int]] = [(card.provenance.dataset_spec, 1), (card.provenance.calibration, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CardError(f"{where}: model card nested deeper than {MAX_DEPTH} levels in its provenance; "
                            "rewrite the card")
        if isinstance(obj, dict):
            stack.extend((v, depth + 1) for v in obj.values())
        elif isinstance(obj, list):
            stack.extend((v, depth + 1) for v in obj)
    return card


def _check_description(path: Path, describe: Description | None, where: str) -> None:
    """A model without a card needs a description: refuse one missing values, in one line naming them all."""
    missing = (describe or Description()).missing()
    if missing:
        raise OptionError("", f"{path} has no model card ({where}); describe the model with "
                              + " ".join("{" + m + "}" for m in REQUIRED) + " (missing: "
                              + ", ".join("{" + m + "}" for m in missing) + ")")


def _refuse_description(path: Path, describe: Description | None, where: str) -> None:
    given = (describe or Description()).given()
    if given:
        raise OptionError("", f"{path} carries a model card ({where}), which fixes "
                              + ", ".join("{" + g + "}" for g in given) + "; drop them (they describe models "
                              "without a card)")


def card_from_description(path: Path, d: Description, shape: Sequence[int | None], layout: str) -> ModelCard:
    """The card of a model from elsewhere: the graph's input shape and the user's description."""
    from ..runtime.classifier import read_labels

    if layout == "NHWC":
        h, w, c = shape[1], shape[2], shape[3]
    else:
        c, h, w = shape[1], shape[2], shape[3]
    if h is None or w is None:
        if d.input_size is None:
            raise OptionError("input_size", f"needed: {path} takes images of any size ({list(shape)}); give the "
                                            "size it was trained at, e.g. 224x224")
        h, w = d.input_size
    if c not in (1, 3):
        raise ModelLoadError(f"{path}: input shape {list(shape)} has {c} channels; an image classifier takes 1 or 3")
    names = read_labels(d.labels)
    color = "GRAY" if c == 1 else ("RGB" if d.rgb else "BGR")
    try:
        return ModelCard(name=path.stem, classes=names, input=InputSpec(int(h), int(w), int(c), layout, "float32",
                                                                        color),
                         preprocess=Preprocess(resize=d.resize or "stretch", scale=d.scale, mean=d.mean, std=d.std,
                                               in_graph=False, name="declared",
                                               crop_pct=1.0 if d.crop_pct is None else d.crop_pct,
                                               pad_value=0.0 if d.pad_value is None else d.pad_value,
                                               interpolation=d.interpolation or "auto"),
                         output=d.output or "probabilities")
    except CardError as exc:
        raise OptionError("", str(exc).replace("model card: ", "the description: ")) from None


def image_layout(path: Path, shape: Sequence[int | None], dtype: str) -> str:
    """NHWC or NCHW for a 4-D float image input; ModelLoadError for anything else."""
    if len(shape) != 4:
        raise ModelLoadError(f"{path}: input shape {list(shape)} is not an image batch (N,H,W,C or N,C,H,W); "
                             "cnn-export takes image classifiers")
    if dtype not in ("float32", "uint8"):
        raise ModelLoadError(f"{path}: input type {dtype} is not an image type (float32 or uint8)")
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    raise ModelLoadError(f"{path}: input shape {list(shape)} has no 1- or 3-channel axis; cnn-export takes images")


def source_inputs(images: Sequence[np.ndarray], card: ModelCard, color: str | None = None,
                  in_graph: bool | None = None) -> np.ndarray:
    """Decoded images as the source model takes them: prepared as cnn-train fed it (the trainer's
    :func:`~cnnedge.runtime.preprocess.prepare_image` path: colour, resize), float32 pixels, normalised on the host
    when the card says the model does not normalise itself, in the card's layout. ``color``/``in_graph`` override
    the card (the card check tries the alternatives)."""
    from dataclasses import replace

    from ..runtime.preprocess import normalize, prepare_image

    spec = card.input if color is None else replace(card.input, color=color)
    pre = card.preprocess
    pixels = np.stack([prepare_image(im, spec, pre) for im in images])
    x = pixels.astype(np.float32) if (pre.in_graph if in_graph is None else in_graph) else normalize(pixels, pre)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if spec.layout == "NCHW" else x


def keras_outputs(model: Any, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Reference outputs: the Keras model called directly (not ``predict``) on its float32 input."""
    from ..tfquiet import keras_warnings_off

    with keras_warnings_off():
        outs = [np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)


class KerasSource:
    kind = "Keras"
    fixed_batch = None  # the exported graph's batch is dynamic

    def __init__(self, path: Path, describe: Description | None, trust: bool):
        self.path, self.trust, self.describe = path, trust, describe
        where = str(card_path_for(path))
        if Path(where).is_file():
            _refuse_description(path, describe, where)
            from ..keras_io import load_card_for

            self.card: ModelCard | None = check_depth(load_card_for(path), where)
        else:
            _check_description(path, describe, f"no {CARD_FILENAME} beside it")
            self.card = None
        self.model: Any = None

    def load(self) -> ModelCard:
        from ..keras_io import load_keras_model

        self.model = load_keras_model(self.path, trust=self.trust)
        inputs = list(getattr(self.model, "inputs", None) or [])
        if len(inputs) != 1:
            raise ExportError(f"model has {len(inputs)} inputs; cnn-export takes image classifiers with one image "
                              "input")
        if self.card is None:
            shape = tuple(inputs[0].shape)
            layout = image_layout(self.path, shape, "float32")
            if layout != "NHWC":
                raise ModelLoadError(f"{self.path}: input {list(shape)} is channels-first; Keras models here are NHWC")
            self.card = card_from_description(self.path, self.describe or Description(), shape, layout)
        from .keras2onnx import check_image_model

        check_image_model(self.model, self.card)
        return self.card

    def predict(self, x: np.ndarray) -> np.ndarray:
        return keras_outputs(self.model, x)

    def to_onnx(self, card: ModelCard, input_dtype: str, opset: int) -> Any:
        from .keras2onnx import keras_to_onnx

        return keras_to_onnx(self.model, card, input_dtype, opset)


class OnnxSource:
    """A third-party ONNX classifier: ONNX Runtime runs it as the FP32 reference; the export wraps it."""

    kind = "ONNX"

    def __init__(self, path: Path, describe: Description | None):
        from .onnx_io import card_from_model, load_checked

        self.path, self.describe = path, describe
        self.proto = load_checked(path)
        try:
            self.card: ModelCard | None = check_depth(card_from_model(self.proto), f"{path} (metadata)")
            _refuse_description(path, describe, "in its metadata")
        except CardError as exc:
            if "no 'cnnedge.card' metadata" not in str(exc):
                raise CardError(f"{path}: {exc}") from None
            _check_description(path, describe, "no cnnedge.card metadata")
            self.card = None
        self.backend: Any = None

    def load(self) -> ModelCard:
        from ..runtime.backends import load_backend

        self.backend = load_backend(self.path, "ort-cpu", threads=1)
        spec = self.backend.input_spec
        layout = image_layout(self.path, spec.shape, spec.dtype)
        if self.card is None:
            if spec.dtype != "float32":
                raise ModelLoadError(f"{self.path}: input type {spec.dtype}; a model without a card must take "
                                     "float32 input")
            self.card = card_from_description(self.path, self.describe or Description(), spec.shape, layout)
        elif self.card.input.layout != layout:
            raise CardError(f"{self.path}: its card says {self.card.input.layout}, the graph takes {list(spec.shape)}")
        out = self.backend.output_spec.shape
        if len(out) != 2 or out[1] not in (None, self.card.num_classes):
            raise ModelLoadError(f"{self.path}: output shape {list(out)} is not one score per class for the "
                                 f"{self.card.num_classes} classes named (expected (batch, {self.card.num_classes}))")
        return self.card

    @property
    def fixed_batch(self) -> int | None:
        """The only batch size the graph takes (the wrapper keeps it), or None."""
        return self.backend.fixed_batch

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.backend.infer(x.astype(self.backend.input_spec.dtype, copy=False))
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)

    def to_onnx(self, card: ModelCard, input_dtype: str, opset: int) -> Any:
        from .onnx_wrap import wrap

        if self.backend.input_spec.dtype == "uint8":  # a cnnedge export already: pixels in, nothing to wrap
            if input_dtype != "uint8":
                raise OptionError("input_dtype", f"{input_dtype}: {self.path} takes uint8 pixels; export it as it is")
            import copy

            return copy.deepcopy(self.proto)
        return wrap(self.proto, card, input_dtype)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def describe_from(values: dict[str, Any]) -> Description | None:
    """A :class:`Description` from keyword values, or None when none is given."""
    d = Description(**{k: v for k, v in values.items() if v is not None})
    return d if d.given() else None
