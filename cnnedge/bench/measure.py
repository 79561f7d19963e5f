"""Timing one (artifact, backend, batch): warm-up, then timed calls in several runs.

Every call is timed on its own with ``time.perf_counter_ns``; nothing is clipped.
On a GPU the host-to-device copy, the compute and the device-to-host copy are
timed separately (each step synchronised), or, with ``copy=False``, only the
compute on buffers that already live on the device.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import UsageError
from ..tfquiet import keras_warnings_off

STAGES = ("h2d", "compute", "d2h")
MIN_CALLS_PER_RUN = 3

# A call returns None (only its total is timed) or its (h2d, compute, d2h) nanoseconds.
Call = Callable[[], "tuple[int, int, int] | None"]


@dataclass
class Timing:
    samples_ms: list[float]
    runs: list[tuple[int, int]]           # (start, stop) indices of each run in samples_ms
    wall_s: list[float]                   # wall time of each run (the timed loop, calls only)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.samples_ms)


def time_calls(call: Call, *, warmup: int, iters: int | None, duration: float | None, repeats: int) -> Timing:
    """``warmup`` untimed calls, then ``repeats`` runs sharing ``iters`` calls (or ``duration`` seconds)."""
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        call()
    if iters is not None:
        repeats = min(repeats, iters)  # exactly ``iters`` calls, spread as evenly as the runs allow
    sizes = None if iters is None else [iters // repeats + (1 if i < iters % repeats else 0) for i in range(repeats)]
    per_run_s = None if duration is None else duration / repeats
    samples: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    runs, walls = [], []
    clock = time.perf_counter_ns
    for r in range(repeats):
        per_run = None if sizes is None else sizes[r]
        start = len(samples)
        t_run = clock()
        while True:
            t0 = clock()
            split = call()
            t1 = clock()
            if split is None:
                samples.append((t1 - t0) / 1e6)
            else:
                samples.append(sum(split) / 1e6)
                for name, ns in zip(STAGES, split):
                    stages[name].append(ns / 1e6)
            n = len(samples) - start
            if per_run is not None:
                if n >= per_run:
                    break
            elif (t1 - t_run) / 1e9 >= per_run_s and n >= MIN_CALLS_PER_RUN:  # type: ignore[operator]
                break
        walls.append((clock() - t_run) / 1e9)
        runs.append((start, len(samples)))
    return Timing(samples, runs, walls, {k: v for k, v in stages.items() if v})


def make_input(shape: tuple[int | None, ...], dtype: str, batch: int, seed: int,
               fallback_hw: tuple[int, ...] | None = None) -> np.ndarray:
    """Fixed random input: the same seed and batch give the same array for every artifact of that shape."""
    dims = list(shape[1:])
    if any(d is None for d in dims):
        if fallback_hw is None or len(fallback_hw) != len(dims):
            raise UsageError(f"the model's input has a dynamic size {shape}; cnn-bench needs a card that says the "
                             "input size")
        dims = [f if d is None else d for d, f in zip(dims, fallback_hw)]
    full = (batch, *[int(d) for d in dims])
    rng = np.random.default_rng([int(seed), int(batch)])
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return rng.integers(0, 256, full, dtype=np.uint8)
    if dt.kind == "f":
        return rng.random(full, dtype=np.float32).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -128), min(info.max, 127), full, dtype=dt)
    raise UsageError(f"cnn-bench cannot make inputs of type {dtype}")


def plain_call(be: Any, x: np.ndarray) -> Call:
    """The backend's own ``infer`` (host in, host out): what an application calls."""
    def call() -> None:
        be.infer(x)
    return call


def keras_predict_call(model: Any, x: np.ndarray) -> Call:
    """The tutorial baseline ``model.predict(x)``."""
    def call() -> None:
        with keras_warnings_off():
            model.predict(x, verbose=0)
    return call


def keras_direct_call(model: Any, x: np.ndarray) -> Call:
    """The tutorial baseline ``model(x, training=False)`` (eager), result brought to numpy."""
    def call() -> None:
        with keras_warnings_off():
            np.asarray(model(x, training=False))
    return call


