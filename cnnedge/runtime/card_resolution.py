"""The card a model runs with: the one it carries, checked against its graph, or one made from the graph and
the caller's description (cnn-infer's flags, the Classifier's keywords) for a model without one; and the checks
of its output and resize that need the opened backend."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..artifact.card import MAX_SIDE, InputSpec, ModelCard, Preprocess, card_path_for
from ..errors import CardError, DescriptionNeeded, ModelLoadError, UsageError, arg_name
from ..imaging.opencv import MAX_PIXELS
from .backends.base import Backend
from .backends.sizing import dynamic_size_error, image_axes
from .describe import PREPROCESS_KEYS, check_description, flag_names
from .labels import check_count, metadata_labels, read_labels

class CardMissingWarning(UserWarning):
    """The model carries no card: preprocessing comes from arguments and defaults."""


def _fits(spec: InputSpec, shape: tuple[int | None, ...]) -> bool:
    return all(d is None or d == s for d, s in zip(shape[1:], spec.shape))


class OutputKindWarning(UserWarning):
    """The output kind the user named does not look like what the model gives."""


class Resolved(NamedTuple):
    """What :func:`resolve_card` decides: the card to run with, whether the output kind
    must still be detected, and where the class names came from (for the startup line)."""

    card: ModelCard
    detect: bool
    labels_from: str


def resolve_card(backend: Backend, *, labels: Any = None, scale: Any = None, mean: Any = None, std: Any = None,
                 rgb: Any = None, resize: Any = None, crop_pct: Any = None, pad_value: Any = None,
                 interpolation: Any = None, output: Any = None, assume_preprocessing: bool = True) -> Resolved:
    """The card to run ``backend`` with.

    With a card in the artifact, it is checked against the graph. Without one, the
    input's layout, size and channels come from the graph (a dynamic size from
    ``load_backend``'s ``input_size``), class names from ``labels`` or the file's
    metadata, and the rest from the arguments (the same as cnn-infer's flags,
    validated by :func:`~cnnedge.runtime.describe.check_description`); a
    CardMissingWarning says what was assumed. With ``assume_preprocessing=False``
    (cnn-infer without --assume-preprocessing) a file without a card is refused
    unless its pixel arithmetic (scale, mean or std) is described: generic defaults
    give wrong answers with exit 0 (a chess-tile model said "empty" for every tile).
    A ``.keras`` file without a card is always refused unless described.
    """
    path = backend.path
    spec_in = backend.input_spec
    shape = spec_in.shape
    desc = check_description(dict(labels=labels, scale=scale, mean=mean, std=std, rgb=rgb, resize=resize,
                                  crop_pct=crop_pct, pad_value=pad_value, interpolation=interpolation,
                                  output=output))
    names = read_labels(desc.get("labels"))
    given_labels = desc.get("labels")
    labels_flag = "labels" if not isinstance(given_labels, (str, os.PathLike)) else Path(given_labels).name
    if len(shape) != 4:
        raise ModelLoadError(f"{path}: input {spec_in.name!r} has shape {shape}; an image classifier "
                             "takes a 4-D NHWC or NCHW tensor")
    if backend.card is not None:
        return _carded(backend, desc, names, labels_flag)
    if backend.name == "keras" and not any(k in desc for k in PREPROCESS_KEYS):
        raise UsageError(f"{path} has no model card ({card_path_for(path).name} beside it), so nothing says how its "
                         "inputs were scaled; put the card.json of its training run beside it, or describe the model "
                         "with --scale, --mean, --std, --resize and --labels (scale=, mean=, ... in Python), e.g. "
                         "--scale 1/255 --labels labels.txt")
    axes = image_axes(shape)
    if axes is None:
        raise ModelLoadError(f"{path}: input {spec_in.name!r} has shape {_dims(shape)}: no axis of 1 (gray) or 3 "
                             "(colour) channels (a dynamic channel count says neither); cnnedge feeds images")
    if None in (shape[axes[0]], shape[axes[1]]):
        raise dynamic_size_error(path, spec_in)
    h, w, c = (shape[i] for i in axes)
    if max(h, w) > MAX_SIDE:
        raise ModelLoadError(f"{path}: input {spec_in.name!r} is {h}x{w} pixels, over the {MAX_SIDE}-pixel side "
                             "cnnedge feeds; not an image classifier's input")
    layout = "NCHW" if axes[2] == 1 else "NHWC"
    dtype = spec_in.dtype
    if dtype not in ("uint8", "float32", "float16"):
        raise ModelLoadError(f"{path}: input type {dtype} is not an image type (uint8, float32, float16)")
    if not assume_preprocessing and not any(k in desc for k in ("scale", "mean", "std")):
        raise DescriptionNeeded(
            f"{path} carries no model card, so nothing says how its pixels were scaled; describe it with --scale, "
            "--mean, --std and --rgb/--no-rgb (scale=, mean=, std=, rgb= in Python), e.g. --scale 1/255 --mean "
            "0.485,0.456,0.406 --std 0.229,0.224,0.225, or pass --assume-preprocessing (assume_preprocessing=True) to "
            "feed 0..1 RGB pixels; with --labels and a --source folder of class folders cnn-infer measures the common "
            "conventions on them and lists the best")
    color = "GRAY" if c == 1 else ("BGR" if desc.get("rgb") is False else "RGB")
    assumed = [k for k in ("scale", "mean", "std", "rgb", "resize") if k not in desc and (k != "rgb" or c == 3)]
    warnings.warn(f"{path} carries no model card; size and layout come from the graph"
                  + (f", and these are assumed: {_assumed(assumed)}" if assumed else ""),
                  CardMissingWarning, stacklevel=3)
    names, labels_from = _class_names(backend, names, labels_flag)
    try:
        pre = Preprocess(resize=desc.get("resize", "stretch"), scale=desc.get("scale", 1 / 255),
                         mean=desc.get("mean", (0.0,)), std=desc.get("std", (1.0,)), in_graph=dtype == "uint8",
                         name="arguments", crop_pct=desc.get("crop_pct", 1.0), pad_value=desc.get("pad_value", 0.0),
                         interpolation=desc.get("interpolation", "auto"))
        card = ModelCard(name=Path(path).stem, classes=names, input=InputSpec(h, w, c, layout, dtype, color),
                         preprocess=pre, output=desc.get("output", "probabilities"))
    except CardError as exc:
        raise UsageError(str(exc).replace("model card: preprocess.", "").replace("model card: ", "")) from None
    return Resolved(card, "output" not in desc, labels_from)


def _assumed(keys: list[str]) -> str:
    """``scale 1/255, mean 0, std 1, RGB``: the defaults a card-less model runs on, as a person reads them."""
    text = {"scale": "scale 1/255", "mean": "mean 0", "std": "std 1", "rgb": "RGB", "resize": "resize stretch"}
    return ", ".join(text[k] for k in keys)


def _carded(backend: Backend, desc: dict[str, Any], names: tuple[str, ...] | None, labels_flag: str) -> Resolved:
    """The artifact's own card, checked against its graph (a layout the card got the other way round is
    mended); description values are refused, labels may rename the classes."""
    path, shape, card = backend.path, backend.input_spec.shape, backend.card
    assert card is not None
    given = [k for k in PREPROCESS_KEYS + ("output",) if k in desc]
    if given:
        raise UsageError(f"{path} carries a model card, which fixes {', '.join(given)}; drop "
                         f"{flag_names(given)} (they are for models without a card)")
    spec = card.input
    if not _fits(spec, shape):
        other = InputSpec(spec.height, spec.width, spec.channels,
                          "NCHW" if spec.layout == "NHWC" else "NHWC", spec.dtype, spec.color)
        if not _fits(other, shape):
            raise CardError(f"{path}: the card says input {spec.layout} {spec.height}x{spec.width}x"
                            f"{spec.channels}, the graph takes {shape}; re-export the model")
        card = card.replace(input={"layout": other.layout})
    if names is None:
        return Resolved(card, False, "the model card")
    if len(names) != card.num_classes:
        raise UsageError(f"labels: {len(names)} names given, the model's card has {card.num_classes} classes")
    return Resolved(card.replace(classes=names), False, labels_flag)


def _class_names(backend: Backend, names: tuple[str, ...] | None, labels_flag: str) -> tuple[tuple[str, ...], str]:
    """The class names of a model without a card and where they came from: the labels given, the file's
    metadata, or indices; checked against the output's width when it is known."""
    path, n_out = backend.path, _output_width(backend)
    if names is not None:
        labels_from = labels_flag
    else:
        meta = metadata_labels(backend.metadata, path)
        if meta is None:
            return ("0", "1") if n_out is None else tuple(str(i) for i in range(n_out)), "indices (no labels given)"
        names, labels_from = meta[0], f"the file's metadata ({meta[1]!r})"
    check_count(names, n_out, "labels" if labels_from == labels_flag else labels_from, path,
                labels_from == labels_flag)
    return names, labels_from


