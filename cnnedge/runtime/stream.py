"""The batched pipeline: sources -> decode pool -> inference thread -> results, a batch at a time.

Files go to the decode pool in chunks of one batch (:mod:`.decodepool`: threads at
first, worker processes with shared-memory batch buffers for longer runs, or the
GPU with ``decode="gpu"``) and come back in order, already stacked. Live frames are
prepared by their source's feeder and meet in the same queue: their batch closes
when it is full, ``max_wait_ms`` after its first frame, or when every source has
ended, so several cameras share one inference call and a slow camera never holds
the others back. The inference thread does a constant amount of work per batch
(run the model, hand the raw output on); predictions and Results are built in the
caller's thread from one vectorised post-processing call. Latency is measured from
capture (or the start of a file's decode) to the end of its batch's inference.
"""
from __future__ import annotations

import collections
import itertools
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from ..card import ModelCard
from ..errors import UsageError
from .decodepool import Chunk, DecodeParams, DecodePool, available_cores
from .gpu_decode import on_gpu
from .gpu_decode import wanted as gpu_decode_wanted
from ..imaging.files import is_image_file, read_file
from .results import Prediction, Result
from .sources import FileSource, Frame, LiveSource, Source, open_source


class BatchModel(Protocol):
    """What the pipeline needs of a model: the steps it runs (``decode_pixels`` is ``prepare(decode())``
    in one, for files whose originals are not kept). :class:`~cnnedge.runtime.Classifier`
    implements it; so can a wrapper that times or traces each step."""

    def decode(self, data: bytes, path: Any = None) -> np.ndarray: ...

    def decode_pixels(self, data: bytes, path: Any = None) -> np.ndarray: ...

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
    batch_size: int = 0  # images per inference call (the batch given, or the default for the sources)
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

    def count_unusable(self, frame: Frame) -> None:
        """One frame that gave no prediction: skipped (reported, never read; counted by kind) or failed."""
        if frame.skip is None:
            self.failed += 1
        else:
            self.skipped += 1
            self.skipped_by[frame.skip.kind] = self.skipped_by.get(frame.skip.kind, 0) + 1

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
    """One live or video frame, prepared by its feeder."""

    __slots__ = ("frame", "pixels", "error", "image", "gate")

    def __init__(self, frame: Frame, pixels: np.ndarray | None = None, error: str | None = None,
                 image: np.ndarray | None = None) -> None:
        self.frame, self.pixels, self.error, self.image = frame, pixels, error, image
        self.gate: threading.Event | None = None  # a live source's: set when the batcher takes the item


class _Done:
    """What the inference thread hands the caller's thread: one batch's units and raw output."""

    __slots__ = ("chunk", "items", "out", "batch", "t")

    def __init__(self, chunk: Chunk | None, items: list[_Item], out: np.ndarray | None, batch: int,
                 t: float) -> None:
        self.chunk, self.items, self.out, self.batch, self.t = chunk, items, out, batch, t


def default_workers() -> int:
    """Decode workers: the cores this process may use (its affinity). Each worker decodes a whole
    batch at a time, so there is no per-image hand-off to hide behind extra threads."""
    return available_cores()


DECODE_MODES = ("auto", "cpu", "gpu")
FILE_BATCH = 32  # the default batch when every source is image files: throughput, no one waits on a frame
LIVE_BATCH = 8  # the default with a camera, stream or video among the sources


def default_batch(clf: Any, sources: Sequence[Source]) -> int:
    """The batch when none is given: :data:`FILE_BATCH` for image files alone (fewer, larger inference
    calls: each call and hand-off costs the same whatever its size), else :data:`LIVE_BATCH`; never
    more than a dynamic-size graph's pixel limit allows."""
    from .backends.sizing import most_batch

    want = FILE_BATCH if sources and all(isinstance(s, FileSource) for s in sources) else LIVE_BATCH
    backend = getattr(clf, "backend", None)
    most = most_batch(backend) if backend is not None else None
    return want if most is None else max(1, min(want, most))


