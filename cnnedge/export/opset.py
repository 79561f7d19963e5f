"""Bring a model from elsewhere to the opset the export steps need, with onnx's version converter.

Per-channel Q/DQ (``DequantizeLinear``'s ``axis``) exists from opset 13, and real third-party files are
often older (PyTorch's default was 11 for years, old tf2onnx wrote 9); quantizing them as they are writes an
invalid graph. Converting first made three real classifiers export (measured).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, first_line

DEFAULT = 17
LOWEST = 13  # per-channel Q/DQ


@dataclass(frozen=True)
class OpsetChange:
    """What the export did to the source's opset, for the report."""

    source: int
    exported: int
    converted: bool
    reason: str

    def line(self) -> str:
        return (f"opset {self.source} -> {self.exported} ({self.reason})" if self.converted
                else f"opset {self.source} kept ({self.reason})")


def default_opset(model: Any) -> int:
    """The version of the default (ai.onnx) domain the graph imports."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def target_for(source: int, asked: int | None) -> tuple[int, str]:
    """The opset to export at: ``asked`` when given; else the source's own when it is recent enough, else
    :data:`DEFAULT`."""
    if asked is not None:
        return asked, "--opset"
    if source >= LOWEST:
        return source, f"at least {LOWEST}, as the steps need"
    return DEFAULT, f"below {LOWEST}, which per-channel INT8 needs"


def convert(model: Any, asked: int | None, path: Any) -> tuple[Any, OpsetChange]:
    """``model`` at the opset :func:`target_for` picks, and what was done. A model the converter cannot take, or
    takes into an invalid graph, is one line naming the conversion, the file and what to do, before a later
    step (clean-up, ONNX Runtime) would fail on the broken graph under its own name."""
    source = default_opset(model)
    target, reason = target_for(source, asked)
    if target == source:
        return model, OpsetChange(source, source, False, reason)
    from onnx import version_converter

    what = f"{path}: converting its graph from opset {source} to {target} (onnx's version converter)"
    todo = ("try another --opset (13..21)" if asked is not None else "give --opset N (13..21) for another target") \
        + (f", or convert {Path(str(path)).name} to opset {LOWEST} or above first (export it again from its "
           "framework)" if source < LOWEST else "")
    try:
        out = version_converter.convert_version(model, target)
    except Exception as exc:  # onnx raises RuntimeError/ConvertError with the adapter's message
        msg = first_line(exc)
        op = re.search(r"(?:for|op(?:erator)?|node)\s+'?([A-Z][A-Za-z0-9]+)", msg)
        raise ModelLoadError(f"{what} failed" + (f" at operator {op.group(1)}" if op else "") + f" ({msg}); {todo}"
                             ) from None
    broken = _invalid(out, model)
    if broken:
        raise ModelLoadError(f"{what} gave an invalid graph ({broken}); {todo}")
    return out, OpsetChange(source, target, True, reason)


#: above this a graph is not checked in memory (onnx's checker refuses protos of 2 GB and more)
CHECKED_BYTES = 1 << 30


def _invalid(converted: Any, source: Any) -> str | None:
    """Why the converter's graph is broken, or None: ONNX Runtime refuses it, or onnx's strict check (shape
    inference included) fails where the source's passes (a source that fails it alone is not the converter's
    doing; the parity check still compares the result with the source)."""
    import onnx

    from . import onnx_io

    try:
        onnx_io.session(converted.SerializeToString()).get_inputs()
    except ModelLoadError as exc:
        return str(exc).removeprefix("ONNX Runtime cannot load the model: ")
    if converted.ByteSize() > CHECKED_BYTES:
        return None
    try:
        onnx.checker.check_model(converted, full_check=True)
        return None
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError: the checker's verdict
        verdict = first_line(exc)
    try:
        onnx.checker.check_model(source, full_check=True)
    except Exception:  # noqa: BLE001 - the source fails it too
        return None
    return verdict
