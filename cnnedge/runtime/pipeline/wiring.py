""":func:`run`, the one way into the pipeline: sources -> batcher -> decoder -> inference -> results.

Every stage is built here, from the model's card and backend, and then connected; nothing else
happens here. Files and frames take the same road: the :class:`~.batcher.Batcher` groups what every
source delivers, a decode stage (:class:`~.decode_pool.DecodePool` on the CPU, a GPU
decoder, or the Decoder given) turns each group into a :class:`~.batch.Batch`, the
:class:`~.inference.InferenceStage` runs it once through the backend, and the
:class:`~.results.ResultMaker` turns its output into Results in the caller's thread, one list per
inference call. Latency runs from a frame's capture (or the start of a file's decode) to the end of
its batch's inference.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ...artifact.card import ModelCard
from ...errors import UsageError
from ...imaging.files import is_image_file
from ..backends.base import Backend
from ..results import Result
from ..sources import FileSource, LiveSource, Source, open_source
from .batcher import Batcher
from .decode_pool import DecodePool, available_cores
from .decoders import Decoder, HostDecoder, OrderedStage
from .gpu_decoder import AHEAD, GpuDecoder, on_gpu, wanted
from .inference import Inferred, InferenceStage
from .postprocessor import DEFAULT_TOPK, Postprocessor
from .preprocessor import Preprocessor
from .results import ResultMaker
from ..limits import check_seconds, check_threads
from .stats import PipelineStats

DECODE_MODES = ("auto", "cpu", "gpu")
FILE_BATCH = 32  # the default batch when every source is image files: throughput, no one waits on a frame
LIVE_BATCH = 8  # the default with a camera, stream or video among the sources
FILE_KINDS = ("image files", "folder", "list file", "image")  # the source kinds that read image files


def default_workers() -> int:
    """Decode workers: the cores this process may use (its affinity). Each worker decodes a whole
    batch at a time, so there is no per-image hand-off to hide behind extra threads."""
    return available_cores()


def default_batch(backend: Backend, sources: Sequence[Source]) -> int:
    """The batch when none is given: :data:`FILE_BATCH` for image files alone (fewer, larger inference
    calls: each call and hand-off costs the same whatever its size), else :data:`LIVE_BATCH`; never
    more than a dynamic-size graph's pixel limit allows."""
    from ..backends.sizing import most_batch

    want = FILE_BATCH if sources and all(isinstance(s, FileSource) for s in sources) else LIVE_BATCH
    most = most_batch(backend)
    return want if most is None else max(1, min(want, most))


def planned_batch(specs: Sequence[Any], live: bool = False) -> int:
    """The batch :func:`default_batch` will give these sources, told from their specs before they are opened
    (paths, URLs, camera indices): what ``auto`` times the CPU engines at (cnn-infer without ``--batch``)."""
    from ...errors import CnnEdgeError
    from ..sources.table import Target, source_kind

    try:
        files = bool(specs) and all(isinstance(s, FileSource) or not isinstance(s, Source)
                                    and source_kind(Target(s, live)).name in FILE_KINDS for s in specs)
    except (CnnEdgeError, OSError):  # an unreadable source: the run says so, the guess does not matter
        files = False
    return FILE_BATCH if files else LIVE_BATCH


@dataclass
class Plan:
    """A run's options, checked: what the stages are built from."""

    batch: int | None
    max_wait_s: float
    workers: int
    max_frames: int | None
    duration: float | None
    keep_images: bool
    decode: str
    processes: bool | None
    decoder: Decoder | None


