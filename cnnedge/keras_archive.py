"""Bound a ``.keras`` archive before Keras opens it.

Keras reads ``config.json`` whole, builds every layer the config declares
(allocating its weights), then reads ``model.weights.h5`` into memory. A small
hostile file can make each step allocate gigabytes: a config that inflates to
2 GB, a 300,000-unit Dense layer, a weights member far larger than the layers
need. This module reads only the zip directory and a size-capped
``config.json``, counts the parameters each layer declares (from the input
shape Keras records for it, which is the shape Keras builds it with), and
refuses what is out of bounds, naming the member or the layer. No Keras, no
TensorFlow.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import ModelLoadError

MAX_CONFIG_BYTES = 8 << 20       # the largest Keras Applications config is ~1 MB
MAX_METADATA_BYTES = 1 << 20
MAX_MEMBERS = 1000
MAX_RATIO = 100                  # uncompressed / compressed, for members over RATIO_FLOOR
RATIO_FLOOR = 1 << 20
WEIGHT_BYTES_PER_PARAM = 24      # float64 weights, or float32 plus two optimizer slots, with room
WEIGHT_SLACK = 8 << 20           # HDF5 headers and small variables
LAYER_SLACK = 64 << 10
DEFAULT_MAX_LAYER_PARAMS = 150_000_000   # VGG16's first Dense layer has 103 million
DEFAULT_MAX_PARAMS = 400_000_000         # VGG19 has 144 million

CONTAINERS = frozenset({"Sequential", "Functional", "Model"})
WEIGHTLESS = frozenset("""
InputLayer Flatten Reshape Permute RepeatVector Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D
GaussianNoise GaussianDropout AlphaDropout ActivityRegularization Activation ReLU Softmax LeakyReLU ELU
MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D MaxPool1D MaxPool2D
MaxPool3D AvgPool1D AvgPool2D AvgPool3D GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D
GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D
GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D Add Subtract Multiply Average Maximum Minimum Concatenate Dot
ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D UpSampling1D UpSampling2D
UpSampling3D Rescaling Resizing CenterCrop Identity UnitNormalization RandomFlip RandomRotation RandomZoom
RandomTranslation RandomShear RandomContrast RandomBrightness RandomCrop Masking
""".split())


def limit(name: str, default: int) -> int:
    """A positive integer limit from environment variable ``name``, else ``default``."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise ModelLoadError(f"{name}={text!r}: expected a positive number of parameters")
    return value


@dataclass
class LayerCount:
    """What the config declares: parameters per named layer, and layers whose size cannot be told."""

    params: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.params.values())