def iter_batches(clf: BatchModel, source: Any, batch: int | None = None, *, max_wait_ms: float = 10.0,
                 workers: int | None = None, glob: str | None = None, max_frames: int | None = None,
                 duration: float | None = None, keep_images: bool = False, topk: int | None = None,
                 live: bool = False, open_timeout_ms: int | None = None, read_timeout_ms: int | None = None,
                 give_up_s: float | None = None, stats: PipelineStats | None = None, decode: str = "auto",
                 processes: bool | None = None) -> Iterator[list[Result]]:
    """Like :func:`run_pipeline`, one list of Results per inference call (a batch and the failed files
    that rode with it), for sinks that write a batch at a time.

    ``batch``: images per inference call; None: :func:`default_batch` (32 for image files, 8 with a live
    source or video). ``decode``: ``"cpu"`` (OpenCV), ``"gpu"`` (nvImageCodec + CV-CUDA, the ``gpu-decode``
    extra and a GPU backend) or ``"auto"`` (GPU when both are there). ``processes``: decode in worker processes from the
    start (True), never (False), or once the run has lasted about a second with files left (None).
    """
    if batch is not None and batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if not (isinstance(max_wait_ms, (int, float)) and math.isfinite(max_wait_ms) and max_wait_ms >= 0):
        raise UsageError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
    if decode not in DECODE_MODES:
        raise UsageError(f"decode {decode!r}: expected one of {', '.join(DECODE_MODES)}")
    use_gpu = _gpu_decode_wanted(clf, decode, keep_images)
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
    if batch is None:
        batch = default_batch(clf, sources)
    stats.batch_size = batch
    totals = [s.total if isinstance(s, FileSource) else None for s in sources]
    stats.total = sum(t for t in totals if t is not None) if all(t is not None for t in totals) else None
    return _run(clf, sources, batch, max_wait_ms, workers or default_workers(), max_frames, duration,
                keep_images, topk, stats, use_gpu, processes)


def run_pipeline(clf: BatchModel, source: Any, batch: int | None = None, *, max_wait_ms: float = 10.0,
                 workers: int | None = None, glob: str | None = None, max_frames: int | None = None,
                 duration: float | None = None, keep_images: bool = False, topk: int | None = None,
                 live: bool = False, open_timeout_ms: int | None = None, read_timeout_ms: int | None = None,
                 give_up_s: float | None = None, stats: PipelineStats | None = None, decode: str = "auto",
                 processes: bool | None = None) -> Iterator[Result]:
    """Classify everything ``source`` (one source spec or a list of them) delivers.

    Yields :class:`Result` objects; unusable files come out as Results with an
    ``error``. Stops at the end of all finite sources, after ``max_frames``
    results or ``duration`` seconds, or when the caller stops iterating. A live
    stream that drops reconnects with back-off until the run ends, or, with
    ``give_up_s``, ends once it has been down that long (``stats.given_up``).
    ``decode`` and ``processes``: see :func:`iter_batches`.
    """
    batches = iter_batches(clf, source, batch, max_wait_ms=max_wait_ms, workers=workers, glob=glob,
                           max_frames=max_frames, duration=duration, keep_images=keep_images, topk=topk, live=live,
                           open_timeout_ms=open_timeout_ms, read_timeout_ms=read_timeout_ms, give_up_s=give_up_s,
                           stats=stats, decode=decode, processes=processes)
    return _flatten(batches)


def _flatten(batches: Iterator[list[Result]]) -> Iterator[Result]:
    try:
        for rs in batches:
            yield from rs
    finally:
        batches.close()  # type: ignore[attr-defined]


def _all_specs(seq: Any) -> bool:
    """A list of sources (cameras, streams, folders, videos) rather than a list of image files."""
    return not all(isinstance(x, (str, os.PathLike)) and is_image_file(x) for x in seq)


def _gpu_decode_wanted(clf: Any, decode: str, keep_images: bool) -> bool:
    """Whether to decode on the GPU; ``gpu`` that cannot be honoured is a one-line UsageError."""
    if decode == "cpu":
        return False
    if keep_images:
        if decode == "gpu":
            raise UsageError("--decode gpu keeps no original images, which --save-dir, --save-video and --show "
                             "need; use --decode cpu with them")
        return False
    backend = getattr(clf, "backend", None)
    name = getattr(backend, "name", "")
    if decode == "auto" and not on_gpu(name):
        return False
    return gpu_decode_wanted(clf, decode)


def _decode_params(clf: Any) -> DecodeParams | None:
    """What worker processes need to decode for ``clf``: its card's input and preprocessing."""
    card = getattr(clf, "card", None)
    if not isinstance(card, ModelCard):
        return None
    return DecodeParams(card.input, card.preprocess, bool(getattr(clf, "reduce_decode", True)))


