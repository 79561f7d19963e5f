"""The classic tutorial networks, as a registry of Keras 3 model builders.

Each preset is a plain function ``build(x, num_classes, weights)`` that receives
the already-normalised input tensor and returns the softmax output; it is
registered with :func:`register`, which records how its input is normalised and
in which colour order. :func:`create_model` adds the input and the
normalisation layers (standard ``Rescaling``/``Normalization`` layers, no
``Lambda``, so the model loads with ``safe_mode=True``), so that every model
takes float32 NHWC pixels in 0..255 and the card can say
``y = (x * scale - mean) / std`` truthfully. Input size and class count come
from the data.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError, arg_name

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[..., Any]
    summary: str
    size: tuple[int, int]  # the tutorial's input size, used when the data has no fixed size
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    preprocess_name: str = "scale"
    epochs: int = 10
    batch_size: int = 32
    transfer: bool = False
    learning_rate: float = 1e-3


PRESETS: dict[str, Preset] = {}


def register(name: str, *, size: tuple[int, int], **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add a builder to :data:`PRESETS` under ``name``; its docstring's first line is the summary."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().splitlines()
        if not doc:
            raise ValueError(f"preset {name}: the builder needs a one-line docstring")
        if name in PRESETS:
            raise ValueError(f"preset {name} is registered twice")
        PRESETS[name] = Preset(name=name, build=fn, summary=doc[0], size=size, **meta)
        return fn
    return deco


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a UsageError naming the closest ones."""
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(f"unknown preset {name!r}{hint} (cnn-train --list names them all)") from None


def list_presets() -> list[str]:
    """One line per preset: name and the tutorial it reproduces."""
    width = max(len(n) for n in PRESETS)
    return [f"{p.name:<{width}}  {p.summary}" for p in PRESETS.values()]


def create_model(name: str, input_shape: tuple[int, int, int], num_classes: int, weights: str | None = None) -> Any:
    """Build preset ``name`` for ``input_shape`` (H, W, C) pixels in 0..255 and ``num_classes`` outputs."""
    from .._lazy import require

    keras = require("keras", "training")
    p = get_preset(name)
    h, w, c = (int(v) for v in input_shape)
    if c not in (1, 3):
        raise UsageError(f"preset {name}: input must have 1 or 3 channels, found {c}")
    if p.transfer and c != 3:
        raise UsageError(f"preset {name} uses an ImageNet base that needs 3 colour channels, found {c}")
    if num_classes < 2:
        raise UsageError(f"a classifier needs at least 2 classes, found {num_classes}")
    if not p.transfer and weights not in (None, "none"):
        raise UsageError(f"--weights applies to the transfer presets (vgg16-transfer, vgg19-transfer, "
                         f"mobilenetv2-transfer), not to {name}")
    inputs = keras.Input(shape=(h, w, c), dtype="float32", name="pixels")
    x = inputs
    if p.scale != 1.0:
        x = keras.layers.Rescaling(p.scale, name="scale")(x)
    if any(m != 0.0 for m in p.mean) or any(s != 1.0 for s in p.std):
        mean = list(p.mean) * (c if len(p.mean) == 1 else 1)
        var = [s * s for s in p.std] * (c if len(p.std) == 1 else 1)
        x = keras.layers.Normalization(mean=mean, variance=var, name="mean_std")(x)
    try:
        outputs = p.build(x, num_classes, weights)
    except ValueError as exc:
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "invalid shape"
        raise UsageError(f"preset {name} cannot take {h}x{w}x{c} input ({text}); "
                         f"use a larger --img-size (the tutorial uses {p.size[0]}x{p.size[1]})") from None
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))


def _k() -> Any:
    from .._lazy import require

    return require("keras", "training")


def _head(x: Any, num_classes: int) -> Any:
    # float32 softmax keeps the probabilities exact under mixed precision
    return _k().layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def _conv(x: Any, filters: int, kernel: int = 3, **kw: Any) -> Any:
    kw.setdefault("activation", "relu")
    return _k().layers.Conv2D(filters, kernel, **kw)(x)


