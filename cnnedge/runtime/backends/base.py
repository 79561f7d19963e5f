"""The backend interface: load an artifact, say what it takes, run a batch, release.

See :mod:`cnnedge.runtime.backends` for the contract that cnn-bench and the
Classifier rely on.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...artifact.card import ModelCard
from ...errors import UsageError

_get_ident = threading.get_ident


@dataclass(frozen=True)
class Timing:
    """Where one batch's time went, in nanoseconds: host-to-device copy, compute, device-to-host copy.

    A backend without a device (ONNX Runtime on CPU through ``session.run``, Keras)
    reports the whole call as compute; with ``resident=True`` the copies are not
    part of the call and count as zero.
    """

    h2d_ns: int
    compute_ns: int
    d2h_ns: int

    @property
    def total_ns(self) -> int:
        return self.h2d_ns + self.compute_ns + self.d2h_ns


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: its name, its shape (``None`` for a dynamic dimension) and numpy dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None when the batch dimension is dynamic."""
        return self.shape[0] if self.shape else None


def plan_batches(n: int, fixed: int | None = None, max_batch: int | None = None,
                 min_batch: int = 1) -> list[tuple[int, int, int]]:
    """Split ``n`` rows into chunks a model accepts: ``(start, stop, padded_size)`` each.

    A fixed-batch model gets chunks of exactly ``fixed`` rows (the last one padded);
    a model with a batch range (a TensorRT profile) gets chunks of at most
    ``max_batch`` rows, each padded up to ``min_batch`` when it is shorter (a
    profile built with ``--batch 4,8,16`` refuses 1 to 3 rows); otherwise one chunk.
    The caller keeps only the first ``stop - start`` output rows of each chunk.
    """
    if n < 1:
        raise ValueError("an empty batch cannot be planned")
    if fixed is not None:
        return [(s, min(s + fixed, n), fixed) for s in range(0, n, fixed)]
    lo = max(1, int(min_batch or 1))
    if max_batch is not None and lo > max_batch:
        raise ValueError(f"min_batch {lo} is above max_batch {max_batch}")
    step = max_batch if max_batch is not None and n > max_batch else n
    return [(s, min(s + step, n), max(min(s + step, n) - s, lo)) for s in range(0, n, step)]


class Slot:
    """A reusable batch of one, for the per-frame path (``Classifier.predict``).

    The caller writes the image into ``input`` (the model's layout and dtype, batch 1)
    in place and calls ``run()``, whose output stays valid until the next ``run()`` on
    the same slot. A slot belongs to one thread at a time. Without ``run`` it runs
    through ``infer``; a backend may give a run of its own that skips ``infer``'s planning
    (ONNX Runtime: ``session.run`` on the buffer on CPU, buffers bound once on a GPU): the
    backend makes that callable, so the slot never touches the backend's buffers or gate.
    """

    def __init__(self, backend: "Backend", input: np.ndarray,
                 run: Callable[[], np.ndarray] | None = None) -> None:
        self.backend = backend
        self.input = input
        self._own_run = run

    def run(self) -> np.ndarray:
        own = self._own_run
        return own() if own is not None else self.backend.infer(self.input)