def _run(clf: BatchModel, sources: list[Source], batch: int, max_wait_ms: float, workers: int,
         max_frames: int | None, duration: float | None, keep_images: bool, topk: int | None,
         stats: PipelineStats, use_gpu: bool, processes: bool | None) -> Iterator[list[Result]]:
    stop = threading.Event()
    ready: queue.Queue = queue.Queue()  # bounded by the pool's slots and one frame per live source
    done_q: queue.Queue = queue.Queue(maxsize=4)
    params = _decode_params(clf)

    def decode_file(path: str) -> Any:
        if not keep_images:
            return clf.decode_pixels(read_file(path), path)
        img = clf.decode(read_file(path), path)
        return clf.prepare(img), img

    pool: Any
    if use_gpu:
        from .gpu_decode import GpuDecodePool

        pool = GpuDecodePool(clf, decode_file, workers, batch, ready, keep=keep_images, stop=stop)
    else:
        pool = DecodePool(decode_file, params, workers, batch, ready, keep=keep_images, processes=processes,
                          stop=stop, total=stats.total if all(isinstance(s, FileSource) for s in sources) else None)

    def put(item: Any) -> bool:
        if stop.is_set():
            return False
        ready.put(item)
        return True

    def prepare(frame: Frame) -> _Item:
        try:
            return _Item(frame, clf.prepare(frame.image), image=frame.image if keep_images else None)
        except Exception as exc:  # noqa: BLE001
            return _Item(frame, error=f"bad frame ({exc})")

    def feed_files(src: Source) -> None:
        try:
            it = iter(src)
            while not stop.is_set():
                chunk = list(itertools.islice(it, batch))
                if not chunk or not pool.submit(chunk):
                    break
        finally:
            pool.mark(_END)

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
                while not stop.is_set():
                    if ready.qsize() > 2 * batch:  # a video file: don't read ahead of the model
                        time.sleep(0.002)
                        continue
                    f = next(src, None)
                    if f is None or not put(prepare(f)):
                        break
        finally:
            ready.put(_END)

    threads = []
    for src in sources:
        target = feed_files if isinstance(src, FileSource) else feed_frames
        threads.append(threading.Thread(target=target, args=(src,), name=f"feed {src.name}", daemon=True))

    stats.started = time.perf_counter()
    deadline = None if duration is None else stats.started + duration
    wait_s = max_wait_ms / 1000.0
    infer_thread = threading.Thread(target=_infer_loop, name="infer", daemon=True,
                                    args=(clf, pool, ready, done_q, stop, len(threads), batch, wait_s, deadline,
                                          not any(isinstance(s, LiveSource) for s in sources)))
    pool.start()
    for t in threads:
        t.start()
    infer_thread.start()
    emitted = 0
    try:
        while True:
            try:
                d = done_q.get(timeout=0.1)
            except queue.Empty:
                if not infer_thread.is_alive() and done_q.empty():
                    break
                continue
            if d is None:
                break
            if isinstance(d, BaseException):
                raise d
            rs = _results(clf, d, topk, stats)
            if max_frames is not None and emitted + len(rs) >= max_frames:
                rs = rs[:max_frames - emitted]
                stats.elapsed = time.perf_counter() - stats.started
                yield rs
                return
            emitted += len(rs)
            stats.elapsed = time.perf_counter() - stats.started
            yield rs
    finally:
        stats.elapsed = time.perf_counter() - stats.started
        stop.set()
        for src in sources:
            src.close()
        try:
            while True:
                done_q.get_nowait()  # unblock an inference thread waiting to hand over
        except queue.Empty:
            pass
        infer_thread.join(timeout=5)
        pool.close()
        for t in threads:
            t.join(timeout=5)