# ---------------------------------------------------------------------------------------------
# the presets
# ---------------------------------------------------------------------------------------------
@register("mnist-dense", size=(28, 28), epochs=10, batch_size=32)
def mnist_dense(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """Keras MNIST baseline: Flatten + Dense(100) + softmax, ~97% test accuracy."""
    L = _k().layers
    x = L.Flatten()(x)
    x = L.Dense(100, activation="relu")(x)
    return _head(x, num_classes)


@register("mnist-cnn", size=(28, 28), epochs=10, batch_size=32)
def mnist_cnn(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """Keras MNIST CNN: one Conv(25, 3x3) + MaxPool + Dense(100), 98%+ test accuracy."""
    L = _k().layers
    x = _conv(x, 25, 3)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(100, activation="relu")(x)
    return _head(x, num_classes)


@register("fashion-cnn", size=(28, 28), epochs=10, batch_size=64)
def fashion_cnn(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """TensorFlow CNN tutorial on Fashion-MNIST: Conv32-Pool-Conv64-Pool-Conv64 + Dense64, ~91% accuracy."""
    L = _k().layers
    x = _conv(x, 32)
    x = L.MaxPooling2D(2)(x)
    x = _conv(x, 64)
    x = L.MaxPooling2D(2)(x)
    x = _conv(x, 64)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu")(x)
    return _head(x, num_classes)


@register("cifar10-cnn", size=(32, 32), epochs=10, batch_size=64)
def cifar10_cnn(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """CIFAR-10 CNN tutorial: Conv32/64/128 with pooling + Dense128, ~70% test accuracy in 10 epochs."""
    L = _k().layers
    for f in (32, 64, 128):
        x = _conv(x, f, padding="same")
        x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu")(x)
    return _head(x, num_classes)


@register("cifar10-wide", size=(32, 32), epochs=20, batch_size=128)
def cifar10_wide(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """CIFAR-10 wide CNN tutorial: Conv50-75-125 with dropout + Dense 500/250, ~78-80% test accuracy."""
    L = _k().layers
    x = _conv(x, 50, padding="same")
    x = _conv(x, 75, padding="same")
    x = L.MaxPooling2D(2)(x)
    x = L.Dropout(0.25)(x)
    x = _conv(x, 125, padding="same")
    x = L.MaxPooling2D(2)(x)
    x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    x = L.Dense(500, activation="relu")(x)
    x = L.Dropout(0.4)(x)
    x = L.Dense(250, activation="relu")(x)
    x = L.Dropout(0.3)(x)
    return _head(x, num_classes)


@register("food101-cnn", size=(200, 200), epochs=15, batch_size=32)
def food101_cnn(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """Food-101 CNN tutorial (200x200x3): Conv32-32-64 with pooling and dropout + Dense128, ~40-50% top-1."""
    L = _k().layers
    for f in (32, 32, 64):
        x = _conv(x, f, padding="same")
        x = L.MaxPooling2D(2)(x)
    x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    return _head(x, num_classes)


@register("imagenette-cnn", size=(224, 224), epochs=20, batch_size=32)
def imagenette_cnn(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """Imagenette CNN from scratch (224x224): strided 5x5/3x3 convs with batch norm, ~70-75% accuracy."""
    L = _k().layers
    for f, k in ((32, 5), (64, 3), (128, 3), (256, 3)):
        x = L.Conv2D(f, k, strides=2, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    return _head(x, num_classes)


def _imagenet_base(app: str, x: Any, weights: str | None) -> Any:
    keras = _k()
    w = weights_arg(weights)
    shape = tuple(int(d) for d in x.shape[1:])
    if min(shape[:2]) < 32:
        raise ValueError(f"{app} needs at least 32x32 input")
    try:
        base = getattr(keras.applications, app)(include_top=False, weights=w, input_shape=shape)
    except ValueError:
        raise
    except Exception as exc:  # offline download of ImageNet weights
        if w == "imagenet":
            raise UsageError(f"cannot download the ImageNet weights for {app} ({str(exc).strip()[:160]}); "
                             "Keras caches them in ~/.keras/models/: place the file there by hand, pass "
                             f"{arg_name('weights')} PATH to a local .h5 file, or {arg_name('weights')} none to train "
                             "from scratch") from None
        raise UsageError(f"cannot load weights {weights} for {app}: {str(exc).strip()[:200]}") from None
    base.trainable = False  # frozen: only the small head trains
    return base(x, training=False)


def weights_arg(weights: str | None) -> str | None:
    """``--weights`` as Keras takes it: None, ``"imagenet"`` or an existing file's absolute path;
    UsageError for a path that is not a file."""
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        return "imagenet"
    p = Path(weights).expanduser()
    if not p.is_file():
        raise UsageError(f"{arg_name('weights')} {weights}: no such file; give imagenet, none or a path to a "
                         "weights file")
    return str(p.resolve())


@register("vgg16-transfer", size=(224, 224), color="BGR", scale=1.0, mean=CAFFE_MEAN_BGR, std=(1.0,),
          preprocess_name="caffe", epochs=10, batch_size=32, transfer=True)
def vgg16_transfer(x: Any, num_classes: int, weights: str | None = "imagenet") -> Any:
    """Keras transfer-learning tutorial: frozen VGG16 (ImageNet, 71% top-1) + GAP + Dense(256) head."""
    L = _k().layers
    x = _imagenet_base("VGG16", x, weights)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(256, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    return _head(x, num_classes)


@register("vgg19-transfer", size=(224, 224), color="BGR", scale=1.0, mean=CAFFE_MEAN_BGR, std=(1.0,),
          preprocess_name="caffe", epochs=10, batch_size=32, transfer=True)
def vgg19_transfer(x: Any, num_classes: int, weights: str | None = "imagenet") -> Any:
    """Keras transfer-learning tutorial: frozen VGG19 (ImageNet, 71% top-1) + GAP + Dense(256) head."""
    L = _k().layers
    x = _imagenet_base("VGG19", x, weights)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(256, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    return _head(x, num_classes)


@register("mobilenetv2-transfer", size=(224, 224), scale=1.0 / 127.5, mean=(1.0,), std=(1.0,),
          preprocess_name="tf", epochs=10, batch_size=32, transfer=True)
def mobilenetv2_transfer(x: Any, num_classes: int, weights: str | None = "imagenet") -> Any:
    """TensorFlow transfer-learning tutorial: frozen MobileNetV2 (ImageNet, 72% top-1) + GAP head, ~95%+ on its data."""
    L = _k().layers
    x = _imagenet_base("MobileNetV2", x, weights)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    return _head(x, num_classes)


@register("digits-cnn", size=(32, 32), epochs=20, batch_size=32, learning_rate=2e-3)
def digits_cnn(x: Any, num_classes: int, weights: str | None = None) -> Any:
    """Small CNN for the embedded scikit-learn digits (32x32x3): Conv16-32-64 with pooling, ~98-99% test accuracy."""
    L = _k().layers
    for f in (16, 32):
        x = _conv(x, f, padding="same", use_bias=False, activation=None)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.MaxPooling2D(2)(x)
    x = _conv(x, 64, padding="same", use_bias=False, activation=None)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.3)(x)
    x = L.Dense(64, activation="relu")(x)
    return _head(x, num_classes)