class Backend:
    """Base class. Subclasses set the attributes in ``__init__`` and write ``_infer_impl`` (and, on a GPU,
    ``_takes_device_batches`` and ``_infer_device_impl``), which only run: the public methods check,
    count the call in flight for close(), split or pad, and time.

    Attributes: ``name`` (e.g. ``"ort-cpu"``), ``path``, ``input_spec`` and
    ``output_spec`` (:class:`TensorSpec`), ``fixed_batch`` (the only batch size the
    artifact takes, or None), ``max_batch`` (the largest it takes, or None),
    ``card`` (the :class:`ModelCard` the artifact carries, or None), ``settings``
    (the engine settings chosen for this machine, e.g. ``{"threads": 2, "spinning": False}``:
    cnn-infer's start line and cnn-bench's report show them; ``"auto"`` says why ``auto`` picked this CPU
    engine), ``choice`` (that :class:`~.engine_choice.EngineChoice`, or None when nothing was measured).

    ``infer`` may be called from several threads at once: a backend whose runtime
    cannot run two calls together (a TensorRT context, a Keras function) serialises
    them under its own lock.
    """

    name: str = "base"

    def __init__(self) -> None:
        self.path: str = ""
        self.input_spec: TensorSpec
        self.output_spec: TensorSpec
        self.fixed_batch: int | None = None
        self.max_batch: int | None = None
        self.min_batch: int = 1
        self.card: ModelCard | None = None
        self.metadata: dict[str, str] = {}  # the file's own key/value metadata (ONNX metadata_props)
        self.inference_time = 0.0  # seconds the last infer()/infer_device() spent running (as Polygraphy's runners)
        self.size_from: str | None = None  # where a dynamic graph's image size came from (sizing.py)
        self.settings: dict[str, object] = {}  # the engine settings chosen for this machine (threads, spinning ...)
        self.choice: Any = None  # auto's EngineChoice (engine_choice.py) when it measured the CPU engines
        self._closed = False
        # close() waits for in-flight infer() calls: they count themselves in and out under this
        # lock (a plain one: two C-level acquisitions per call on the hot path), so a session,
        # engine or device buffer is never freed under a running call.
        self._gate = threading.Lock()
        self._busy: dict[int, int] = {}  # thread id -> its calls in flight

    # public ------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one preprocessed batch (the model's layout and dtype); return the raw output.

        Batches larger than the artifact takes are split, fixed-batch models are fed
        padded chunks of their size; the output has one row per input row.
        """
        fast = self.__dict__.get("_fast")
        if fast is None:
            fast = self._fast = self._fast_checks()
        np_dtype, tail, unbounded = fast
        # hot path: one attribute walk, no allocation, for the common well-formed batch
        if (not self._closed and type(batch) is np.ndarray and batch.dtype == np_dtype and batch.shape[1:] == tail
                and batch.flags.c_contiguous and batch.shape[0] > 0
                and (unbounded or (self.max_batch is not None
                                   and self.min_batch <= batch.shape[0] <= self.max_batch))):
            return self._guarded(batch, None)
        batch = self._checked(batch)
        n = batch.shape[0]
        plan = plan_batches(n, self.fixed_batch, self.max_batch, self.min_batch)
        if len(plan) == 1 and plan[0][2] == n:
            return self._guarded(batch, None)
        return self._guarded(batch, plan)

    def input_buffer(self, n: int) -> np.ndarray:
        """An input array for a batch of ``n`` that :meth:`infer` reads without a staging copy: fill it
        and pass it in. Pinned host memory on a GPU backend that has a buffer per thread (ONNX Runtime's
        CUDA and TensorRT providers), so the upload is one DMA; a plain array elsewhere. It belongs to
        the calling thread and stays valid while the backend is open; there, an :meth:`infer` of another
        array of ``n`` rows from the same thread is staged through it and overwrites it."""
        spec = self.input_spec
        if n < 1 or any(d is None for d in spec.shape[1:]):
            raise UsageError(f"input_buffer() needs a batch of at least 1 and fixed input dims, got {n} for "
                             f"{spec.shape}")
        return np.zeros((n,) + tuple(spec.shape[1:]), np.dtype(spec.dtype))

    def infer_device(self, ptr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """Run a batch that is already in this GPU's memory (``ptr``: a device pointer to a C-contiguous
        ``shape`` array of ``dtype``, e.g. from a GPU decoder, its writes finished); the output comes back
        to the host. GPU backends implement it; the others refuse.

        Checks the batch (one call's worth: no split, no padding) and runs ``_infer_device_impl``
        counted as in flight, as :meth:`infer` does."""
        if not self._takes_device_batches():
            raise UsageError(f"{self.name} runs on the CPU; infer_device() takes GPU memory")
        self._check_device_batch(shape, dtype)
        self._enter()
        t0 = time.perf_counter()
        try:
            return self._infer_device_impl(int(ptr), tuple(shape), dtype)
        finally:
            self.inference_time = time.perf_counter() - t0
            self._leave()

    def stop_runs(self) -> None:
        """Stop the runs in flight from another thread (a signal's watcher, a load timeout); they raise
        :class:`~cnnedge.runtime.interrupt.RunInterrupted`. A backend whose engine cannot be stopped
        midway does nothing: its runs end when they end."""

    def _check_device_batch(self, shape: tuple[int, ...], dtype: str) -> None:
        """UsageError unless a device batch of ``shape``/``dtype`` is one this artifact takes in one call."""
        spec = self.input_spec
        n = shape[0] if shape else 0
        if dtype != spec.dtype or tuple(shape[1:]) != tuple(spec.shape[1:]) or n < max(1, self.min_batch) or (
                self.max_batch is not None and n > self.max_batch) or self.fixed_batch not in (None, n):
            raise UsageError(f"{self.path}: input {spec.name!r} takes {spec.dtype} {spec.shape} in batches of "
                             f"{self.min_batch}..{self.max_batch or 'any'}, got {dtype} {shape}")

    def timed_infer(self, batch: np.ndarray, resident: bool = False) -> tuple[np.ndarray, Timing]:
        """Run one batch and say where its time went: ``(output, Timing)``.

        Runs under the same lock and in-flight gate as :meth:`infer`, so a benchmark
        measures what an application gets and never a state no call could see. The
        batch must be one the artifact takes in a single call (no split, no padding).
        ``resident=True``: the batch is uploaded once and stays on the device; later
        calls with the same array object time the compute alone (on a backend without
        a device, the same as ``False``). Don't change that array's contents between
        such calls.
        """
        batch = self._checked(batch)
        n = batch.shape[0]
        plan = plan_batches(n, self.fixed_batch, self.max_batch, self.min_batch)
        if len(plan) != 1 or plan[0][2] != n:
            takes = (f"only batch {self.fixed_batch}" if self.fixed_batch is not None
                     else f"batches {self.min_batch}..{self.max_batch}")
            raise UsageError(f"{self.path}: timed_infer() times one call and this artifact takes {takes}, "
                             f"not {n}; give a batch it takes in one call")
        self._enter()
        try:
            return self._timed_impl(batch, resident)
        finally:
            self._leave()

    def set_input_spec(self, spec: TensorSpec) -> None:
        """Fix the dynamic non-batch dimensions of ``input_spec`` (a graph of dynamic height and width,
        sized by :mod:`.sizing`); the name, dtype, rank, batch and fixed dimensions must stay as they are."""
        old = self.input_spec
        if (spec.name != old.name or spec.dtype != old.dtype or len(spec.shape) != len(old.shape)
                or spec.shape[0] != old.shape[0]
                or any(d is not None and d != n for d, n in zip(old.shape[1:], spec.shape[1:]))):
            raise ValueError(f"set_input_spec() fixes dynamic dimensions only: {old} cannot become {spec}")
        self.input_spec = spec
        self.__dict__.pop("_fast", None)  # the hot-path checks were cached for the old shape

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` when it fits the input spec (made contiguous), else a one-line UsageError."""
        if self._closed:
            raise UsageError(f"{self.name} backend for {self.path} is closed")
        spec = self.input_spec
        if not isinstance(batch, np.ndarray):
            raise UsageError(f"infer() takes a numpy array, got {type(batch).__name__}")
        if batch.dtype != spec.dtype:
            raise UsageError(f"{self.path}: input {spec.name!r} takes {spec.dtype}, got {batch.dtype}")
        if batch.ndim != len(spec.shape) or any(
                d is not None and d != b for d, b in zip(spec.shape[1:], batch.shape[1:])):
            want = "x".join("N" if d is None else str(d) for d in (None,) + tuple(spec.shape[1:]))
            raise UsageError(f"{self.path}: input {spec.name!r} takes shape {want}, got "
                             f"{'x'.join(map(str, batch.shape))}")
        if batch.shape[0] == 0:
            raise UsageError("infer() got an empty batch")
        return batch if batch.flags.c_contiguous else np.ascontiguousarray(batch)

    def _timed_impl(self, batch: np.ndarray, resident: bool) -> tuple[np.ndarray, Timing]:
        """No device: the whole call is compute. Backends with a device time their copies apart."""
        t0 = time.perf_counter_ns()
        out = self._infer_impl(batch)
        return out, Timing(0, time.perf_counter_ns() - t0, 0)

    def _guarded(self, batch: np.ndarray, plan: list[tuple[int, int, int]] | None) -> np.ndarray:
        """Run ``_infer_impl`` (over ``plan``'s chunks when given) counted as in flight, so that
        close() waits for it; a call that starts after close() raises UsageError."""
        self._enter()
        t0 = time.perf_counter()
        try:
            if plan is None:
                return self._infer_impl(batch)
            outs = []
            for start, stop, size in plan:
                chunk = batch[start:stop]
                if size != stop - start:
                    pad = np.repeat(chunk[-1:], size - (stop - start), axis=0)
                    chunk = np.concatenate([chunk, pad])
                outs.append(self._infer_impl(chunk)[:stop - start])
            return np.concatenate(outs)
        finally:
            self.inference_time = time.perf_counter() - t0
            self._leave()

    def _enter(self) -> None:
        """Count a call in as in flight, per thread (close() waits for other threads' calls); UsageError once
        closed."""
        me = _get_ident()
        with self._gate:
            if self._closed:
                raise UsageError(f"{self.name} backend for {self.path} is closed")
            self._busy[me] = self._busy.get(me, 0) + 1

    def _leave(self) -> None:
        me = _get_ident()
        with self._gate:
            n = self._busy.get(me, 0) - 1
            if n > 0:
                self._busy[me] = n
            else:
                self._busy.pop(me, None)

    def _others_busy(self) -> bool:
        """Whether a live thread other than this one has a call in flight. This thread's own count is not waited
        for: a stop signal raised between a call's count and its ``try`` (Ctrl-C lands at any bytecode) leaves it
        counted, and close() in that thread then waited for itself for ever (cnn-bench hung after SIGTERM)."""
        me = _get_ident()
        alive = {t.ident for t in threading.enumerate()}
        return any(tid != me and tid in alive for tid in self._busy)

    def slot(self) -> "Slot | None":
        """A new :class:`Slot` for batches of one, or None when the artifact cannot take one
        (a fixed batch above 1, a profile whose minimum is above 1, a dynamic image size)."""
        self._enter()  # made while counted in flight, so close() cannot free the session under it
        try:
            return self._make_slot()
        finally:
            self._leave()

    def _make_slot(self) -> "Slot | None":
        tail = tuple(self.input_spec.shape[1:])
        if None in tail or (self.fixed_batch or 1) != 1 or self.min_batch > 1:
            return None
        return Slot(self, np.zeros((1,) + tail, np.dtype(self.input_spec.dtype)))

    def _fast_checks(self) -> tuple[np.dtype, tuple | None, bool]:
        """What the hot path compares against: dtype, the fixed non-batch shape (None when a
        dimension is dynamic: then the full check runs), and whether any batch size goes."""
        tail = tuple(self.input_spec.shape[1:])
        return (np.dtype(self.input_spec.dtype), None if None in tail else tail,
                self.fixed_batch is None and self.max_batch is None and self.min_batch <= 1)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _takes_device_batches(self) -> bool:
        """Whether :meth:`infer_device` runs here: a backend on a GPU says so."""
        return False

    def _infer_device_impl(self, ptr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:  # pragma: no cover
        """Run one checked device batch; called counted as in flight (see :meth:`infer_device`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the session, engine and buffers; idempotent.

        Waits for infer() calls already running in other threads to finish (nothing is
        freed under them); calls made afterwards raise UsageError. Calling close() from
        inside an infer() on the same backend would wait forever: don't.
        """
        gate = self.__dict__.get("_gate")
        if gate is None:  # a subclass that failed before Backend.__init__ ran
            return
        with gate:
            if self._closed:
                return
            self._closed = True
        while True:  # closing is rare: poll until the calls already running have finished
            with gate:
                if not self._others_busy():
                    break
            time.sleep(0.001)
        self._close_impl()

    def _close_impl(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.path} input={self.input_spec}>"


def settings_text(settings: dict[str, object]) -> str:
    """``, 2 threads, spinning off``: a backend's chosen settings as cnn-infer's start line and cnn-bench show them."""
    words = {"threads": lambda v: f"{v} thread{'s' if v != 1 else ''}",
             "spinning": lambda v: "spinning " + ("on" if v else "off"), "auto": lambda v: f"auto: {v}"}
    parts = [words[k](v) if k in words else f"{k} {v}" for k, v in settings.items()]
    return "".join(", " + p for p in parts)
