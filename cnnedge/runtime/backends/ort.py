"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import require
from ...artifact.card import ModelCard
from ...artifact.kinds import ORT_PROVIDERS, TABLE
from ...artifact.onnxmeta import card_from_metadata, not_utf8
from ...errors import BackendUnavailable, ModelLoadError, UsageError, first_line
from ..interrupt import register
from ..limits import check_threads
from .base import Backend, Slot, TensorSpec, Timing
from .ort_session import ALLOC, NODE, GuardedSession, check_external_data, ort_failure

PROVIDERS = ORT_PROVIDERS  # backend name -> execution provider, from the one table
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
    "tensor(int8)": "int8", "tensor(double)": "float64", "tensor(int32)": "int32", "tensor(int64)": "int64",
}


def default_threads() -> int:
    """Intra-op threads for a latency-bound classifier: half the cores, 1 to 4.

    Measured here: on 2 cores 1 thread beat 2 (and 2 threads showed 12 ms p99
    spikes), and the decode pool needs the other core.
    """
    n = os.cpu_count() or 1
    return max(1, min(4, n // 2))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def spinning(threads: int, cores: int | None = None) -> bool:
    """Whether ONNX Runtime's intra-op threads may spin-wait between parallel sections.

    Spinning buys latency only with idle cores to spin on. Measured on 2 cores (benchmarks/ort_spin_bench.py):
    at 2 threads spinning off took 0.51-0.67 of the time at batch 1 and 0.77-0.90 at batch 32, as the spinning
    threads took the cores of the caller and the decode workers. So it is on only when the cores this process
    may use leave at least one free core per intra-op thread beside them (``threads * 2 < cores``), whatever the
    batch."""
    return threads > 1 and threads * 2 < (cores or usable_cores())


@functools.lru_cache(maxsize=None)
def tensorrt_loadable() -> bool:
    """Whether TensorRT's runtime library can be loaded, which ONNX Runtime's TensorRT provider needs:
    checked before an ort-trt session is made (by ``auto`` too), so ONNX Runtime never tries, and prints its
    failure for, a provider that cannot start."""
    names = (["nvinfer_10.dll", "nvinfer.dll"] if sys.platform == "win32"
             else ["libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so"])
    try:  # the pip wheels (tensorrt / tensorrt-cu12-libs) keep the library in their own folder
        import tensorrt_libs  # type: ignore[import-not-found]

        folder = Path(tensorrt_libs.__file__).parent
        names = [str(p) for p in sorted(folder.glob("*nvinfer*")) if "plugin" not in p.name] + names
    except Exception:  # noqa: BLE001 - not installed that way
        pass
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    found = ctypes.util.find_library("nvinfer")
    if found:
        try:
            ctypes.CDLL(found)
            return True
        except OSError:
            pass
    return False


_ORT_READY = False
_DLLS_LOADED = False
PRELOAD_SAID: list[str] = []  # what onnxruntime.preload_dlls() printed, kept off the user's stdout


def prepare_ort(ort: Any, gpu: bool) -> None:
    """Quiet ONNX Runtime (errors only: no EP-failure blocks or plugin-device lines on a user's terminal)
    and, before the first CUDA session, load the CUDA/cuDNN libraries of the pip wheels
    (``onnxruntime-gpu[cuda,cudnn]``) with ``preload_dlls``, so no system CUDA is needed."""
    global _ORT_READY, _DLLS_LOADED
    if not _ORT_READY:
        try:
            ort.set_default_logger_severity(4)  # fatal only: failures arrive as exceptions
        except Exception:  # noqa: BLE001 - an old ONNX Runtime without it
            pass
        _ORT_READY = True
    if gpu and hasattr(ort, "preload_dlls") and not _DLLS_LOADED:
        _DLLS_LOADED = True
        PRELOAD_SAID[:] = quiet_preload(ort)


def quiet_preload(ort: Any) -> list[str]:
    """``ort.preload_dlls()`` with what it prints captured and returned, not written: onnxruntime-gpu 1.31 prints
    "Failed to load libcublasLt.so.13 ..." on stdout, where cnn-infer writes its results, wherever CUDA's
    libraries are missing. Any failure is one of the lines: system libraries may still serve, and the
    session says if not."""
    import contextlib
    import io

    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001
        said.write(f"{type(exc).__name__}: {exc}\n")
    return [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in said.getvalue().splitlines() if line.strip()]


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


class OrtBackend(Backend):
    """An ``onnxruntime.InferenceSession`` tuned for latency.

    Sequential execution with the memory arena and memory patterns on (ONNX Runtime's defaults) was as fast as or
    faster than each alternative at 1-2 threads and batch 1 and 32 (benchmarks/ort_settings_bench.py): parallel
    execution took 1.0-2.0x the time, the arena off 1.2-1.6x at batch 32, memory patterns off tied.

    Options: ``threads`` (intra-op threads, default :func:`default_threads`),
    ``fp16`` (TensorRT EP builds FP16 kernels), ``cache_dir`` (TensorRT EP engine
    cache, default ``<model folder>/.trt_cache``), ``device_id``.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "ort-cpu", *, threads: int | None = None,
                 fp16: bool = False, cache_dir: str | os.PathLike | None = None, device_id: int = 0) -> None:
        super().__init__()
        ort = require("onnxruntime", "ONNX models")
        p = Path(path)
        self.path = str(p)
        if backend not in PROVIDERS:
            raise UsageError(f"unknown ONNX Runtime backend {backend!r}; expected one of {', '.join(PROVIDERS)}")
        provider = PROVIDERS[backend]
        if fp16 and backend != "ort-trt":
            raise UsageError(f"fp16 applies to ONNX Runtime's TensorRT provider (ort-trt), not {backend}; to run "
                             "in FP16 there, use the exported model.fp16.onnx")
        gpu = TABLE[backend].gpu
        if provider not in ort.get_available_providers():
            pkg = "onnxruntime-gpu" if gpu else "onnxruntime"
            raise BackendUnavailable(f"backend {backend} needs ONNX Runtime's {provider}, which this install lacks "
                                     f"(available: {', '.join(ort.get_available_providers())}); install {pkg}")
        if backend == "ort-trt" and not tensorrt_loadable():  # else ONNX Runtime prints an 'EP Error' block on stdout
            raise BackendUnavailable("backend ort-trt needs TensorRT's library (libnvinfer), which cannot be loaded "
                                     "here; install cnnedge[tensorrt] (or JetPack's TensorRT), or use ort-cuda")
        check_external_data(p)
        prepare_ort(ort, backend != "ort-cpu")

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = check_threads(threads, "threads") or default_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 4  # its errors arrive as exceptions, which ort_failure words in one line
        spins = spinning(so.intra_op_num_threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spins else "0")
        self.settings = {"threads": so.intra_op_num_threads, "spinning": spins}

        providers: list[Any] = []
        if backend == "ort-trt":
            cache = Path(cache_dir) if cache_dir else p.resolve().parent / ".trt_cache"
            providers.append((provider, {"device_id": device_id, "trt_engine_cache_enable": True,
                                         "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                                         "trt_timing_cache_path": str(cache), "trt_fp16_enable": bool(fp16)}))
        if gpu:
            providers.append((PROVIDERS["ort-cuda"], {"device_id": device_id}))
        providers.append("CPUExecutionProvider")
        try:
            self.session = GuardedSession(ort.InferenceSession(str(p), sess_options=so, providers=providers), self.path)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own classes for every failure
            text = first_line(exc)
            if "outside" in text.lower() or "external" in text.lower() and ".." in text:
                raise ModelLoadError(f"{p}: refused external data outside the model's folder ({text})") from None
            if isinstance(exc, (FileNotFoundError,)) or "No such file" in text or "doesn't exist" in text:
                raise UsageError(f"{p}: no such file") from None
            if ALLOC.search(text) or isinstance(exc, MemoryError) or NODE.search(text):
                raise ort_failure(p, exc, "loading") from None
            raise ModelLoadError(f"{p}: not a loadable ONNX model ({text})") from None
        got = self.session.get_providers()
        if provider not in got:
            said = f" (onnxruntime.preload_dlls: {PRELOAD_SAID[0]})" if PRELOAD_SAID else ""
            raise BackendUnavailable(f"backend {backend}: ONNX Runtime could not start {provider} (no usable GPU "
                                     f"or missing CUDA/TensorRT libraries){said}; it fell back to {', '.join(got)}")
        self.name = backend
        self.providers = got

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{p}: a classifier has one input, this model has {len(inputs)} "
                                 f"({', '.join(i.name for i in inputs)})")
        if len(outputs) != 1:
            raise ModelLoadError(f"{p}: a classifier has one output, this model has {len(outputs)} "
                                 f"({', '.join(o.name for o in outputs)}), and nothing says which holds the class "
                                 "scores; export the graph with that output alone")
        self.input_spec = _spec(inputs[0], p)
        self.output_spec = _spec(outputs[0], p)
        self._out_names = [outputs[0].name]
        self._in_name = inputs[0].name
        self.fixed_batch = self.input_spec.batch
        self.card = self._read_card(p)
        self._gpu = gpu  # GPU providers run through IO binding from pinned host buffers
        self._device, self.device_id = ("cuda" if gpu else "cpu"), device_id  # where timed_infer's OrtValues live
        self._resident: tuple[np.ndarray, Any] | None = None  # timed_infer(resident=True)'s batch and its OrtValue
        self._pinned = threading.local()  # per thread: batch size -> BoundBuffers (page-locked), bound once
        register(self)

    def stop_runs(self) -> None:
        """Stop this session's runs in flight, from any thread: each fails with RunInterrupted."""
        session = self.session
        if session is not None:
            session.stop_runs()

    def _read_card(self, p: Path) -> ModelCard | None:
        try:
            meta = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:
            raise not_utf8(p) from None
        card, self.metadata = card_from_metadata(p, meta)
        return card

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if not self._gpu:
            return self.session.run(self._out_names, {self._in_name: batch})[0]
        pinned = self._pinned_for(batch.shape[0])
        if pinned is not None:
            if batch is not pinned.input:  # filled in place (input_buffer()): nothing to stage
                np.copyto(pinned.input, batch)
            self.session.run_with_iobinding(pinned.binding)
            return pinned.output.copy()
        # an output of dynamic size: bind the host batch, let ORT copy it in and the output back
        b = self.session.io_binding()
        b.bind_cpu_input(self._in_name, batch)
        b.bind_output(self._out_names[0], "cpu")
        self.session.run_with_iobinding(b)
        return b.copy_outputs_to_cpu()[0]

    def input_buffer(self, n: int) -> np.ndarray:
        """On a GPU provider this thread's pinned input for batches of ``n``, the one :meth:`infer` copies
        into otherwise (see :meth:`Backend.input_buffer`)."""
        pinned = self._pinned_for(n) if self._gpu else None
        return pinned.input if pinned is not None else super().input_buffer(n)

    def _timed_impl(self, batch: np.ndarray, resident: bool) -> tuple[np.ndarray, Timing]:
        """IO binding with OrtValues on the provider's device, each step synchronised: the upload
        (``OrtValue.ortvalue_from_numpy``), the run (``run_with_iobinding`` until the outputs are
        ready) and the download (``OrtValue.numpy``). On the CPU provider the same steps run on
        host memory (binding the input, fetching the output). ``resident``: the batch's OrtValue is
        made once and kept; only the run is timed, and the download happens outside the timing.
        On a GPU the upload is from this thread's pinned buffer, as in :meth:`infer`: a batch given in
        it (:meth:`input_buffer`) goes by DMA alone; any other is staged into it first, in the timing."""
        import onnxruntime as ort

        clock = time.perf_counter_ns
        binding = self.session.io_binding()
        t0 = clock()
        held = self._resident
        if resident and held is not None and held[0] is batch:
            x_dev = held[1]
        else:
            src = batch
            pinned = self._pinned_for(batch.shape[0]) if self._gpu else None
            if pinned is not None:
                if batch is not pinned.input:
                    np.copyto(pinned.input, batch)
                src = pinned.input
            x_dev = ort.OrtValue.ortvalue_from_numpy(src, self._device, self.device_id)
            if resident:
                self._resident = (batch, x_dev)
        binding.bind_ortvalue_input(self._in_name, x_dev)
        binding.bind_output(self._out_names[0], self._device, self.device_id)
        binding.synchronize_inputs()
        t1 = clock()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = clock()
        out = binding.get_outputs()[0].numpy()
        t3 = clock()
        if resident:
            return out, Timing(0, t2 - t1, 0)
        return out, Timing(t1 - t0, t2 - t1, t3 - t2)

    def _make_slot(self) -> Slot | None:
        """A slot that runs its input buffer without :meth:`infer`'s planning. On a GPU (with fixed output
        sizes) its input and output buffers are pinned host memory bound to the session once, which ONNX
        Runtime copies to and from the device by DMA. On the CPU it runs ``session.run`` on the buffer: ONNX
        Runtime 1.32's ``run_with_iobinding`` with RunOptions (which :meth:`stop_runs` needs) took 42 µs more
        per call than ``run`` for a small CNN (164 against 206 µs; benchmarks/runtime_bench.py's overhead)."""
        base = super()._make_slot()
        if base is None:
            return base
        if not self._gpu:
            return Slot(self, base.input, functools.partial(self._run_feed, base.input))
        if None in tuple(self.output_spec.shape[1:]):
            return base
        buffers = self.bind_buffers(1, page_locked=True)
        return Slot(self, buffers.input, functools.partial(self._run_bound, buffers))

    def _run_feed(self, x: np.ndarray) -> np.ndarray:
        """A CPU slot's run: its input buffer fed to ``session.run``, counted as in flight."""
        self._enter()
        try:
            return self.session.run(self._out_names, {self._in_name: x})[0]
        finally:
            self._leave()

    def _run_bound(self, buffers: "BoundBuffers") -> np.ndarray:
        """A slot's run: its buffers' binding, counted as in flight (the binding and the memory it
        points at live as long as the slot's callable)."""
        self._enter()
        try:
            self.session.run_with_iobinding(buffers.binding)
        finally:
            self._leave()
        return buffers.output

    def bind_buffers(self, n: int, page_locked: bool = True) -> "BoundBuffers":
        """A new input and output host array for batches of ``n``, bound to this session once: fill
        ``input``, run ``session.run_with_iobinding(binding)``, read ``output``. ``page_locked``: in
        page-locked memory when CUDA gives it (a GPU provider copies it by DMA), plain memory otherwise.
        Needs fixed input and output dimensions."""
        ins, outs = self.input_spec, self.output_spec
        x = _host_buffer((n,) + tuple(ins.shape[1:]), np.dtype(ins.dtype), page_locked)
        y = _host_buffer((n,) + tuple(outs.shape[1:]), np.dtype(outs.dtype), page_locked)
        b = self.session.io_binding()
        b.bind_input(self._in_name, "cpu", 0, x.dtype, list(x.shape), x.ctypes.data)
        b.bind_output(self._out_names[0], "cpu", 0, y.dtype, list(y.shape), y.ctypes.data)
        return BoundBuffers(x, y, b)

    def _pinned_for(self, n: int) -> "BoundBuffers | None":
        """This thread's pinned input/output pair for batches of ``n``, bound once (None when the output
        size is dynamic or the input's other dimensions are)."""
        cache = self._pinned.__dict__.setdefault("by_n", {})
        got = cache.get(n)
        if got is None:
            if None in self.output_spec.shape[1:] or None in self.input_spec.shape[1:]:
                return None
            if len(cache) >= 4:  # a few batch sizes per thread (the batch and the last, shorter one)
                cache.pop(next(iter(cache)))
            got = cache[n] = self.bind_buffers(n)
        return got

    def _takes_device_batches(self) -> bool:
        return self._gpu

    def _infer_device_impl(self, ptr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """The device batch bound as the session's input by IO binding (see :meth:`Backend.infer_device`)."""
        b = self.session.io_binding()
        b.bind_input(self._in_name, "cuda", self.device_id, np.dtype(dtype), list(shape), ptr)
        b.bind_output(self._out_names[0], "cpu")
        self.session.run_with_iobinding(b)
        return b.copy_outputs_to_cpu()[0]

    def _close_impl(self) -> None:
        self.session = None  # type: ignore[assignment]
        self._resident = None
        self._pinned = threading.local()  # every thread's pinned buffers and bindings go with the session


def _host_buffer(shape: tuple[int, ...], dtype: np.dtype, page_locked: bool) -> np.ndarray:
    """A host array for a binding: page-locked (``cudaHostAlloc`` through cuda-python, the ``gpu`` extra's)
    when asked, so the GPU copies from and to it by DMA, about three times as fast as from pageable
    memory; plain memory otherwise or when CUDA cannot give it. Page-locked memory is freed when the last
    array over it goes (an :meth:`OrtBackend.input_buffer` a caller still holds keeps it)."""
    if page_locked:
        try:
            from .trt import import_cudart

            block = PageLockedBlock(import_cudart(), shape, dtype)
            return np.asarray(block)  # the array's base is the block: it frees the memory with the last view
        except Exception:  # noqa: BLE001 - no cuda-python or no memory to lock: pageable still works
            pass
    return np.zeros(shape, dtype)


class PageLockedBlock:
    """One ``cudaHostAlloc`` block seen by numpy as a ``shape`` array of ``dtype`` (``np.asarray(block)``);
    freed when the last array over it goes."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        err, ptr = cudart.cudaHostAlloc(max(1, nbytes), getattr(cudart, "cudaHostAllocPortable", 1))
        if int(err) != 0:
            raise MemoryError(f"cudaHostAlloc of {nbytes} bytes failed: {getattr(err, 'name', err)}")
        self.cudart, self.ptr = cudart, int(ptr)
        self.__array_interface__ = {"version": 3, "shape": tuple(shape), "typestr": dtype.str,
                                    "data": (self.ptr, False)}

    def __del__(self) -> None:
        ptr = self.__dict__.get("ptr")
        if ptr is None:
            return
        try:
            self.cudart.cudaFreeHost(ptr)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class BoundBuffers:
    """An input and an output host array of one batch size and the session's IO binding over them
    (:meth:`OrtBackend.bind_buffers`); they live as long as this object."""

    __slots__ = ("input", "output", "binding")

    def __init__(self, input: np.ndarray, output: np.ndarray, binding: Any) -> None:
        self.input, self.output, self.binding = input, output, binding


def _spec(arg: Any, p: Path) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"{p}: tensor {arg.name!r} has type {arg.type}, which cnnedge does not feed")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, dtype)
