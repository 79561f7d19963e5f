"""What an export starts from: a Keras model (``.keras``, or ``.h5`` with trust) or an ONNX classifier, with its card.

A source knows three things: its card (from ``card.json``, the ONNX metadata, or a :class:`Description` the
user gives for a model from elsewhere), its reference outputs on decoded images (the model fed the way it
expects them), and the FP32 ONNX graph the artifacts are made from (uint8 NHWC pixels in, the declared
normalisation folded in, unless ``input_dtype`` is float32). Both kinds run behind the runtime's backends (Keras,
ONNX Runtime), and a model without a card gets its card as cnn-infer makes one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact.card import CARD_FILENAME, ModelCard, card_path_for
from ..errors import CardError, ModelLoadError, OptionError
from ..runtime.describe import REQUIRED, ModelDescription

Description = ModelDescription  # the export's name for the one description type (cnnedge.runtime.describe)


def open_source(path: Path, describe: ModelDescription | None, trust: bool,
                opset: int | None = None) -> "KerasSource | OnnxSource":
    """The source for ``path``; its card is read (or the description checked) before any model is loaded.
    ``opset``: the ONNX opset asked for (None: the export's default)."""
    from ..artifact.kinds import EXPORT_SOURCES, require_kind
    from ..artifact.modelfile import require_model_file

    if require_kind(path, "cnn-export", EXPORT_SOURCES) == "onnx":
        require_model_file(path)
        return OnnxSource(path, describe, opset)
    from ..keras_io import check_model_file

    check_model_file(path, trust)
    return KerasSource(path, describe, trust)


class DescriptionMissing(OptionError):
    """A model without a card whose description lacks values; ``missing`` names them (the export may add a
    measured suggestion for the preprocessing ones)."""

    def __init__(self, path: Path, where: str, missing: list[str], hint: str = ""):
        self.path, self.where, self.missing, self.hint = path, where, missing, hint
        super().__init__("", f"{path} has no model card ({where}); describe the model with "
                             + " ".join("{" + m + "}" for m in REQUIRED) + " (missing: "
                             + ", ".join("{" + m + "}" for m in missing) + ")" + hint)

    def with_hint(self, hint: str) -> "DescriptionMissing":
        return DescriptionMissing(self.path, self.where, self.missing, hint)


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


def _check_description(path: Path, describe: ModelDescription | None, where: str, channels: int | None = None,
                       names_known: bool = False) -> None:
    """A model without a card needs a description: refuse one missing values, in one line naming them all."""
    missing = (describe or ModelDescription()).missing(channels, names_known)
    if missing:
        raise DescriptionMissing(path, where, missing)


def _refuse_description(path: Path, describe: ModelDescription | None, where: str) -> None:
    given = (describe or ModelDescription()).given()
    if given:
        raise OptionError("", f"{path} carries a model card ({where}), which fixes "
                              + ", ".join("{" + g + "}" for g in given) + "; drop them (they describe models "
                              "without a card)")


def source_inputs(images: Sequence[np.ndarray], card: ModelCard, color: str | None = None,
                  in_graph: bool | None = None) -> np.ndarray:
    """Decoded images as the source model takes them: prepared as cnn-train fed it (the training
    :func:`~cnnedge.imaging.prepare.prepare_image` path: colour, resize), float32 pixels, normalised on the host
    when the card says the model does not normalise itself, in the card's layout. ``color``/``in_graph`` override
    the card (the card check tries the alternatives)."""
    from dataclasses import replace

    from ..imaging.normalize import normalize
    from ..imaging.prepare import prepare_image

    spec = card.input if color is None else replace(card.input, color=color)
    pre = card.preprocess
    pixels = np.stack([prepare_image(im, spec, pre) for im in images])
    x = pixels.astype(np.float32) if (pre.in_graph if in_graph is None else in_graph) else normalize(pixels, pre)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if spec.layout == "NCHW" else x


class KerasSource:
    kind = "Keras"
    fixed_batch = None  # the exported graph's batch is dynamic

    def __init__(self, path: Path, describe: ModelDescription | None, trust: bool):
        self.path, self.trust, self.describe = path, trust, describe
        self.notes: list[str] = []
        self.declared_output: str | None = None
        where = str(card_path_for(path))
        if Path(where).is_file():
            _refuse_description(path, describe, where)
            from ..keras_io import load_card_for

            self.card: ModelCard | None = check_depth(load_card_for(path), where)
        else:
            from ..keras_archive import input_channels

            channels = input_channels(path) if path.suffix.lower() == ".keras" else None
            _check_description(path, describe, f"no {CARD_FILENAME} beside it", channels=channels or 1)
            self.card = None
            self.declared_output = (describe or ModelDescription()).output
        self.model: Any = None
        self.backend: Any = None

    def load(self) -> ModelCard:
        """The model behind the runtime's Keras backend; a card from the graph and the description as cnn-infer
        makes it (:func:`~cnnedge.runtime.card_resolution.resolve_card`) for a model without one."""
        from ..runtime.backends import load_backend

        d = self.describe or ModelDescription()
        self.backend = load_backend(self.path, "keras", trust=self.trust,
                                    input_size=d.input_size if self.card is None else None)
        self.model = self.backend.model
        if self.card is None:
            from ..runtime.backends.sizing import image_axes

            shape = self.backend.input_spec.shape
            axes = image_axes(shape)
            if axes is not None and shape[axes[2]] == 3 and d.rgb is None:
                raise DescriptionMissing(self.path, f"no {CARD_FILENAME} beside it", ["rgb"])
            self.card = described_card(self.backend, d)
        from .keras2onnx import check_image_model

        check_image_model(self.model, self.card)
        return self.card

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.backend.infer(x), dtype=np.float32).reshape(len(x), -1)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def to_onnx(self, card: ModelCard, input_dtype: str, opset: int | None) -> Any:
        from .keras2onnx import keras_to_onnx
        from .opset import DEFAULT

        return keras_to_onnx(self.model, card, input_dtype, opset or DEFAULT)


