"""Bring a model from elsewhere to the opset the export steps need, with onnx's version converter.

Per-channel Q/DQ (``DequantizeLinear``'s ``axis``) exists from opset 13, and real third-party files are
often older (PyTorch's default was 11 for years, old tf2onnx wrote 9); quantizing them as they are writes an
invalid graph. Converting first made three real classifiers export (measured).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
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
    """``model`` at the opset :func:`target_for` picks, and what was done; a model the converter cannot
    take is one line naming the operator."""
    source = default_opset(model)
    target, reason = target_for(source, asked)
    if target == source:
        return model, OpsetChange(source, source, False, reason)
    from onnx import version_converter

    try:
        out = version_converter.convert_version(model, target)
    except Exception as exc:  # onnx raises RuntimeError/ConvertError with the adapter's message
        msg = first_line(exc)
        op = re.search(r"(?:for|op(?:erator)?|node)\s+'?([A-Z][A-Za-z0-9]+)", msg)
        raise ModelLoadError(f"{path}: cannot convert its graph from opset {source} to {target}"
                             + (f" at operator {op.group(1)}" if op else "") + f" ({msg}); "
                             + ("try another --opset" if asked is not None else "give --opset N (13..21)")
                             ) from None
    return out, OpsetChange(source, target, True, reason)
