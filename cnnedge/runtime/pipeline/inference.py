"""The inference stage: one backend call per batch, on a thread of its own (the serial part of a run)."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import numpy as np

from ..backends.base import Backend
from .batch import END_OF_INPUT, Batch, DeviceBuffer
from .preprocessor import Preprocessor


class Inferred:
    """One batch after the model: its raw output (None when no row could run) and when it ended."""

    __slots__ = ("batch", "output", "ended", "call")

    def __init__(self, batch: Batch, output: np.ndarray | None, ended: float, call: int) -> None:
        self.batch, self.output, self.ended, self.call = batch, output, ended, call


class InferenceStage:
    """Takes Batches from ``ready`` in order, runs each once through the backend (a device Batch through
    ``infer_device`` when the backend and the card allow it, a host one through ``infer``), gives its
    buffer back and hands an :class:`Inferred` on to ``done``. ``when_idle``: work to do while no batch
    is ready (decode a queued piece); it returns False when it had none. ``finished``: called as each batch
    has run (the batcher may start the next). Times itself (``seconds``)."""

    def __init__(self, backend: Backend, preprocessor: Preprocessor, ready: "queue.Queue[Any]",
                 done: "queue.Queue[Any]", stop: threading.Event, deadline: float | None = None,
                 when_idle: Callable[[], bool] | None = None, finished: Callable[[], None] | None = None) -> None:
        self.backend, self.preprocessor = backend, preprocessor
        self.ready, self.done, self.stop, self.deadline, self.when_idle = ready, done, stop, deadline, when_idle
        self.finished = finished
        self.calls = 0
        self.seconds = 0.0
        self.thread = threading.Thread(target=self.work, name="infer", daemon=True)

    def infer(self, batch: Batch) -> np.ndarray | None:
        """The raw output of the batch's usable rows (None when it has none)."""
        rows = batch.model_rows()
        if rows is None:
            return None
        t0 = time.perf_counter()
        try:
            if isinstance(rows, DeviceBuffer):
                if self.takes_device(rows):
                    return self.backend.infer_device(rows.ptr, rows.shape, rows.dtype)
                rows = rows.to_host()
            return self.backend.infer(self.preprocessor.model_input(rows))
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t0

    def takes_device(self, rows: DeviceBuffer) -> bool:
        """Whether the backend runs on a GPU and takes these pixels as its input in one call."""
        from .gpu_decoder import on_gpu

        be, n = self.backend, rows.shape[0]
        return (self.preprocessor.pixels_are_input and on_gpu(be.name) and be.fixed_batch in (None, n)
                and (be.max_batch is None or be.min_batch <= n <= be.max_batch))

    def next_batch(self) -> Any:
        """The next Batch (or the end, or an exception to re-raise); None when none is ready yet."""
        try:
            return self.ready.get_nowait()
        except queue.Empty:
            if self.when_idle is not None and self.when_idle():
                return None
        try:
            return self.ready.get(timeout=0.1)
        except queue.Empty:
            return None

    def hand_on(self, what: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.done.put(what, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work(self) -> None:
        try:
            while not self.stop.is_set():
                if self.deadline is not None and time.perf_counter() >= self.deadline:
                    break
                got = self.next_batch()
                if got is None:
                    continue
                if isinstance(got, BaseException):
                    raise got
                if got is END_OF_INPUT:
                    break
                try:
                    out = self.infer(got)
                finally:
                    got.give_back()
                    if self.finished is not None:
                        self.finished()
                if not self.hand_on(Inferred(got, out, time.perf_counter(), self.calls)):
                    return
        except BaseException as exc:  # noqa: BLE001 - the caller's thread re-raises it
            self.hand_on(exc)
            return
        self.hand_on(None)
