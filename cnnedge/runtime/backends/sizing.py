"""The image size of a graph whose height and width are dynamic (``[N, 3, ?, ?]``).

The size comes, in this order, from the user (``--input-size`` / ``input_size=``),
the model card, or Ultralytics' ``imgsz`` metadata; fixed dims in the graph always
win and a conflicting value is an error. A size found is written into the
backend's ``input_spec`` so that every caller (Classifier, cnn-bench) sees one
fixed shape; ``size_from`` says where it came from. Pixels per batch are capped
for such graphs: a card or flag claiming 8192x8192 must not allocate gigabytes.
"""
from __future__ import annotations

import ast
from typing import Any

from ...errors import CardError, ModelLoadError, UsageError
from .base import TensorSpec

#: at most this many pixels per batch (batch x height x width) for a graph of dynamic size
#: (float32 RGB: 400 MB); one image at most 5792x5792
MAX_BATCH_PIXELS = 1 << 25
_FLAG = "--input-size (input_size=)"


def image_axes(shape: tuple[int | None, ...], layout: str | None = None) -> tuple[int, int, int] | None:
    """Positions of (height, width, channels) in a 4-D input, or None when they cannot be told."""
    if len(shape) != 4:
        return None
    if layout is None:
        if shape[1] in (1, 3) and shape[3] not in (1, 3):
            layout = "NCHW"
        elif shape[3] in (1, 3):
            layout = "NHWC"
        else:
            return None
    return (2, 3, 1) if layout == "NCHW" else (1, 2, 3)


def metadata_size(metadata: Any) -> tuple[int, int] | None:
    """Ultralytics' ``imgsz`` (``"[224, 224]"`` or ``"224"``), read with literal_eval, never eval."""
    raw = (metadata or {}).get("imgsz")
    if raw is None:
        return None
    try:
        v = ast.literal_eval(str(raw)[:100])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(v, int):
        v = [v, v]
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 16384 for x in v)):
        return int(v[0]), int(v[1])
    return None


def dynamic_size_error(path: str, spec: TensorSpec) -> UsageError:
    """The one message for a dynamic-size graph with no size given, in every tool (exit 2)."""
    shape = "x".join("?" if d is None else str(d) for d in spec.shape)
    return UsageError(f"{path}: input {spec.name!r} has a dynamic size ({shape}) and nothing says the image size; "
                      "give it with --input-size HxW (input_size=(h, w) in Python), e.g. --input-size 224x224")


def set_input_size(be: Any, input_size: tuple[int, int] | None) -> None:
    """Fix a dynamic height/width of ``be.input_spec`` from the user, the card or the metadata."""
    spec: TensorSpec = be.input_spec
    card = be.card
    axes = image_axes(spec.shape, card.input.layout if card is not None else None)
    be.size_from = None
    if axes is None:
        return  # not an image input: the Classifier says so
    hi, wi, ci = axes
    graph = (spec.shape[hi], spec.shape[wi])
    if None not in graph:
        if input_size is not None and tuple(input_size) != graph:
            raise UsageError(f"{_FLAG} {input_size[0]}x{input_size[1]}: the graph of {be.path} fixes its input "
                             f"at {graph[0]}x{graph[1]}; drop --input-size")
        return
    card_size = (card.input.height, card.input.width) if card is not None else None
    if input_size is not None:
        if card_size is not None and tuple(input_size) != card_size:
            raise UsageError(f"{_FLAG} {input_size[0]}x{input_size[1]}: the model card of {be.path} says "
                             f"{card_size[0]}x{card_size[1]}; drop --input-size")
        size, source = tuple(input_size), _FLAG
    elif card_size is not None:
        size, source = card_size, "the card's input.height x input.width"
    else:
        size, source = metadata_size(getattr(be, "metadata", None)), "the file's imgsz metadata"
        if size is None:
            return
    h, w = int(size[0]), int(size[1])
    for i, (d, v) in enumerate(zip(graph, (h, w))):
        if d is not None and d != v:
            raise UsageError(f"{source} says {h}x{w}, the graph of {be.path} fixes the "
                             f"{'height' if i == 0 else 'width'} at {d}")
    if h * w > MAX_BATCH_PIXELS:
        msg = (f"{source} {h}x{w} is {h * w:,} pixels per image, over the {MAX_BATCH_PIXELS:,}-pixel limit for a "
               f"graph of dynamic size ({be.path})")
        if source == _FLAG:
            raise UsageError(msg + "; give a smaller --input-size")
        raise CardError(msg + "; the card or file is wrong: give the right size with --input-size")
    shape = list(spec.shape)
    shape[hi], shape[wi] = h, w
    be.set_input_spec(TensorSpec(spec.name, tuple(shape), spec.dtype))
    be.size_from = source


def most_batch(be: Any) -> int | None:
    """The largest batch a dynamic graph's chosen size allows under MAX_BATCH_PIXELS (None: no limit)."""
    hw = _dynamic_hw(be)
    return None if hw is None else max(1, MAX_BATCH_PIXELS // (hw[0] * hw[1]))


def _dynamic_hw(be: Any) -> tuple[int, int] | None:
    if getattr(be, "size_from", None) is None:
        return None
    axes = image_axes(be.input_spec.shape, be.card.input.layout if be.card is not None else None)
    if axes is None:
        return None
    return be.input_spec.shape[axes[0]], be.input_spec.shape[axes[1]]


def batch_memory_budget() -> int:
    """Bytes one batch's input may take: a quarter of this machine's memory (8 GiB when it cannot be read)."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_batch_memory(be: Any, batch: int, flag: str = "--batch") -> None:
    """UsageError naming ``flag`` when ``batch`` inputs of the model's fixed size would not fit in memory."""
    import numpy as np

    dims = be.input_spec.shape[1:]
    if None in dims:
        return
    per = int(np.prod(dims, dtype=object)) * np.dtype(be.input_spec.dtype).itemsize + 3 * int(np.prod(dims, dtype=object))
    budget = batch_memory_budget()
    if batch * per <= budget:
        return
    need = (f"a batch of {batch:,} inputs of {'x'.join(map(str, dims))} {be.input_spec.dtype} needs "
            f"{batch * per / 2**30:,.3g} GiB, over the {budget / 2**30:.3g} GiB a batch may take here (a quarter of "
            "memory)")
    if be.fixed_batch is not None and be.fixed_batch <= batch:  # the graph's own batch: not the user's choice
        raise ModelLoadError(f"{be.path}: {need}, and its graph fixes that batch; not a model to run here")
    raise UsageError(f"{flag} {batch}: {need} for {be.path}; use {flag} {max(1, budget // per)} or less")


def check_batch_pixels(be: Any, batch: int, flag: str = "--batch") -> None:
    """UsageError when ``batch`` images at a dynamic graph's chosen size exceed MAX_BATCH_PIXELS, or
    when the batch would not fit in memory (:func:`check_batch_memory`)."""
    check_batch_memory(be, batch, flag)
    hw = _dynamic_hw(be)
    if hw is None:
        return
    h, w = hw
    if batch * h * w > MAX_BATCH_PIXELS:
        raise UsageError(f"{flag} {batch} at {h}x{w} ({be.size_from}) is {batch * h * w:,} pixels per batch, over "
                         f"the {MAX_BATCH_PIXELS:,}-pixel limit for a graph of dynamic size; use "
                         f"{flag} {most_batch(be)} or less, or a smaller input size")
