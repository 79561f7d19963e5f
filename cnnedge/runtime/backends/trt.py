"""TensorRT engine backend (``tensorrt`` or ``tensorrt_rtx``, whichever imports).

An engine is native code: the plan is checked against its ``<engine>.json``
sidecar (sha256, flavour, version, GPU) before it is deserialized. Device
buffers, pinned host buffers and the stream come from cuda-python
(``cuda.bindings.runtime``) and are allocated once, for the profile's maximum
batch: the hot path only copies, enqueues and synchronizes. Larger batches are
split by :meth:`Backend.infer`.

Written against the TensorRT 10 Python API (``execute_async_v3``,
``set_tensor_address``, ``set_input_shape``, ``get_tensor_profile_shape``); it
cannot execute on machines without an NVIDIA GPU.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import BackendUnavailable, ModelLoadError
from ...host import tensorrt, trt_logger
from ...artifact.sidecar import REBUILD, EngineSidecar, verify_engine
from .base import Backend, Slot, TensorSpec, Timing

def import_tensorrt() -> tuple[ModuleType, str]:
    """The TensorRT module and its flavour name, or BackendUnavailable."""
    trt = tensorrt()
    if trt is not None:
        return trt, trt.__name__
    raise BackendUnavailable("backend trt needs TensorRT: pip install 'cnnedge[tensorrt]' (Jetson, data-centre "
                             "GPUs) or 'cnnedge[trt-rtx]' (RTX PCs)")


def import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise BackendUnavailable("backend trt needs cuda-python for device buffers: pip install 'cuda-python>=12.6'"
                                 ) from None
    return runtime


def _check(result: Any, what: str) -> Any:
    """cuda-python returns ``(err, *values)``; raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailable(f"CUDA {what} failed: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


def compute_capability(cudart: ModuleType, device: int = 0) -> str:
    """``"sm89"`` for the given GPU, or BackendUnavailable when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        raise BackendUnavailable(f"backend trt needs an NVIDIA GPU; none is usable here "
                                 f"({getattr(err, 'name', err)})")
    attr = cudart.cudaDeviceAttr
    major = _check(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device), "device query")
    minor = _check(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device), "device query")
    return f"sm{major}{minor}"


def profile_batch_range(min_shape: Any, opt_shape: Any, max_shape: Any, static_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) batch of an engine input from its profile shapes.

    ``static_batch`` is the engine's own first dimension: ``-1`` when dynamic,
    otherwise the only batch it takes.
    """
    if static_batch > 0:
        return static_batch, static_batch, static_batch
    lo, opt, hi = int(min_shape[0]), int(opt_shape[0]), int(max_shape[0])
    if not 1 <= lo <= opt <= hi:
        raise ModelLoadError(f"engine optimization profile has an invalid batch range {lo}/{opt}/{hi}")
    return lo, opt, hi


def check_profile_against_sidecar(side: EngineSidecar, rng: tuple[int, int, int]) -> None:
    """The sidecar's min/opt/max batch must be the engine's, or the sidecar is stale."""
    rec = tuple(side.profile.get(k) for k in ("min", "opt", "max"))
    if all(v is not None for v in rec) and rec != rng:
        raise ModelLoadError(f"engine profile batch {rng[0]}/{rng[1]}/{rng[2]} does not match its sidecar "
                             f"({rec[0]}/{rec[1]}/{rec[2]}); {REBUILD}")


def _np_dtype(trt: ModuleType, dt: Any) -> np.dtype:
    return np.dtype(trt.nptype(dt))


class TrtBackend(Backend):
    """A serialized TensorRT plan with its sidecar. Options: ``device_id``."""

    name = "trt"

    def __init__(self, path: str | os.PathLike, *, device_id: int = 0) -> None:
        super().__init__()
        p = Path(path)
        self.path = str(p)
        if not p.is_file():
            raise ModelLoadError(f"{p}: no such engine file")
        trt, flavour = import_tensorrt()
        side = verify_engine(p, flavour, trt.__version__, None)  # hash, flavour, version: before anything else
        cudart = import_cudart()
        cc = compute_capability(cudart, device_id)
        if cc not in side.compute_capabilities:
            raise ModelLoadError(f"{p}: built for {', '.join(side.compute_capabilities)}, this GPU is {cc}; "
                                 f"{REBUILD}")
        self.card = side.card
        self.sidecar = side
        _check(cudart.cudaSetDevice(device_id), "cudaSetDevice")
        self._trt, self._cudart = trt, cudart
        self._logger = trt_logger(trt)
        self._logger.messages.clear()
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(p.read_bytes())
        if self.engine is None:
            msg = self._logger.errors[-1] if self._logger.errors else "deserialization failed"
            raise ModelLoadError(f"{p}: TensorRT cannot load this plan ({msg}); {REBUILD}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise ModelLoadError(f"{p}: a classifier engine has one input and an output; found {ins} / {outs}")
        self._in, self._out = ins[0], (side.output_name if side.output_name in outs else outs[0])
        in_shape = tuple(self.engine.get_tensor_shape(self._in))
        if in_shape[0] > 0:  # a static batch: no profile to ask
            rng = profile_batch_range((), (), (), in_shape[0])
        else:
            rng = profile_batch_range(*self.engine.get_tensor_profile_shape(self._in, 0), in_shape[0])
        check_profile_against_sidecar(side, rng)
        self.min_batch, opt, self.max_batch = rng
        self.fixed_batch = in_shape[0] if in_shape[0] > 0 else None
        in_dtype = _np_dtype(trt, self.engine.get_tensor_dtype(self._in))
        out_dtype = _np_dtype(trt, self.engine.get_tensor_dtype(self._out))
        self.input_spec = TensorSpec(self._in, (self.fixed_batch,) + tuple(int(d) for d in in_shape[1:]),
                                     in_dtype.name)
        self.context = self.engine.create_execution_context()
        # Output shape at the maximum batch tells the per-row output size.
        self.context.set_input_shape(self._in, (self.max_batch,) + tuple(in_shape[1:]))
        out_max = tuple(self.context.get_tensor_shape(self._out))
        self.output_spec = TensorSpec(self._out, (self.fixed_batch,) + out_max[1:], out_dtype.name)

        # One allocation each, for the largest batch: device in/out, pinned host in/out, a stream.
        self._in_row = int(np.prod(in_shape[1:])) * in_dtype.itemsize
        self._out_row = int(np.prod(out_max[1:])) * out_dtype.itemsize
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._d_in = _check(cudart.cudaMalloc(self._in_row * self.max_batch), "cudaMalloc")
        self._d_out = _check(cudart.cudaMalloc(self._out_row * self.max_batch), "cudaMalloc")
        self._h_in_ptr = _check(cudart.cudaMallocHost(self._in_row * self.max_batch), "cudaMallocHost")
        self._h_out_ptr = _check(cudart.cudaMallocHost(self._out_row * self.max_batch), "cudaMallocHost")
        self._h_in = _pinned_array(self._h_in_ptr, self._in_row * self.max_batch)
        self._h_out = _pinned_array(self._h_out_ptr, self._out_row * self.max_batch)
        self._in_dtype, self._out_dtype = in_dtype, out_dtype
        self._row_shape, self._out_row_shape = tuple(in_shape[1:]), out_max[1:]
        self.context.set_tensor_address(self._in, int(self._d_in))
        self.context.set_tensor_address(self._out, int(self._d_out))
        self._shape_set: int | None = None
        self._resident: np.ndarray | None = None  # the batch timed_infer(resident=True) left on the device
        self._lock = threading.Lock()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        with self._lock:
            self._h_in[:n * self._in_row] = batch.reshape(-1).view(np.uint8)
            return self._execute(n).copy()  # the caller owns what infer() returns

    def _takes_device_batches(self) -> bool:
        return True

    def _infer_device_impl(self, ptr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """A device batch copied device-to-device into the engine's input buffer on its stream, then run
        and downloaded as :meth:`infer` does (see :meth:`Backend.infer_device`): no trip through the host."""
        n = int(shape[0])
        cudart = self._cudart
        with self._lock:
            self._set_batch(n)
            self._resident = None
            _check(cudart.cudaMemcpyAsync(self._d_in, ptr, n * self._in_row,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream),
                   "copy on the device")
            self._launch()
            self._download(n)
            self._sync()
            return self._out_view(n).copy()

    def _execute(self, n: int) -> np.ndarray:
        """Run the first ``n`` rows of the pinned input buffer; the output rows as a view of the
        pinned output buffer, valid until the next run. Call with ``self._lock`` held."""
        self._set_batch(n)
        self._upload(n)
        self._launch()
        self._download(n)
        self._sync()
        return self._out_view(n)

    def _timed_impl(self, batch: np.ndarray, resident: bool) -> tuple[np.ndarray, Timing]:
        """The same steps as ``_execute`` on the same buffers, each synchronised and timed: pinned
        copy and upload, ``execute_async_v3``, download. ``resident``: the batch stays in the device
        buffer until another call uploads over it; only the execution is timed."""
        n = batch.shape[0]
        clock = time.perf_counter_ns
        with self._lock:
            self._set_batch(n)
            t0 = clock()
            if not (resident and self._resident is batch):
                self._h_in[:n * self._in_row] = batch.reshape(-1).view(np.uint8)
                self._upload(n)
                self._sync()
                self._resident = batch if resident else None
            t1 = clock()
            self._launch()
            self._sync()
            t2 = clock()
            self._download(n)
            self._sync()
            out = self._out_view(n).copy()
            t3 = clock()
        if resident:
            return out, Timing(0, t2 - t1, 0)
        return out, Timing(t1 - t0, t2 - t1, t3 - t2)

    def _set_batch(self, n: int) -> None:
        if self._shape_set != n:
            if not self.context.set_input_shape(self._in, (n,) + self._row_shape):
                raise ModelLoadError(f"{self.path}: TensorRT refused batch {n} (profile "
                                     f"{self.min_batch}..{self.max_batch})")
            self._shape_set = n

    def _upload(self, n: int) -> None:
        """Queue the copy of ``n`` pinned input rows to the device (the resident batch is gone)."""
        self._resident = None
        cudart = self._cudart
        _check(cudart.cudaMemcpyAsync(self._d_in, self._h_in_ptr, n * self._in_row,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "copy to device")

    def _launch(self) -> None:
        if not self.context.execute_async_v3(int(self._stream)):
            raise ModelLoadError(f"{self.path}: TensorRT execution failed "
                                 f"({self._logger.errors[-1] if self._logger.errors else 'no message'})")

    def _download(self, n: int) -> None:
        cudart = self._cudart
        _check(cudart.cudaMemcpyAsync(self._h_out_ptr, self._d_out, n * self._out_row,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), "copy to host")

    def _sync(self) -> None:
        _check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _out_view(self, n: int) -> np.ndarray:
        return self._h_out[:n * self._out_row].view(self._out_dtype).reshape((n,) + self._out_row_shape)

    def _make_slot(self) -> Slot | None:
        base = super()._make_slot()
        if base is None:
            return None
        output = np.zeros((1,) + tuple(self._out_row_shape), self._out_dtype)
        # a view of the slot's input: it follows what the caller writes
        return Slot(self, base.input, functools.partial(self._run_row, base.input.reshape(-1).view(np.uint8), output))

    def _run_row(self, row: np.ndarray, output: np.ndarray) -> np.ndarray:
        """A slot's run: under the lock, the row is copied into the page-locked input buffer and the
        output row out into the slot's own array; nothing is allocated per call."""
        self._enter()
        try:
            with self._lock:
                self._h_in[:self._in_row] = row
                np.copyto(output, self._execute(1))
        finally:
            self._leave()
        return output

    def _close_impl(self) -> None:
        # Backend.close() has already waited for in-flight calls; the lock also covers a direct
        # _infer_impl caller, so no buffer is freed under a running copy or execution.
        cudart = self._cudart
        with self._lock:
            self.context = None
            self.engine = None
            for free, ptr in ((cudart.cudaFree, self._d_in), (cudart.cudaFree, self._d_out),
                              (cudart.cudaFreeHost, self._h_in_ptr), (cudart.cudaFreeHost, self._h_out_ptr)):
                free(ptr)
            cudart.cudaStreamDestroy(self._stream)


def _pinned_array(ptr: Any, nbytes: int) -> np.ndarray:
    buf = (ctypes.c_uint8 * nbytes).from_address(int(ptr))
    return np.frombuffer(buf, dtype=np.uint8)
