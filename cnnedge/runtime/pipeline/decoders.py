"""The decode stage: a :class:`Decoder` turns items (files or frames) into a :class:`Batch`.

:class:`HostDecoder` decodes in the calling thread; :class:`~.decode_pool.DecodePool`
runs it on threads and worker processes, the GPU decoder (:mod:`~.gpu_decoder`) runs on
the device, and :class:`OrderedStage` runs any Decoder (the GPU's, a test's) on a thread of its own.
A stage takes item lists with ``submit`` and hands Batches out in submission order.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol, Sequence

import numpy as np

from .batch import END_OF_INPUT, Batch
from .preprocessor import Preprocessor, error_text


class Decoder(Protocol):
    """Items in (frames with a ``path`` to read, or an ``image`` to prepare), one Batch out."""

    def decode_batch(self, items: Sequence[Any]) -> Batch: ...

    def close(self) -> None: ...


class DecodeStage(Protocol):
    """A decoder at work beside the other stages: lists of items in, Batches out of ``out`` in order."""

    def start(self) -> None: ...

    def submit(self, items: list[Any]) -> bool: ...

    def end(self) -> None: ...

    def decode_one_here(self) -> bool: ...

    def close(self) -> None: ...


def skipped_rows(items: Sequence[Any]) -> dict[int, str]:
    """The rows that are reported, never read (a folder's hidden, non-image or non-regular entries)."""
    return {i: f.skip.reason for i, f in enumerate(items) if getattr(f, "skip", None) is not None}


class HostDecoder:
    """Decodes in the calling thread with OpenCV: a file is read, decoded and resized in one step, a
    frame resized. ``keep``: also keep each original (sinks that draw on it). Picklable: a worker process
    runs the one it is given (a test gives one that crashes on some files)."""

    def __init__(self, preprocessor: Preprocessor, keep: bool = False) -> None:
        self.preprocessor, self.keep = preprocessor, keep

    def decode_row(self, item: Any) -> Any:
        """One item -> its pixels, or ``(pixels, original)`` with ``keep``."""
        pre = self.preprocessor
        if item.path is None:
            pixels = pre.prepare(item.image)
            return (pixels, item.image) if self.keep else pixels
        return pre.file_pixels_and_image(item.path) if self.keep else pre.file_pixels(item.path)

    def decode_rows(self, items: Sequence[Any], out: np.ndarray, skip: dict[int, str] | None = None,
                    cursor: np.ndarray | None = None) -> tuple[dict[int, str], list[Any] | None]:
        """Decode ``items`` into ``out[i]``: the failures (row -> reason) and, with ``keep``, the originals.
        ``cursor`` (a worker process's) holds the row being decoded, so a crash names its file."""
        errors = dict(skip or {})
        images: list[Any] | None = [None] * len(items) if self.keep else None
        for i, item in enumerate(items):
            if i in errors:
                continue
            if cursor is not None:
                cursor[1] = i
            try:
                got = self.decode_row(item)
                if images is not None:
                    got, images[i] = got
                out[i] = got
            except Exception as exc:  # noqa: BLE001 - one bad file never ends a run
                errors[i] = error_text(exc) if item.path is not None else f"bad frame ({exc})"
        return errors, images

    def decode_batch(self, items: Sequence[Any]) -> Batch:
        started = time.perf_counter()
        out = np.empty((len(items),) + self.preprocessor.row_shape, np.uint8)
        errors, images = self.decode_rows(items, out, skipped_rows(items))
        return Batch(list(items), out, errors, images, started=_started(items, started))

    def close(self) -> None:
        """Nothing held."""


def _started(items: Sequence[Any], t: float) -> float | None:
    """A batch of files is timed from its decode; frames from their capture."""
    return t if any(f.path is not None for f in items) else None


class OrderedStage:
    """Runs one :class:`Decoder` on a thread of its own, ``ahead`` batches ahead of the model at most;
    Batches (or the exception that ended it) go to ``out`` in order."""

    def __init__(self, decoder: Decoder, out: "queue.Queue[Any]", stop: threading.Event, ahead: int = 3) -> None:
        self.decoder, self.out, self.stop = decoder, out, stop
        self.todo: "queue.Queue[Any]" = queue.Queue()
        self.room = threading.Semaphore(ahead + 1)
        self.thread = threading.Thread(target=self.work, name="decode", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, items: list[Any]) -> bool:
        while not self.stop.is_set():
            if self.room.acquire(timeout=0.1):
                self.todo.put(items)
                return True
        return False

    def end(self) -> None:
        self.todo.put(END_OF_INPUT)

    def decode_one_here(self) -> bool:
        """Nothing to share: whole batches are decoded on the stage's thread."""
        return False

    def work(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    items = self.todo.get(timeout=0.1)
                except queue.Empty:
                    continue
                if items is END_OF_INPUT:
                    self.out.put(END_OF_INPUT)
                    return
                batch = self.decoder.decode_batch(items)
                batch.release = self.room.release
                self.out.put(batch)
        except BaseException as exc:  # noqa: BLE001 - the inference stage re-raises it
            self.out.put(exc)

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.decoder.close()
