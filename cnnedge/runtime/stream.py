"""The batched pipeline: sources -> decode/preprocess pool -> batcher -> backend -> results.

Each source has a feeder thread. Files are read and decoded in a small thread
pool (OpenCV releases the GIL) and handed on in order; live frames are prepared
by their feeder. Everything meets in one bounded queue: a batch closes when it
is full or ``max_wait_ms`` after its first frame, so several cameras share one
inference call and a slow camera never holds the others back. Latency is
measured from capture (or file read) to result.
"""
from __future__ import annotations

import collections
import math
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from ..errors import UsageError
from .images import ImageError, is_image_file, read_file
from .results import Prediction, Result
from .sources import FileSource, Frame, LiveSource, Source, open_source


class BatchModel(Protocol):
    """What the pipeline needs of a model: the four steps it runs. :class:`~cnnedge.runtime.Classifier`
    implements it; so can a wrapper that times or traces each step."""

    def decode(self, data: bytes, path: Any = None) -> np.ndarray: ...

    def prepare(self, image: np.ndarray) -> np.ndarray: ...

    def infer_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def postprocess(self, out: np.ndarray, topk: int | None = None) -> Sequence[Prediction]: ...

_END = object()


@dataclass
class PipelineStats:
    """Filled in while a pipeline runs; read it after (or during) the run."""

    done: int = 0
    failed: int = 0
    batches: int = 0
    started: float = 0.0
    elapsed: float = 0.0
    total: int | None = None  # files expected, when every source is a file list
    skipped: int = 0  # folder and list entries reported, not read (see sources.Skipped)
    skipped_by: dict[str, int] = field(default_factory=dict)  # the same, per kind
    latencies_ms: list[float] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sources)

    @property
    def reconnects(self) -> int:
        return sum(s.reconnects for s in self.sources)

    @property
    def given_up(self) -> list[str]:
        """Names of the live sources that stayed down past their ``give_up_s`` and ended."""
        return [s.name for s in self.sources if s.gave_up]

    @property
    def throughput(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def percentiles(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        p = np.percentile(np.asarray(self.latencies_ms), [50, 90, 99])
        return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}

    def summary(self) -> str:
        parts = [f"{self.done} done", f"{self.failed} failed"]
        if self.skipped:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.skipped_by.items())
            parts.append(f"{self.skipped} skipped ({kinds})")
        parts.append(f"{self.throughput:.1f} images/s over {self.elapsed:.2f} s")
        pct = self.percentiles()
        if pct:
            parts.append("latency p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms".format(**pct))
        if any(s.live for s in self.sources):
            parts.append(f"{self.dropped} frames dropped (newest-frame-only), {self.reconnects} reconnects")
        if self.given_up:
            parts.append(f"gave up on {', '.join(self.given_up)}")
        return "; ".join(parts)


class _Item:
    __slots__ = ("frame", "pixels", "error", "image", "gate")

    def __init__(self, frame: Frame, pixels: np.ndarray | None = None, error: str | None = None,
                 image: np.ndarray | None = None) -> None:
        self.frame, self.pixels, self.error, self.image = frame, pixels, error, image
        self.gate: threading.Event | None = None  # a live source's: set when the batcher takes the item


def default_workers() -> int:
    """Decode threads: the cores plus two (3..8). A decode holds the GIL for its Python part
    and files leave the pool in order, so two spare threads keep every core decoding; on the
    2-core machine 4 threads gave 5-7% more images/s than 2 (benchmarks/README.md)."""
    return max(3, min(8, (os.cpu_count() or 2) + 2))


def run_pipeline(clf: BatchModel, source: Any, batch: int = 8, *, max_wait_ms: float = 10.0,
                 workers: int | None = None, glob: str | None = None, max_frames: int | None = None,
                 duration: float | None = None, keep_images: bool = False, topk: int | None = None,
                 live: bool = False, open_timeout_ms: int | None = None, read_timeout_ms: int | None = None,
                 give_up_s: float | None = None,
                 stats: PipelineStats | None = None) -> Iterator[Result]:
    """Classify everything ``source`` (one source spec or a list of them) delivers.

    Yields :class:`Result` objects; unusable files come out as Results with an
    ``error``. Stops at the end of all finite sources, after ``max_frames``
    results or ``duration`` seconds, or when the caller stops iterating. A live
    stream that drops reconnects with back-off until the run ends, or, with
    ``give_up_s``, ends once it has been down that long (``stats.given_up``).
    """
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if not (isinstance(max_wait_ms, (int, float)) and math.isfinite(max_wait_ms) and max_wait_ms >= 0):
        raise UsageError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
    specs = list(source) if isinstance(source, (list, tuple)) and _all_specs(source) else [source]
    kw: dict[str, Any] = {"glob": glob, "live": live}
    if open_timeout_ms is not None:
        kw["open_timeout_ms"] = open_timeout_ms
    if read_timeout_ms is not None:
        kw["read_timeout_ms"] = read_timeout_ms
    if give_up_s is not None:
        if give_up_s <= 0:
            raise UsageError(f"give_up_s must be positive, got {give_up_s}")
        kw["give_up_s"] = give_up_s
    stats = stats if stats is not None else PipelineStats()
    sources: list[Source] = []
    try:
        for spec in specs:
            sources.append(open_source(spec, **kw))
    except BaseException:
        for s in sources:
            s.close()
        raise
    stats.sources = sources
    totals = [s.total if isinstance(s, FileSource) else None for s in sources]
    stats.total = sum(t for t in totals if t is not None) if all(t is not None for t in totals) else None
    return _run(clf, sources, batch, max_wait_ms, workers or default_workers(), max_frames, duration,
                keep_images, topk, stats)


