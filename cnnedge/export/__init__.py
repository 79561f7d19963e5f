"""Keras -> ONNX (FP32, FP16, INT8 Q/DQ) -> TensorRT engines, each checked against Keras.

>>> from cnnedge.export import export
>>> report = export("runs/digits/model.keras", fp16=True, int8=True, engine=True, gpu="sm89")
>>> print(report.table())

Libraries, one module each: :mod:`.keras2onnx` (tf2onnx), :mod:`.cleanup` (onnxslim),
:mod:`.fp16`, :mod:`.int8` (options and the INT8 step; its parts :mod:`.calibration` with the range cache,
:mod:`.qdq`, :mod:`.layer_fallback`, :mod:`.sensitivity`, :mod:`.saturation`, :mod:`.ort_kernels`), :mod:`.engine`
(TensorRT / TensorRT-RTX plans and sidecars), :mod:`.triton` (model repository),
:mod:`.parity` (checks and table), :mod:`.parity_engines` (the CPU engines each file is
checked on). The steps that use them (:mod:`.onnx_files`, :mod:`.onnx_parity`,
:mod:`.engine_files`) run under :mod:`.timer` and are chained by
:mod:`.steps`; :mod:`.options`, :mod:`.report` and :mod:`.workspace` hold what they share.
Importing this package loads none of the heavy libraries.
"""
from __future__ import annotations

from typing import Any

__all__ = ["export", "ExportOptions", "ExportReport", "ParityFailure", "Thresholds", "ArtifactResult", "read_card",
           "Description", "Int8Options"]


def __getattr__(name: str) -> Any:
    if name in ("export", "run"):
        from . import steps

        return getattr(steps, name)
    if name == "ExportOptions":
        from .options import ExportOptions

        return ExportOptions
    if name in ("ExportReport", "ParityFailure"):
        from . import report

        return getattr(report, name)
    if name in ("Thresholds", "ArtifactResult"):
        from . import parity

        return getattr(parity, name)
    if name == "Description":
        from .sources import Description

        return Description
    if name == "Int8Options":
        from .int8 import Int8Options

        return Int8Options
    if name == "read_card":
        from .onnx_io import read_card

        return read_card
    raise AttributeError(f"module 'cnnedge.export' has no attribute {name!r}")