def run(backend: Backend, card: ModelCard, source: Any, batch: int | None = None, *, max_wait_ms: float = 10.0,
        workers: int | None = None, glob: str | None = None, max_frames: int | None = None,
        duration: float | None = None, keep_images: bool = False, topk: int | None = None,
        reduce_decode: bool = True, live: bool = False, open_timeout_ms: int | None = None,
        read_timeout_ms: int | None = None, give_up_s: float | None = None, stats: PipelineStats | None = None,
        decode: str = "auto", processes: bool | None = None,
        decoder: Decoder | None = None) -> Iterator[list[Result]]:
    """Classify everything ``source`` (one source spec or a list of them) delivers with ``backend``, the
    way ``card`` (the resolved one: :attr:`Classifier.card <cnnedge.runtime.Classifier.card>`) says; one
    list of Results per inference call. Options are checked and sources opened before this returns.

    ``batch``: images per inference call; None: :func:`default_batch`. ``topk``: each prediction's top-k
    length (None: 5). ``reduce_decode``: decode large JPEGs at 1/2..1/8 size when that covers the input.
    Unusable files come out as Results with an ``error``; the run stops at the end of all finite sources,
    after ``max_frames`` results or ``duration`` seconds, or when the caller stops iterating; a live stream
    that drops reconnects with back-off until then, or, with ``give_up_s``, ends once it has been down
    that long (``stats.given_up``). ``decode``: ``"cpu"`` (OpenCV),
    ``"gpu"`` (nvImageCodec + CV-CUDA, the ``gpu-decode`` extra and a GPU backend) or ``"auto"`` (GPU
    when both are there). ``processes``: decode in worker processes from the start (True), never
    (False), or once the run has lasted about a second with files left (None). ``decoder``: a
    :class:`~.decoders.Decoder` to use instead (a :class:`~.decoders.HostDecoder` runs on the pool's
    threads and processes; any other on a thread of its own).
    """
    if batch is not None and batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if not (isinstance(max_wait_ms, (int, float)) and math.isfinite(max_wait_ms) and max_wait_ms >= 0):
        raise UsageError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
    if decode not in DECODE_MODES:
        raise UsageError(f"decode {decode!r}: expected one of {', '.join(DECODE_MODES)}")
    check_threads(workers, "workers")  # each may be a process: --workers 10000 would start thousands
    check_seconds(duration, "duration")
    post = Postprocessor.from_card(card, DEFAULT_TOPK if topk is None else topk, backend.path)
    pre = Preprocessor.from_card(card, backend.input_spec.dtype, reduce_decode)
    plan = Plan(batch, max_wait_ms / 1000.0, workers or default_workers(), max_frames, duration, keep_images,
                decode, processes, decoder)
    on_device = decoder is None and gpu_decode_wanted(backend, card, decode, keep_images)
    if give_up_s is not None and give_up_s <= 0:
        raise UsageError(f"give_up_s must be positive, got {give_up_s}")
    opened = dict(glob=glob, live=live, open_timeout_ms=open_timeout_ms, read_timeout_ms=read_timeout_ms,
                  give_up_s=give_up_s)
    sources = open_sources(source, {k: v for k, v in opened.items() if v is not None or k in ("glob", "live")})
    stats = stats if stats is not None else PipelineStats()
    stats.sources = sources
    plan.batch = plan.batch if plan.batch is not None else default_batch(backend, sources)
    stats.batch_size = plan.batch
    totals = [s.total if isinstance(s, FileSource) else None for s in sources]
    stats.total = sum(t for t in totals if t is not None) if all(t is not None for t in totals) else None
    return _flow(backend, pre, post, sources, plan, stats, on_device)


def open_sources(source: Any, options: dict[str, Any]) -> list[Source]:
    """One source spec or a list of them (but a list of image files is one source), opened; on a
    failure the ones opened already are closed."""
    specs = list(source) if isinstance(source, (list, tuple)) and _all_specs(source) else [source]
    sources: list[Source] = []
    try:
        for spec in specs:
            sources.append(open_source(spec, **options))
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


def _all_specs(seq: Any) -> bool:
    """A list of sources (cameras, streams, folders, videos) rather than a list of image files."""
    return not all(isinstance(x, (str, os.PathLike)) and is_image_file(x) for x in seq)