def _all_specs(seq: Any) -> bool:
    """A list of sources (cameras, streams, folders, videos) rather than a list of image files."""
    return not all(isinstance(x, (str, os.PathLike)) and is_image_file(x) for x in seq)


def _run(clf: BatchModel, sources: list[Source], batch: int, max_wait_ms: float, workers: int,
         max_frames: int | None, duration: float | None, keep_images: bool, topk: int | None,
         stats: PipelineStats) -> Iterator[Result]:
    stop = threading.Event()
    ready: queue.Queue = queue.Queue(maxsize=max(2 * batch, 4))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    depth = max(2 * workers, batch + workers)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode(frame: Frame) -> _Item:
        if frame.skip is not None:
            return _Item(frame, error=frame.skip.reason)
        try:
            frame.t0, frame.timestamp = time.perf_counter(), time.time()
            img = clf.decode(read_file(frame.path), frame.path)
            return _Item(frame, clf.prepare(img), image=img if keep_images else None)
        except ImageError as exc:
            return _Item(frame, error=exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad file never ends a run
            return _Item(frame, error=f"{type(exc).__name__}: {exc}")

    def prepare(frame: Frame) -> _Item:
        try:
            return _Item(frame, clf.prepare(frame.image), image=frame.image if keep_images else None)
        except Exception as exc:  # noqa: BLE001
            return _Item(frame, error=f"bad frame ({exc})")

    def feed_files(src: Source) -> None:
        window: collections.deque[Future] = collections.deque()
        try:
            it = iter(src)
            exhausted = False
            while not stop.is_set():
                while not exhausted and len(window) < depth:
                    try:
                        window.append(pool.submit(decode, next(it)))
                    except StopIteration:
                        exhausted = True
                if not window:
                    break
                if not put(window.popleft().result()):
                    break
        finally:
            for f in window:
                f.cancel()
            put(_END)

    def feed_frames(src: Source) -> None:
        try:
            if isinstance(src, LiveSource):
                # At most one frame of a live source waits for the batcher: the next one is taken
                # from the source (its newest, older ones counted as dropped) only once the batcher
                # has taken this one, so a slow model never works through a backlog of stale frames.
                gate = threading.Event()
                gate.set()
                while not stop.is_set():
                    if not gate.wait(0.1):
                        continue
                    try:
                        f = src.get(0.1)
                    except StopIteration:
                        break
                    if f is None:
                        continue
                    item = prepare(f)
                    item.gate = gate
                    gate.clear()
                    if not put(item):
                        break
            else:
                for f in src:
                    if stop.is_set() or not put(prepare(f)):
                        break
        finally:
            put(_END)

    threads = []
    for src in sources:
        target = feed_files if isinstance(src, FileSource) else feed_frames
        t = threading.Thread(target=target, args=(src,), name=f"feed {src.name}", daemon=True)
        threads.append(t)

    stats.started = time.perf_counter()
    for t in threads:
        t.start()
    active = len(threads)
    emitted = 0
    deadline = None if duration is None else stats.started + duration
    wait_s = max_wait_ms / 1000.0

    def take(item: Any) -> Any:
        if item is not _END and item.gate is not None:
            item.gate.set()
        return item

    def finish(items: list[_Item]) -> list[Result]:
        out: list[Result] = []
        good = [it for it in items if it.error is None]
        preds = []
        if good:
            pixels = np.stack([it.pixels for it in good])
            preds = clf.postprocess(clf.infer_pixels(pixels), topk)
            stats.batches += 1
        now = time.perf_counter()
        gi = iter(preds)
        for it in items:
            f = it.frame
            if it.error is not None:
                if f.skip is not None:
                    stats.skipped += 1
                    stats.skipped_by[f.skip.kind] = stats.skipped_by.get(f.skip.kind, 0) + 1
                else:
                    stats.failed += 1
                out.append(Result(f.source, f.timestamp, f.frame, f.path, error=it.error))
            else:
                lat = (now - f.t0) * 1000.0
                stats.done += 1
                stats.latencies_ms.append(lat)
                out.append(Result(f.source, f.timestamp, f.frame, f.path, next(gi), lat, image=it.image,
                                  batch=stats.batches))
        return out

    try:
        while active > 0:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            try:
                first = take(ready.get(timeout=0.1))
            except queue.Empty:
                continue
            if first is _END:
                active -= 1
                continue
            items = [first]
            usable = int(first.error is None)  # failed files ride along without taking a batch place
            close_at = time.perf_counter() + wait_s
            limit = batch if max_frames is None else min(batch, max_frames - emitted)
            while usable < limit:
                remaining = close_at - time.perf_counter()
                try:
                    nxt = take(ready.get(timeout=remaining) if remaining > 0 else ready.get_nowait())
                except queue.Empty:
                    break
                if nxt is _END:
                    active -= 1
                    if active == 0:  # every source has ended: nothing more can join this batch
                        break
                    continue
                items.append(nxt)
                usable += int(nxt.error is None)
            for r in finish(items):
                stats.elapsed = time.perf_counter() - stats.started
                yield r
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
    finally:
        stats.elapsed = time.perf_counter() - stats.started
        stop.set()
        for src in sources:
            src.close()
        pool.shutdown(wait=False, cancel_futures=True)
        for t in threads:
            t.join(timeout=5)
