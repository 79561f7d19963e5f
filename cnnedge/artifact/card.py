"""The model card: what every artifact (Keras, ONNX, engine) carries about its model.

Written at training time, embedded on export (ONNX ``metadata_props`` under
:data:`ONNX_KEY`; a ``<engine>.json`` sidecar for TensorRT plans), read by the
runtime so that inference needs no flags about the model. Reading validates
strictly: an unknown version, a missing field or a wrong type is a
:class:`~cnnedge.errors.CardError`, never a silent default.

Preprocessing contract, applied in this order to an OpenCV BGR uint8 image:
convert to ``input.color``; resize to ``input.height`` x ``input.width`` by
``preprocess.resize`` (with ``crop_pct``, ``pad_value`` and ``interpolation``; each
mode is defined in :mod:`cnnedge.imaging.resize`); then
``y = (x * scale - mean) / std`` per channel. When ``preprocess.in_graph`` is true
the model does that arithmetic itself and the host feeds pixels (0..255) in
``input.dtype``.

Versions: version 2 added ``preprocess.crop_pct``, ``pad_value``, ``interpolation``
and the ``shorter`` and ``pad`` resize modes. A card is written as the lowest
version that expresses it (so an older cnnedge still reads a card that uses none of
these), and a version 1 card is read with their defaults.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .kinds import KERAS_SUFFIXES
from ..errors import CardError

CARD_VERSION = 2
READABLE_VERSIONS = (1, 2)
_V2_PREPROCESS = ("crop_pct", "pad_value", "interpolation")
CARD_FILENAME = "card.json"
ONNX_KEY = "cnnedge.card"
MAX_CARD_BYTES = 1 << 20
MAX_SIDE = 16384  # pixels: larger inputs are a malformed card, not a model

LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("uint8", "float32", "float16")
COLORS = ("RGB", "BGR", "GRAY")
RESIZE_MODES = ("stretch", "center-crop", "letterbox", "shorter", "pad")
_V1_RESIZE_MODES = ("stretch", "center-crop", "letterbox")
INTERPOLATIONS = ("auto", "area", "linear", "cubic", "lanczos")
OUTPUT_KINDS = ("probabilities", "logits")
PRECISIONS = ("fp32", "fp16", "int8", "mixed")


def _check_type(where: str, value: Any, types: tuple[type, ...]) -> None:
    if isinstance(value, bool) and bool not in types:
        raise CardError(f"model card: {where} must be {_names(types)}, found a boolean")
    if not isinstance(value, types):
        raise CardError(f"model card: {where} must be {_names(types)}, found {type(value).__name__} {value!r}")


def _names(types: tuple[type, ...]) -> str:
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list",
                        dict: "an object", bool: "a boolean", type(None): "null"}.get(t, t.__name__) for t in types)


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    _check_type(where, value, (str,))
    if value not in choices:
        raise CardError(f"model card: {where} is {value!r}; expected one of {', '.join(choices)}")


@dataclass(frozen=True)
class InputSpec:
    """What the artifact's input tensor takes (batch dimension excluded)."""

    height: int
    width: int
    channels: int = 3
    layout: str = "NHWC"
    dtype: str = "float32"
    color: str = "RGB"

    def __post_init__(self) -> None:
        for name in ("height", "width", "channels"):
            _check_type(f"input.{name}", getattr(self, name), (int,))
            if not 0 < getattr(self, name) <= MAX_SIDE:
                raise CardError(f"model card: input.{name} must be between 1 and {MAX_SIDE}, "
                                f"found {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise CardError(f"model card: input.channels must be 1 or 3, found {self.channels}")
        _choice("input.layout", self.layout, LAYOUTS)
        _choice("input.dtype", self.dtype, DTYPES)
        _choice("input.color", self.color, COLORS)
        if (self.color == "GRAY") != (self.channels == 1):
            raise CardError(f"model card: input.color {self.color} does not fit {self.channels} channel(s)")

    @property
    def shape(self) -> tuple[int, int, int]:
        if self.layout == "NHWC":
            return (self.height, self.width, self.channels)
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the numbers the network was trained on."""

    resize: str = "stretch"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    in_graph: bool = True
    name: str = "scale"
    crop_pct: float = 1.0
    pad_value: float = 0.0
    interpolation: str = "auto"

    def __post_init__(self) -> None:
        _choice("preprocess.resize", self.resize, RESIZE_MODES)
        _choice("preprocess.interpolation", self.interpolation, INTERPOLATIONS)
        _check_type("preprocess.crop_pct", self.crop_pct, (int, float))
        if not (math.isfinite(self.crop_pct) and 0 < self.crop_pct <= 1):
            raise CardError(f"model card: preprocess.crop_pct must be above 0 and at most 1, found {self.crop_pct}")
        if self.crop_pct != 1 and self.resize in ("letterbox", "pad"):
            raise CardError(f"model card: preprocess.crop_pct applies to stretch, center-crop and shorter, not "
                            f"{self.resize}")
        _check_type("preprocess.pad_value", self.pad_value, (int, float))
        if not (math.isfinite(self.pad_value) and 0 <= self.pad_value <= 255):
            raise CardError(f"model card: preprocess.pad_value must be from 0 to 255, found {self.pad_value}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "pad_value", float(self.pad_value))
        _check_type("preprocess.scale", self.scale, (int, float))
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise CardError(f"model card: preprocess.scale must be a finite number other than 0, found {self.scale}")
        _check_type("preprocess.in_graph", self.in_graph, (bool,))
        _check_type("preprocess.name", self.name, (str,))
        for key in ("mean", "std"):
            seq = getattr(self, key)
            _check_type(f"preprocess.{key}", seq, (list, tuple))
            if not seq:
                raise CardError(f"model card: preprocess.{key} must not be empty")
            for i, v in enumerate(seq):
                _check_type(f"preprocess.{key}[{i}]", v, (int, float))
                if not math.isfinite(v):
                    raise CardError(f"model card: preprocess.{key}[{i}] must be finite, found {v}")
            object.__setattr__(self, key, tuple(float(v) for v in seq))
        if any(s == 0 for s in self.std):
            raise CardError("model card: preprocess.std must not contain 0")
        object.__setattr__(self, "scale", float(self.scale))


@dataclass(frozen=True)
class Provenance:
    """Where the artifact came from, so a deployed file can be traced back."""

    source_sha256: str | None = None
    dataset: str | None = None
    dataset_spec: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    calibration: dict[str, Any] | None = None
    parent: str | None = None

    def __post_init__(self) -> None:
        _check_type("provenance.source_sha256", self.source_sha256, (str, type(None)))
        _check_type("provenance.dataset", self.dataset, (str, type(None)))
        _check_type("provenance.dataset_spec", self.dataset_spec, (dict,))
        _check_type("provenance.versions", self.versions, (dict,))
        for k, v in self.versions.items():
            _check_type(f"provenance.versions[{k!r}]", v, (str,))
        _check_type("provenance.created", self.created, (str,))
        _check_type("provenance.calibration", self.calibration, (dict, type(None)))
        _check_type("provenance.parent", self.parent, (str, type(None)))


@dataclass(frozen=True)
class ModelCard:
    """Everything downstream tools need to know about one model artifact."""

    name: str
    classes: tuple[str, ...]
    input: InputSpec
    preprocess: Preprocess = field(default_factory=Preprocess)
    output: str = "probabilities"
    precision: str = "fp32"
    provenance: Provenance = field(default_factory=Provenance)
    task: str = "classification"
    version: int = CARD_VERSION

    def __post_init__(self) -> None:
        _check_version(self.version)
        object.__setattr__(self, "version", CARD_VERSION)  # read cards are migrated to the current version
        _check_type("name", self.name, (str,))
        _check_type("task", self.task, (str,))
        if self.task != "classification":
            raise CardError(f"model card: task {self.task!r} is not supported; expected 'classification'")
        _check_type("classes", self.classes, (list, tuple))
        if len(self.classes) < 2:
            raise CardError(f"model card: classes must name at least 2 classes, found {len(self.classes)}")
        for i, c in enumerate(self.classes):
            _check_type(f"classes[{i}]", c, (str,))
            if not c.strip():
                raise CardError(f"model card: classes[{i}] is an empty name")
        if len(set(self.classes)) != len(self.classes):
            raise CardError("model card: classes contains duplicates")
        object.__setattr__(self, "classes", tuple(self.classes))
        _check_type("input", self.input, (InputSpec,))
        _check_type("preprocess", self.preprocess, (Preprocess,))
        _check_type("provenance", self.provenance, (Provenance,))
        _choice("output", self.output, OUTPUT_KINDS)
        _choice("precision", self.precision, PRECISIONS)
        for key in ("mean", "std"):
            n = len(getattr(self.preprocess, key))
            if n not in (1, self.input.channels):
                raise CardError(f"model card: preprocess.{key} has {n} values for {self.input.channels} channel(s)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with top-level fields, or nested ones given as dicts, changed."""
        for key in ("input", "preprocess", "provenance"):
            if isinstance(changes.get(key), Mapping):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes)

    # serialisation -----------------------------------------------------------------
    @property
    def min_version(self) -> int:
        """The lowest card version that expresses this card (what :meth:`to_dict` writes)."""
        pre, default = self.preprocess, Preprocess()
        if pre.resize in _V1_RESIZE_MODES and all(getattr(pre, k) == getattr(default, k) for k in _V2_PREPROCESS):
            return 1
        return 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["preprocess"]["mean"] = list(self.preprocess.mean)
        d["preprocess"]["std"] = list(self.preprocess.std)
        d["version"] = self.min_version
        if d["version"] == 1:
            for k in _V2_PREPROCESS:
                del d["preprocess"][k]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelCard":
        _check_type("the card", data, (dict,))
        if "version" not in data:
            raise CardError("model card: missing field 'version'")
        _check_version(data["version"])
        return _build(cls, data, "", data["version"])

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelCard":
        if len(text) > MAX_CARD_BYTES:
            raise CardError(f"model card: {len(text)} bytes is larger than the {MAX_CARD_BYTES}-byte limit")
        data = parse_json(text, "model card")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        from ..staging import write_text

        write_text(path, self.to_json() + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelCard":
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > MAX_CARD_BYTES:
                raise CardError(f"{p}: {size} bytes is larger than the {MAX_CARD_BYTES}-byte card limit")
            raw = p.read_bytes()
        except OSError as exc:
            raise CardError(f"{p}: cannot read model card ({exc.strerror or exc})") from None
        try:
            return cls.from_json(raw)
        except CardError as exc:
            raise CardError(f"{p}: {exc}") from None


_NESTED = {"input": InputSpec, "preprocess": Preprocess, "provenance": Provenance}


def _check_version(version: Any) -> None:
    _check_type("version", version, (int,))
    if version not in READABLE_VERSIONS:
        raise CardError(f"model card: version {version} is not supported (this cnnedge reads versions "
                        f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade cnnedge or re-export the model")


def _build(cls: type, data: dict[str, Any], prefix: str, version: int) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is Preprocess and version == 1:  # added in version 2: a version 1 card takes their defaults
        fields = {k: f for k, f in fields.items() if k not in _V2_PREPROCESS}
        if data.get("resize") in set(RESIZE_MODES) - set(_V1_RESIZE_MODES):
            raise CardError(f"model card: preprocess.resize {data['resize']!r} needs card version 2; expected one "
                            f"of {', '.join(_V1_RESIZE_MODES)} in a version 1 card")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CardError(f"model card: unknown field(s) {', '.join(prefix + u for u in unknown)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            raise CardError(f"model card: missing field '{prefix}{name}'")
        value = data[name]
        if cls is ModelCard and name in _NESTED:
            _check_type(prefix + name, value, (dict,))
            value = _build(_NESTED[name], value, f"{prefix}{name}.", version)
        kwargs[name] = value
    return cls(**kwargs)


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` for untrusted text: any failure, deep nesting included, is a CardError."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError(f"{what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CardError(f"{what}: not valid JSON (nested too deeply)") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def card_path_for(model_path: str | os.PathLike) -> Path:
    """Where a card travels beside a file: ``card.json`` for a Keras model (``.keras``, or
    a legacy ``.h5``/``.hdf5``) in a run directory, ``<file>.json`` for an engine or any
    other artifact."""
    p = Path(model_path)
    if p.suffix.lower() in KERAS_SUFFIXES:
        return p.with_name(CARD_FILENAME)
    return p.with_name(p.name + ".json")