# --- GPU paths: written against the documented APIs; they need an NVIDIA GPU to run -----------------------

def ort_device_call(be: Any, x: np.ndarray, copy: bool, device_id: int = 0, device: str = "cuda") -> Call:
    """ONNX Runtime CUDA / TensorRT EP through IO binding, copies timed apart from the compute.

    ``copy=True``: per call, H2D (``OrtValue.ortvalue_from_numpy(x, "cuda")`` and
    ``synchronize_inputs``), compute (``run_with_iobinding`` and
    ``synchronize_outputs``), D2H (``OrtValue.numpy()``). ``copy=False``: input and
    output stay on the device; only the compute is timed. ``device="cpu"`` runs the
    same steps on ONNX Runtime's CPU provider (what the tests can check without a GPU).
    """
    import onnxruntime as ort

    sess = be.session
    in_name, out_name = be.input_spec.name, be.output_spec.name
    binding = sess.io_binding()
    clock = time.perf_counter_ns
    if not copy:
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, device, device_id)
        binding.bind_ortvalue_input(in_name, x_dev)
        binding.bind_output(out_name, device, device_id)

        def resident() -> tuple[int, int, int]:
            t0 = clock()
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return 0, clock() - t0, 0
        return resident

    def copied() -> tuple[int, int, int]:
        t0 = clock()
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, device, device_id)
        binding.bind_ortvalue_input(in_name, x_dev)
        binding.bind_output(out_name, device, device_id)
        binding.synchronize_inputs()
        t1 = clock()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = clock()
        binding.get_outputs()[0].numpy()
        return t1 - t0, t2 - t1, clock() - t2
    return copied


def trt_device_call(be: Any, x: np.ndarray, copy: bool) -> Call | None:
    """A TensorRT engine with its pinned host buffers: H2D, ``execute_async_v3``, D2H each synchronised.

    Uses the buffers :class:`cnnedge.runtime.backends.trt.TrtBackend` allocates; returns
    None (plain ``infer`` timing) if that backend does not expose them.
    """
    need = ("_cudart", "_stream", "_d_in", "_d_out", "_h_in", "_h_in_ptr", "_h_out_ptr", "_in_row", "_out_row",
            "context", "_in", "_row_shape")
    if not all(hasattr(be, a) for a in need):
        return None
    cudart = be._cudart
    n = x.shape[0]
    if n > (be.max_batch or n):
        raise UsageError(f"batch {n} is above the engine's max {be.max_batch}")
    if not be.context.set_input_shape(be._in, (n,) + tuple(be._row_shape)):
        raise UsageError(f"{be.path}: TensorRT refused batch {n}")
    be._shape_set = n
    nin, nout = n * be._in_row, n * be._out_row
    h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    stream = be._stream
    flat = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
    clock = time.perf_counter_ns

    def check(result: Any, what: str) -> None:
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeError(f"{be.path}: CUDA {what} failed: {getattr(err, 'name', err)}")

    def sync() -> None:
        check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def run() -> None:
        if not be.context.execute_async_v3(int(stream)):
            raise RuntimeError(f"{be.path}: TensorRT execution failed")
        sync()

    if not copy:
        be._h_in[:nin] = flat
        check(cudart.cudaMemcpyAsync(be._d_in, be._h_in_ptr, nin, h2d, stream), "copy to device")
        sync()

        def resident() -> tuple[int, int, int]:
            t0 = clock()
            run()
            return 0, clock() - t0, 0
        return resident

    def copied() -> tuple[int, int, int]:
        t0 = clock()
        be._h_in[:nin] = flat
        check(cudart.cudaMemcpyAsync(be._d_in, be._h_in_ptr, nin, h2d, stream), "copy to device")
        sync()
        t1 = clock()
        run()
        t2 = clock()
        check(cudart.cudaMemcpyAsync(be._h_out_ptr, be._d_out, nout, d2h, stream), "copy to host")
        sync()
        return t1 - t0, t2 - t1, clock() - t2
    return copied
