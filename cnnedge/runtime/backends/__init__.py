"""Inference backends: one small, stable interface over ONNX Runtime, OpenVINO, TensorRT and Keras.

The interface (what cnn-bench and the Classifier use; keep it small)::

    from cnnedge.runtime.backends import load_backend
    with load_backend("model.int8.onnx", backend="auto", threads=1) as be:
        be.name           # "ort-cpu" | "ort-cuda" | "ort-trt" | "openvino" | "trt" | "keras"
        be.input_spec     # TensorSpec(name, shape with None for a dynamic batch, numpy dtype name)
        be.output_spec    # TensorSpec of the (first) output
        be.fixed_batch    # the only batch size the artifact takes, or None
        be.max_batch      # the largest batch it takes (TensorRT profile), or None
        be.min_batch      # the smallest (TensorRT profile; 1 otherwise): shorter chunks are padded
        be.card           # the ModelCard the artifact carries, or None (third-party ONNX)
        be.choice         # auto's EngineChoice when it measured the CPU engines (str(): engine, why, when), or None
        out = be.infer(x) # x: np.ndarray in input_spec's layout and dtype -> raw output, one row per input
        out, t = be.timed_infer(x, resident=False)  # one call, t: Timing(h2d_ns, compute_ns, d2h_ns)
        s = be.slot()     # a reusable batch of one (or None): fill s.input in place, s.run() -> output
    # infer() may be called from several threads (backends that cannot run calls together serialise
    # them); be.close() is idempotent and waits for infer() calls running in other threads; the context
    # manager calls it; infer() after close() raises UsageError.

``infer`` checks dtype and shape (one-line :class:`~cnnedge.errors.UsageError`),
splits batches larger than ``max_batch``, pads chunks shorter than ``min_batch``
and feeds fixed-batch models padded chunks of their size (:func:`plan_batches`), then calls the subclass's
``_infer_impl``, which only runs. ``timed_infer`` runs the same checks and calls
``_timed_impl`` under the same gate (default: the whole ``_infer_impl`` counted as
compute; ONNX Runtime and TensorRT time their copies apart on their own buffers).
``infer_device(ptr, shape, dtype)`` (a batch in GPU memory) refuses on a CPU backend, checks
the batch and calls ``_infer_device_impl`` under the same gate. A slot's run is a callable the
backend makes over its own buffers. ``set_input_spec(spec)`` fixes a dynamic height and width
(:mod:`.sizing` calls it).

``load_backend(path, backend="auto", **opts)`` chooses from the table in
:mod:`cnnedge.artifact.kinds`: ``.engine``/``.plan`` -> ``trt``; ``.onnx`` -> the
best ONNX Runtime provider that starts (TensorRT EP when TensorRT's libraries
load, then CUDA EP, then the CPU: with OpenVINO installed as well, ONNX Runtime's CPU provider or OpenVINO, whichever
ran the file faster at the ``batch`` and ``threads`` in use, timed once per model and machine and kept in a small
cache, :mod:`.engine_choice`; ``be.choice`` says which and why); ``.keras`` -> ``keras``. A named backend that is not
installed or has no GPU is a :class:`~cnnedge.errors.BackendUnavailable`.
For a GPU provider ``model.int8.onnx`` is swapped for the
``model.int8.trt.onnx`` beside it (:func:`int8_file_for`).
``input_size=(h, w)`` for a graph of dynamic height and width. Options: ONNX
Runtime ``threads``, ``fp16``, ``cache_dir``, ``device_id``; OpenVINO ``threads``, ``hint``;
TensorRT ``device_id``; Keras ``trust``, ``custom_objects``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...artifact.kinds import (BACKEND_CHOICES, KERAS_SUFFIXES, KINDS, TABLE, auto_candidates, backend_info,
                               check_options, require_kind)
from ...artifact.modelfile import require_model_file
from ...artifact.names import INT8_CPU_NAME, INT8_TRT_NAME, STEM
from ...errors import BackendUnavailable, ModelLoadError, UsageError, arg_name
from .base import Backend, Slot, TensorSpec, Timing, plan_batches

BACKENDS = BACKEND_CHOICES  # "auto" and every backend of the table (cnnedge.artifact.kinds)
ENGINE_SUFFIXES = KINDS["engine"].suffixes
ONNX_SUFFIXES = KINDS["onnx"].suffixes
INT8_CPU_SUFFIX, INT8_GPU_SUFFIX = INT8_CPU_NAME[len(STEM):], INT8_TRT_NAME[len(STEM):]

__all__ = ["BACKENDS", "ENGINE_SUFFIXES", "KERAS_SUFFIXES", "ONNX_SUFFIXES", "Backend", "Slot", "TensorSpec", "Timing",
           "load_backend", "plan_batches", "kind_of"]


def kind_of(path: str | os.PathLike) -> str:
    """``"onnx"``, ``"engine"`` or ``"keras"`` from the file name, or ModelLoadError."""
    return require_kind(require_model_file(path))


def load_backend(path: str | os.PathLike, backend: str = "auto", *, input_size: tuple[int, int] | None = None,
                 batch: int | None = None, **opts: Any) -> Backend:
    """Open ``path`` with the named backend, or the best available one for ``"auto"``.

    ``input_size=(h, w)`` fixes the image size of a graph whose height and width are
    dynamic (see :mod:`.sizing`: the card or Ultralytics' ``imgsz`` otherwise). ``batch``: the batch the
    caller will mostly run (None: 1), at which ``auto`` times the CPU engines (:mod:`.engine_choice`)."""
    from ...artifact.onesource import check_one_source
    from .sizing import set_input_size

    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise UsageError(f"{arg_name('batch')} must be a whole number >= 1 (or None), got {batch!r}")
    if backend == "auto" and kind_of(path) == "onnx" and _measures(opts):
        be = _open(path, backend, gpu_only=True, **opts)
        if be is None:  # no GPU provider started: the faster CPU engine, each candidate opened as if named
            return _choose_cpu(path, batch, input_size, opts)
    else:
        be = _open(path, backend, **opts)
    try:
        check_one_source(be.path or path, be.card.provenance.source_sha256 if be.card else None)
        set_input_size(be, input_size)
    except BaseException:
        be.close()
        raise
    return be


def int8_file_for(path: str | os.PathLike, backend: str) -> str | os.PathLike:
    """The INT8 file written for ``backend``: ``cnn-export --int8`` writes ``model.int8.onnx`` for ONNX Runtime's
    CPU provider (integer kernels) and ``model.int8.trt.onnx`` beside it (symmetric Q/DQ) for TensorRT and CUDA;
    a GPU provider opens the one made for it. Any other path is returned as it is."""
    p = Path(path)
    if TABLE[backend].gpu and p.name.endswith(INT8_CPU_SUFFIX):
        gpu = p.with_name(p.name[:-len(INT8_CPU_SUFFIX)] + INT8_GPU_SUFFIX)
        if gpu.is_file():
            return gpu
    return path


def _open(path: str | os.PathLike, backend: str = "auto", *, gpu_only: bool = False, **opts: Any) -> Backend | None:
    """The backend opened, unchecked; with ``gpu_only`` (``auto`` on an ONNX file) the first GPU provider that
    starts, or None."""
    if backend != "auto":
        backend_info(backend)
    kind = kind_of(path)
    from ...artifact.staged import half_replaced

    half_done = half_replaced(Path(path).parent)
    if half_done:
        raise ModelLoadError(half_done)
    opts = {k: v for k, v in opts.items() if v is not None}
    wants = KINDS[kind].backends
    if backend == "auto":
        tries = auto_candidates(kind)
        if len(tries) == 1:
            backend = tries[0]
        else:  # ONNX: the best provider that is installed and starts
            from .ort import OrtBackend, available_providers

            check_options(tries[-1], opts)
            avail = available_providers()
            if not avail:
                from ..._lazy import require

                require("onnxruntime", "ONNX models")
            errors = []
            for name in tries:
                if TABLE[name].ort_provider not in avail:
                    continue
                if gpu_only and not TABLE[name].gpu:
                    return None
                try:  # ort-trt without TensorRT's library is refused here before ONNX Runtime tries it
                    return OrtBackend(int8_file_for(path, name), name, **opts)
                except BackendUnavailable as exc:
                    errors.append(str(exc))
            if gpu_only:
                return None
            raise BackendUnavailable("no ONNX Runtime provider could start: " + "; ".join(errors))
    if backend not in wants:
        raise UsageError(f"{path}: backend {backend} cannot run a .{Path(path).suffix.lstrip('.')} file "
                         f"(use {' or '.join(wants)}, or auto)")
    check_options(backend, opts)
    family = TABLE[backend].family
    if family == "trt":
        from .trt import TrtBackend

        return TrtBackend(path, **opts)
    if family == "keras":
        from .keras_backend import KerasBackend

        return KerasBackend(path, **opts)
    if family == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(path, **opts)
    from .ort import OrtBackend

    return OrtBackend(int8_file_for(path, backend), backend, **opts)


def _measures(opts: dict[str, Any]) -> bool:
    from .engine_choice import measuring_on

    return measuring_on({k: v for k, v in opts.items() if v is not None})


def _choose_cpu(path: str | os.PathLike, batch: int | None, input_size: tuple[int, int] | None,
                opts: dict[str, Any]) -> Backend:
    """ONNX Runtime's CPU provider or OpenVINO, whichever runs ``path`` faster here (:mod:`.engine_choice`);
    each candidate is opened as a named backend would be (the one-source check and the image size included)."""
    from ..limits import check_threads
    from .engine_choice import choose_cpu_engine
    from .ort import default_threads

    opts = {k: v for k, v in opts.items() if v is not None}
    threads = check_threads(opts.get("threads"), "threads") or default_threads()
    return choose_cpu_engine(path, batch, threads,
                             lambda name: load_backend(path, name, input_size=input_size, **opts))