def check_keras_archive(path: str | os.PathLike) -> LayerCount:
    """Refuse a ``.keras`` archive whose members or declared layers are out of bounds (ModelLoadError);
    return the parameter count its config declares."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            _check_members(p, list(infos.values()))
            if "config.json" not in infos:
                raise ModelLoadError(f"{p}: not a Keras model archive (no config.json inside)")
            config = _read_config(p, zf)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ModelLoadError(f"{p}: not a valid .keras archive ({exc})") from None
    count = count_params(p, config)
    _check_weights(p, infos, count)
    return count


def _check_members(p: Path, infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MEMBERS:
        raise ModelLoadError(f"{p}: {len(infos)} files inside; a Keras model archive holds a few")
    caps = {"config.json": MAX_CONFIG_BYTES, "metadata.json": MAX_METADATA_BYTES}
    for info in infos:
        cap = caps.get(info.filename)
        if cap is not None and info.file_size > cap:
            raise ModelLoadError(f"{p}: its {info.filename} inflates to {info.file_size:,} bytes, over the "
                                 f"{cap:,}-byte limit; refusing to read it (not a model cnnedge can trust)")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ModelLoadError(f"{p}: its {info.filename} inflates {info.file_size / max(info.compress_size, 1):,.0f}"
                                 f" times ({info.compress_size:,} -> {info.file_size:,} bytes): a zip bomb, refused")


def _read_config(p: Path, zf: zipfile.ZipFile) -> Any:
    with zf.open("config.json") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)  # zipfile stops at the declared size, checked above
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{p}: its config.json is over the {MAX_CONFIG_BYTES:,}-byte limit")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{p}: its config.json is not valid JSON ({str(exc)[:200]})") from None


def _check_weights(p: Path, infos: dict[str, zipfile.ZipInfo], count: LayerCount) -> None:
    max_layer = limit("CNNEDGE_MAX_LAYER_PARAMS", DEFAULT_MAX_LAYER_PARAMS)
    max_total = limit("CNNEDGE_MAX_MODEL_PARAMS", DEFAULT_MAX_PARAMS)
    for name, n in count.params.items():
        if n > max_layer:
            raise ModelLoadError(f"{p}: layer {name} declares {n:,} parameters, over the {max_layer:,} limit for "
                                 "one layer; refused before building it (CNNEDGE_MAX_LAYER_PARAMS raises the limit)")
    if count.total > max_total:
        raise ModelLoadError(f"{p}: its layers declare {count.total:,} parameters, over the {max_total:,} limit; "
                             "refused before building them (CNNEDGE_MAX_MODEL_PARAMS raises the limit)")
    params = max_total if count.unknown else count.total
    cap = WEIGHT_BYTES_PER_PARAM * params + WEIGHT_SLACK + LAYER_SLACK * (len(count.params) + len(count.unknown))
    for name, info in infos.items():
        if name not in ("config.json", "metadata.json") and info.file_size > cap:
            raise ModelLoadError(f"{p}: its {name} holds {info.file_size:,} bytes, far more than the "
                                 f"{count.total:,} parameters its layers declare need; refused")


# ---------------------------------------------------------------------------------------------
def count_params(p: Path, config: Any) -> LayerCount:
    """Parameters per layer, from each layer's config and recorded input shape (``build_config``)."""
    count = LayerCount()
    for path, layer in _layers(config, ""):
        kind = layer.get("class_name")
        if not isinstance(kind, str):
            raise ModelLoadError(f"{p}: layer {path or '?'} has no class_name; not a Keras model config")
        if kind in WEIGHTLESS:
            continue
        rule = _RULES.get(kind)
        if rule is None:
            count.unknown.append(f"{path} ({kind})")
            continue
        cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        shape = _input_shape(layer)
        if shape is None:
            raise ModelLoadError(f"{p}: layer {path} ({kind}) records no input shape (build_config), so its size "
                                 "cannot be bounded before Keras builds it; re-save the model with Keras 3")
        try:
            count.params[f"{path} ({kind})"] = int(rule(cfg, shape))
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError):
            raise ModelLoadError(f"{p}: layer {path} ({kind}) has a config Keras could not build "
                                 f"(input shape {shape})") from None
    return count