#: a metadata value of the source longer than this is not copied into the exports (a hostile file's 62 MB
#: ``names`` would be written into every artifact)
MAX_COPIED_METADATA = 64 << 10


class OnnxSource:
    """A third-party ONNX classifier: ONNX Runtime runs it as the FP32 reference; the export wraps it."""

    kind = "ONNX"

    def __init__(self, path: Path, describe: ModelDescription | None, opset: int | None = None):
        from .onnx_io import card_from_model, load_checked

        self.path, self.describe, self.opset = path, describe, opset
        self.notes: list[str] = []
        self.declared_output: str | None = None
        self.opset_change: Any = None  # opset.OpsetChange, once to_onnx has run
        self.proto = load_checked(path)
        try:
            self.card: ModelCard | None = check_depth(card_from_model(self.proto), f"{path} (metadata)")
            _refuse_description(path, describe, "in its metadata")
        except CardError as exc:
            if "no 'cnnedge.card' metadata" not in str(exc):
                raise CardError(f"{path}: {exc}") from None
            from ..runtime.labels import metadata_labels

            meta = {p.key: p.value for p in self.proto.metadata_props}
            _check_description(path, describe, "no cnnedge.card metadata", _channels(self.proto),
                               metadata_labels(meta, str(path)) is not None)
            self.card = None
            self.declared_output = (describe or ModelDescription()).output
        self.backend: Any = None

    def load(self) -> ModelCard:
        from ..runtime.backends import load_backend
        from ..runtime.card_resolution import resolve_card

        d = self.describe or ModelDescription()
        self.backend = load_backend(self.path, "ort-cpu", threads=1,
                                    input_size=d.input_size if self.card is None else None)
        spec = self.backend.input_spec
        if self.card is None and spec.dtype != "float32":
            raise ModelLoadError(f"{self.path}: input type {spec.dtype}; a model without a card must take float32 "
                                 "input")
        self.card = described_card(self.backend, d) if self.card is None else resolve_card(self.backend).card
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

    def to_onnx(self, card: ModelCard, input_dtype: str, opset: int | None) -> Any:
        from .onnx_wrap import wrap
        from .opset import convert

        proto, self.opset_change = convert(self.proto, opset, self.path)
        self.notes.append(f"{self.path.name}: {self.opset_change.line()}")
        if self.backend.input_spec.dtype == "uint8":  # a cnnedge export already: pixels in, nothing to wrap
            if input_dtype != "uint8":
                raise OptionError("input_dtype", f"{input_dtype}: {self.path} takes uint8 pixels; export it as it is")
            import copy

            out = copy.deepcopy(proto)
        else:
            out = wrap(proto, card, input_dtype)
        big = [p.key for p in out.metadata_props if len(p.value) > MAX_COPIED_METADATA]
        if big:
            kept = [p for p in out.metadata_props if p.key not in big]
            del out.metadata_props[:]
            out.metadata_props.extend(kept)
            self.notes.append(f"{self.path.name}: metadata {', '.join(map(repr, big))} not copied (over "
                              f"{MAX_COPIED_METADATA // 1024} KiB)")
        return out

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def described_card(backend: Any, d: ModelDescription) -> ModelCard:
    """The card of a model from elsewhere: its graph and the user's description, made as cnn-infer makes it
    (:func:`~cnnedge.runtime.card_resolution.resolve_card`: layout, size, channels, metadata names, label count)."""
    import warnings

    from ..runtime.card_resolution import CardMissingWarning, resolve_card

    values = {k: v for k, v in d.as_dict().items() if k != "input_size"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CardMissingWarning)
        card = resolve_card(backend, **values).card
    return card.replace(preprocess={"name": "declared"})


def _channels(model: Any) -> int | None:
    """The channel count of the graph's image input (1 or 3), or None when it cannot be told."""
    from ..runtime.backends.sizing import image_axes
    from .onnx_io import fed_inputs

    src = fed_inputs(model)[0]
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in src.type.tensor_type.shape.dim)
    axes = image_axes(shape)
    return None if axes is None else shape[axes[2]]


def describe_from(values: dict[str, Any]) -> ModelDescription | None:
    """A :class:`ModelDescription` from keyword values, or None when none is given."""
    d = ModelDescription(**{k: v for k, v in values.items() if v is not None})
    return d if d.given() else None