def gpu_decode_wanted(backend: Backend, card: ModelCard, decode: str, keep_images: bool) -> bool:
    """Whether to decode on the GPU; ``gpu`` that cannot be honoured is a one-line UsageError."""
    if decode == "cpu":
        return False
    if keep_images:
        if decode == "gpu":
            raise UsageError("--decode gpu keeps no original images, which --save-dir, --save-video and --show "
                             "need; use --decode cpu with them")
        return False
    if decode == "auto" and not on_gpu(backend.name):
        return False
    return wanted(backend.name, card, decode)


def decode_stage(backend: Backend, pre: Preprocessor, sources: list[Source], plan: Plan, stats: PipelineStats,
                 on_device: bool, ready: "queue.Queue[Any]", stop: threading.Event) -> Any:
    """The decode stage for this run: the given decoder, the GPU's, or the CPU pool."""
    host = HostDecoder(pre, keep=plan.keep_images)
    decoder = plan.decoder
    if on_device:
        decoder = GpuDecoder(host, backend.device_id, plan.workers)
    if decoder is not None and not isinstance(decoder, HostDecoder):
        return OrderedStage(decoder, ready, stop, AHEAD)
    files_only = all(isinstance(s, FileSource) for s in sources)
    return DecodePool(decoder or host, plan.workers, plan.batch or 1, ready, processes=plan.processes,
                      stop=stop, total=stats.total if files_only else None)


def _flow(backend: Backend, pre: Preprocessor, post: Postprocessor, sources: list[Source], plan: Plan,
          stats: PipelineStats, on_device: bool) -> Iterator[list[Result]]:
    stop = threading.Event()
    ready: queue.Queue = queue.Queue()  # bounded by the decode stage's buffers
    done: queue.Queue = queue.Queue(maxsize=4)
    stage = decode_stage(backend, pre, sources, plan, stats, on_device, ready, stop)
    live = any(isinstance(s, LiveSource) for s in sources)  # their frames must not wait behind a decode
    pace = threading.Semaphore(1) if live else None  # nor in a queue of batches behind a slow model
    batcher = Batcher(sources, stage, plan.batch or 1, plan.max_wait_s, stop, pace)
    stats.started = time.perf_counter()
    deadline = None if plan.duration is None else stats.started + plan.duration
    infer = InferenceStage(backend, pre, ready, done, stop, deadline, None if live else stage.decode_one_here,
                           pace.release if pace is not None else None)
    maker = ResultMaker(post, stats)
    stage.start()
    batcher.start()
    infer.thread.start()
    try:
        yield from _results(infer, done, maker, plan.max_frames, stats)
    finally:
        stats.elapsed = time.perf_counter() - stats.started
        stats.stage_seconds.update(inference=infer.seconds, postprocess=maker.seconds)
        stop.set()
        for src in sources:
            src.close()
        _drain(done)  # unblock an inference stage waiting to hand over
        infer.thread.join(timeout=5)
        stage.close()
        batcher.join(timeout=5)


def _results(infer: InferenceStage, done: "queue.Queue[Any]", maker: ResultMaker, max_frames: int | None,
             stats: PipelineStats) -> Iterator[list[Result]]:
    """The caller's side: each inferred batch's Results, until the end, ``max_frames`` or an error."""
    emitted = 0
    while True:
        try:
            got = done.get(timeout=0.1)
        except queue.Empty:
            if not infer.thread.is_alive() and done.empty():
                return
            continue
        if got is None:
            return
        if isinstance(got, BaseException):
            raise got
        assert isinstance(got, Inferred)
        left = None if max_frames is None else max_frames - emitted
        rs = maker.results(got, left)
        last = left is not None and len(rs) >= left
        emitted += len(rs)
        stats.elapsed = time.perf_counter() - stats.started
        yield rs
        if last:
            return


def _drain(q: "queue.Queue[Any]") -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