def _layers(node: Any, prefix: str) -> Iterator[tuple[str, dict]]:
    """Every layer config in a model config, nested models included, with a readable path."""
    stack = [(node, prefix, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > 64 or not isinstance(item, dict):
            continue
        cfg = item.get("config") if isinstance(item.get("config"), dict) else {}
        name = cfg.get("name") or item.get("name") or "?"
        path = f"{where}/{name}" if where else str(name)
        if item.get("class_name") in CONTAINERS:
            layers = cfg.get("layers")
            for child in reversed(layers if isinstance(layers, list) else []):
                stack.append((child, path if depth else "", depth + 1))
            continue
        if item.get("class_name") == "Bidirectional" or item.get("class_name") == "TimeDistributed":
            inner = cfg.get("layer")
            if isinstance(inner, dict):
                inner = {**inner, "build_config": inner.get("build_config") or item.get("build_config")}
                stack.append((inner, path, depth + 1))
                if item.get("class_name") == "Bidirectional":
                    stack.append((inner, path + "/backward", depth + 1))
            continue
        yield repr(path), item


def _input_shape(layer: dict) -> list[int] | None:
    build = layer.get("build_config")
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if isinstance(shape, list) and shape and isinstance(shape[0], list):
        shape = shape[0]  # several inputs: the first carries the channels
    if not isinstance(shape, list):
        return None
    return [_dim(v) for v in shape]


def _dim(v: Any) -> int:
    if v is None:
        return 1
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"bad dimension {v!r}")
    return v


def _pos(cfg: dict, key: str, default: Any = None) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{key} must be a positive integer")
    return v


def _kernel(cfg: dict, rank: int) -> int:
    k = cfg.get("kernel_size", 1)
    ks = [k] * rank if isinstance(k, int) else list(k)
    if len(ks) != rank:
        raise ValueError("kernel_size")
    return math.prod(_pos({"k": v}, "k") for v in ks)


def _channels(cfg: dict, shape: list[int]) -> int:
    return shape[1] if cfg.get("data_format") == "channels_first" else shape[-1]


def _bias(cfg: dict) -> int:
    return 1 if cfg.get("use_bias", True) else 0


def _conv(rank: int, transpose: bool = False) -> Any:
    def rule(cfg: dict, shape: list[int]) -> int:
        filters, cin = _pos(cfg, "filters"), _channels(cfg, shape)
        groups = 1 if transpose else _pos(cfg, "groups", 1)
        return _kernel(cfg, rank) * (cin // groups) * filters + filters * _bias(cfg)
    return rule


def _depthwise(rank: int) -> Any:
    def rule(cfg: dict, shape: list[int]) -> int:
        mult, cin = _pos(cfg, "depth_multiplier", 1), _channels(cfg, shape)
        return _kernel(cfg, rank) * cin * mult + cin * mult * _bias(cfg)
    return rule


def _separable(rank: int) -> Any:
    def rule(cfg: dict, shape: list[int]) -> int:
        mult, cin, filters = _pos(cfg, "depth_multiplier", 1), _channels(cfg, shape), _pos(cfg, "filters")
        return _kernel(cfg, rank) * cin * mult + cin * mult * filters + filters * _bias(cfg)
    return rule


def _rnn(gates: int, extra_bias: int = 0) -> Any:
    def rule(cfg: dict, shape: list[int]) -> int:
        u = _pos(cfg, "units")
        return gates * (shape[-1] * u + u * u + u * (1 + extra_bias))
    return rule


def _per_feature(copies: int) -> Any:
    return lambda cfg, shape: copies * math.prod(shape[1:]) + 1


_RULES: dict[str, Any] = {
    "Dense": lambda cfg, shape: shape[-1] * _pos(cfg, "units") + _pos(cfg, "units") * _bias(cfg),
    "Embedding": lambda cfg, shape: _pos(cfg, "input_dim") * _pos(cfg, "output_dim"),
    "BatchNormalization": lambda cfg, shape: 4 * max(shape[1:]),
    "LayerNormalization": _per_feature(2),
    "GroupNormalization": lambda cfg, shape: 2 * max(shape[1:]),
    "Normalization": _per_feature(2),
    "PReLU": _per_feature(1),
    "SimpleRNN": _rnn(1),
    "LSTM": _rnn(4),
    "GRU": _rnn(3, extra_bias=1),
    **{f"Conv{r}D": _conv(r) for r in (1, 2, 3)},
    **{f"Convolution{r}D": _conv(r) for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": _conv(r, transpose=True) for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": _depthwise(r) for r in (1, 2)},
    **{f"SeparableConv{r}D": _separable(r) for r in (1, 2)},
}


def input_channels(path: str | os.PathLike) -> int | None:
    """The image channels a ``.keras`` archive's config declares for its first layer, or None when it cannot tell
    (a description check asks for the colour order of a colour model before the model is loaded)."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            config = _read_config(p, zf)
        for _, layer in _layers(config, ""):
            shape = _input_shape(layer)
            if shape is not None and len(shape) == 4:
                cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
                return _channels(cfg, shape)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, ValueError, ModelLoadError):
        return None
    return None
