"""Inference backends: one small, stable interface over ONNX Runtime, TensorRT and Keras.

The interface (what cnn-bench and the Classifier use; keep it small)::

    from cnnedge.runtime.backends import load_backend
    with load_backend("model.int8.onnx", backend="auto", threads=1) as be:
        be.name           # "ort-cpu" | "ort-cuda" | "ort-trt" | "trt" | "keras"
        be.input_spec     # TensorSpec(name, shape with None for a dynamic batch, numpy dtype name)
        be.output_spec    # TensorSpec of the (first) output
        be.fixed_batch    # the only batch size the artifact takes, or None
        be.max_batch      # the largest batch it takes (TensorRT profile), or None
        be.min_batch      # the smallest (TensorRT profile; 1 otherwise): shorter chunks are padded
        be.card           # the ModelCard the artifact carries, or None (third-party ONNX)
        out = be.infer(x) # x: np.ndarray in input_spec's layout and dtype -> raw output, one row per input
        s = be.slot()     # a reusable batch of one (or None): fill s.input in place, s.run() -> output
    # infer() may be called from several threads (backends that cannot run calls together serialise
    # them); be.close() is idempotent and waits for infer() calls running in other threads; the context
    # manager calls it; infer() after close() raises UsageError.

``infer`` checks dtype and shape (one-line :class:`~cnnedge.errors.UsageError`),
splits batches larger than ``max_batch``, pads chunks shorter than ``min_batch``
and feeds fixed-batch models padded chunks of their size (:func:`plan_batches`), then calls the subclass's
``_infer_impl``, which only runs.

``load_backend(path, backend="auto", **opts)`` chooses: ``.engine``/``.plan`` ->
``trt``; ``.onnx`` -> the best ONNX Runtime provider that starts (TensorRT EP when
TensorRT's libraries load, then CUDA EP, then CPU); ``.keras`` -> ``keras``. A named backend that is not
installed or has no GPU is a :class:`~cnnedge.errors.BackendUnavailable`.
Options: ONNX Runtime ``threads``, ``fp16``, ``cache_dir``, ``device_id``;
TensorRT ``device_id``; Keras ``trust``, ``custom_objects``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable, ModelLoadError, UsageError
from .base import Backend, Slot, TensorSpec, plan_batches

BACKENDS = ("auto", "ort-trt", "ort-cuda", "ort-cpu", "trt", "keras")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_OPTIONS = {
    "ort": {"threads", "fp16", "cache_dir", "device_id"},
    "trt": {"device_id"},
    "keras": {"trust", "custom_objects"},
}

__all__ = ["BACKENDS", "Backend", "Slot", "TensorSpec", "load_backend", "plan_batches", "kind_of"]


def kind_of(path: str | os.PathLike) -> str:
    """``"onnx"``, ``"engine"`` or ``"keras"`` from the file name, or ModelLoadError."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file")
    if p.is_dir():
        raise UsageError(f"{p}: is a folder; give the model file (.onnx, .engine or .keras)")
    suffix = p.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in KERAS_SUFFIXES:
        return "keras"
    raise ModelLoadError(f"{p}: not a model file cnnedge knows (expected .onnx, .engine or .keras)")


def _opts(family: str, backend: str, opts: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(opts) - _OPTIONS[family])
    if unknown:
        raise UsageError(f"backend {backend} takes no option {', '.join(unknown)} "
                         f"(it takes: {', '.join(sorted(_OPTIONS[family]))})")
    return opts


def load_backend(path: str | os.PathLike, backend: str = "auto", **opts: Any) -> Backend:
    """Open ``path`` with the named backend, or the best available one for ``"auto"``."""
    if backend not in BACKENDS:
        close = difflib.get_close_matches(str(backend), BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}{hint}")
    kind = kind_of(path)
    if backend == "auto":
        backend = {"engine": "trt", "keras": "keras"}.get(kind, "")
        if not backend:
            from .ort import available_providers

            opts = {k: v for k, v in opts.items() if v is not None}
            _opts("ort", "auto", opts)
            avail = available_providers()
            if not avail:
                from ..._lazy import require

                require("onnxruntime", "ONNX models")
            errors = []
            from .ort import PROVIDERS, OrtBackend, tensorrt_loadable

            for name in ("ort-trt", "ort-cuda", "ort-cpu"):
                if PROVIDERS[name] not in avail or name == "ort-trt" and not tensorrt_loadable():
                    continue  # TensorRT's libraries missing: the provider would only log a failure
                try:
                    return OrtBackend(path, name, **opts)
                except BackendUnavailable as exc:
                    errors.append(str(exc))
            raise BackendUnavailable("no ONNX Runtime provider could start: " + "; ".join(errors))
    wants = {"engine": ("trt",), "keras": ("keras",), "onnx": ("ort-trt", "ort-cuda", "ort-cpu")}[kind]
    if backend not in wants:
        raise UsageError(f"{path}: backend {backend} cannot run a .{Path(path).suffix.lstrip('.')} file "
                         f"(use {' or '.join(wants)}, or auto)")
    opts = {k: v for k, v in opts.items() if v is not None}
    if backend == "trt":
        from .trt import TrtBackend

        return TrtBackend(path, **_opts("trt", backend, opts))
    if backend == "keras":
        from .keras_backend import KerasBackend

        return KerasBackend(path, **_opts("keras", backend, opts))
    from .ort import OrtBackend

    return OrtBackend(path, backend, **_opts("ort", backend, opts))