def _dims(shape: tuple[int | None, ...]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _output_width(backend: Backend) -> int | None:
    """Scores per image the graph declares (dims of 1 squeezed: [N,10,1,1] is 10), None when dynamic; a
    ModelLoadError when the output cannot be a classifier's: integer, 1 class, or a matrix per image."""
    spec, path = backend.output_spec, backend.path
    if not spec.dtype.startswith("float"):
        raise ModelLoadError(f"{path}: output {spec.name!r} is {spec.dtype} {_dims(spec.shape)} (class indices, an "
                             "ArgMax?); cnnedge needs the model's float scores, one per class: export the graph "
                             "before its ArgMax")
    tail = spec.shape[1:]
    check_scores_shape(path, spec.name, tail)
    if not tail or None in tail:
        return None
    n = int(np.prod(tail))
    if n < 2:
        raise ModelLoadError(f"{path}: output {spec.name!r} has 1 value per image ({_dims(spec.shape)}), a "
                             "model of 1 class; a classifier scores at least 2 classes (a single sigmoid output is not supported)")
    return n


def check_scores_shape(path: str, name: str, tail: tuple[int | None, ...]) -> None:
    """ModelLoadError unless at most one dim after the batch is above 1: one score per class."""
    if sum(d is None or d > 1 for d in tail) > 1:
        raise ModelLoadError(f"{path}: output {name!r} is {_dims(tail)} per image, not one score per class; "
                             "cnnedge reads a classifier's [N, classes] output (or [N, classes, 1, 1])")


def check_crop(path: str, card: ModelCard, from_card: bool) -> None:
    """The resize before a centre crop (input / crop_pct) stays under the decode pixel limit."""
    c = card.preprocess.crop_pct
    if c == 1 or card.preprocess.resize in ("letterbox", "pad"):
        return
    th, tw = math.floor(card.input.height / c), math.floor(card.input.width / c)
    if th * tw <= MAX_PIXELS:
        return
    what = (f"crop_pct {c:g} resizes every image to {th}x{tw} before the crop, over the {MAX_PIXELS:,}-pixel "
            "limit")
    if from_card:
        raise CardError(f"{path}: the card's {what}; re-export the model with a crop_pct near 0.875")
    raise UsageError(f"{arg_name('crop_pct')} {c:g}: {what} ({path}); give the fraction of the resized image to "
                     "keep, e.g. 0.875")