def _infer_loop(clf: BatchModel, pool: Any, ready: queue.Queue, done_q: queue.Queue, stop: threading.Event,
                active: int, batch: int, wait_s: float, deadline: float | None, helps: bool) -> None:
    """The serial part: take a decoded chunk (or gather live frames), run the model, hand the raw output on.
    O(1) work per chunk; per-item work only for frames that arrive one at a time. With ``helps`` (no live
    source, whose frames must not wait behind a decode), it decodes a queued piece when nothing is ready."""
    n = 0

    def hand(d: Any) -> bool:
        while not stop.is_set():
            try:
                done_q.put(d, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(item: Any) -> Any:
        if isinstance(item, _Item) and item.gate is not None:
            item.gate.set()
        return item

    later: collections.deque = collections.deque()
    try:
        while (active > 0 or later) and not stop.is_set():  # a chunk set aside still runs after the last end
            if deadline is not None and time.perf_counter() >= deadline:
                break
            if later:
                first = later.popleft()
            else:
                try:
                    first = take(ready.get_nowait())
                except queue.Empty:
                    if helps and pool.help():
                        continue
                    try:
                        first = take(ready.get(timeout=0.1))
                    except queue.Empty:
                        continue
            if isinstance(first, BaseException):
                raise first
            if first is _END or (isinstance(first, Chunk) and first.marker is _END):
                active -= 1
                continue
            if isinstance(first, Chunk):
                out = None
                if len(first.frames) > len(first.errors or ()):
                    px = _good_rows(first)
                    out = px.infer(clf) if hasattr(px, "infer") else clf.infer_pixels(px)
                    n += 1
                pool.release(first.slot)
                if not hand(_Done(first, [], out, n, time.perf_counter())):
                    break
                continue
            items = [first]
            usable = int(first.error is None)  # failed frames ride along without taking a batch place
            close_at = time.perf_counter() + wait_s
            while usable < batch and active > 0 and not stop.is_set():
                remaining = close_at - time.perf_counter()
                try:
                    nxt = take(ready.get(timeout=min(remaining, 0.1)) if remaining > 0 else ready.get_nowait())
                except queue.Empty:
                    if remaining > 0.1:
                        continue
                    break
                if nxt is _END or (isinstance(nxt, Chunk) and nxt.marker is _END):
                    active -= 1  # a source that ends closes the batch once no other source can add to it
                    continue
                if isinstance(nxt, (Chunk, BaseException)):
                    later.append(nxt)
                    continue
                items.append(nxt)
                usable += int(nxt.error is None)
            good_items = [it for it in items if it.error is None]
            out = None
            if good_items:
                out = clf.infer_pixels(np.stack([it.pixels for it in good_items]))
                n += 1
            if not hand(_Done(None, items, out, n, time.perf_counter())):
                break
    except BaseException as exc:  # noqa: BLE001 - the caller's thread re-raises it
        hand(exc)
        return
    hand(None)


def _good_rows(c: Chunk) -> Any:
    """The pixels of a chunk's files that decoded: all rows, without a copy, when none failed
    (a GPU batch holds only the decoded files already)."""
    if not c.errors or not isinstance(c.pixels, np.ndarray):
        return c.pixels
    return c.pixels[[i for i in range(len(c.frames)) if i not in c.errors]]


NONFINITE = ("the model gave a non-finite score (NaN or inf) for this image: its input or its preprocessing "
             "(--scale, --mean, --std) overflows; not a prediction")


def _results(clf: BatchModel, d: _Done, topk: int | None, stats: PipelineStats) -> list[Result]:
    """Results of one batch, built in the caller's thread: one vectorised post-processing call. A NaN
    or infinite score is a failed row saying so, never a prediction."""
    preds = clf.postprocess(d.out, topk) if d.out is not None else []
    out: list[Result] = []

    def predicted(f: Any, pred: Any, lat: float, image: Any) -> None:
        if not math.isfinite(pred.score):
            stats.failed += 1
            out.append(Result(f.source, f.timestamp, f.frame, f.path, error=NONFINITE))
            return
        stats.done += 1
        stats.latencies_ms.append(lat)
        out.append(Result(f.source, f.timestamp, f.frame, f.path, pred, lat, image=image, batch=d.batch))

    gi = iter(preds)
    if d.chunk is not None:
        c = d.chunk
        errors = c.errors or {}
        lat = (d.t - c.t0) * 1000.0
        images = c.images
        for i, f in enumerate(c.frames):
            if i in errors:
                stats.count_unusable(f)
                out.append(Result(f.source, f.timestamp, f.frame, f.path, error=errors[i]))
            else:
                predicted(f, next(gi), lat, images[i] if images is not None else None)
    else:
        for it in d.items:
            f = it.frame
            if it.error is not None:
                stats.count_unusable(f)
                out.append(Result(f.source, f.timestamp, f.frame, f.path, error=it.error))
            else:
                predicted(f, next(gi), (d.t - f.t0) * 1000.0, it.image)
    if d.out is not None:
        stats.batches += 1
    return out
