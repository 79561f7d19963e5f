"""Timing one (artifact, backend, batch): warm-up, then timed calls in several runs.

Every call is timed on its own with ``time.perf_counter_ns``; nothing is clipped.
On a GPU the host-to-device copy, the compute and the device-to-host copy are
timed separately by the backend itself (:meth:`Backend.timed_infer`, each step
synchronised under the backend's own lock), or, with ``copy=False``, only the
compute on a batch that already lives on the device.
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
class Samples:
    samples_ms: list[float]
    runs: list[tuple[int, int]]           # (start, stop) indices of each run in samples_ms
    wall_s: list[float]                   # wall time of each run (the timed loop, calls only)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.samples_ms)


def time_calls(call: Call, *, warmup: int, iters: int | None, duration: float | None, repeats: int) -> Samples:
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
    return Samples(samples, runs, walls, {k: v for k, v in stages.items() if v})


def make_input(shape: tuple[int | None, ...], dtype: str, batch: int, seed: int) -> np.ndarray:
    """Fixed random input: the same seed and batch give the same array for every artifact of that shape."""
    dims = list(shape[1:])
    if any(d is None for d in dims):  # the backend fills a dynamic size from --input-size, the card or imgsz
        raise UsageError(f"the model's input has a dynamic size {shape}; give --input-size HxW")
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


def split_call(be: Any, x: np.ndarray, copy: bool = True) -> Call:
    """The backend's own :meth:`~cnnedge.runtime.backends.Backend.timed_infer`: its (h2d, compute, d2h)
    split; ``copy=False`` keeps the input on the device and times the compute alone. The batch is
    given in the backend's :meth:`~cnnedge.runtime.backends.Backend.input_buffer` (pinned on a GPU, so
    the copy timed is the DMA an application that fills that buffer gets)."""
    resident = not copy
    xb = be.input_buffer(x.shape[0]) if None not in be.input_spec.shape[1:] else x.copy()
    np.copyto(xb, x)

    def call() -> tuple[int, int, int]:
        t = be.timed_infer(xb, resident)[1]
        return t.h2d_ns, t.compute_ns, t.d2h_ns
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
