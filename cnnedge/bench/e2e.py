"""``--end-to-end DIR``: the whole pipeline on a folder, next to the decode bound of the same files.

The pipeline is :func:`cnnedge.runtime.pipeline.run`, the stages cnn-infer runs (batcher, the CPU
decode pool, inference, results), with one difference: files are decoded by threads in this process,
never by the worker processes cnn-infer starts on 4+ cores for long runs (nor on the GPU), because
the decoder given to the pool (:class:`TimedDecoder`, cnn-infer's own with a clock around its two
steps) adds up its time where a worker process would be out of sight. A file is read, then decoded
and resized in one call, as cnn-infer does it: ``decode`` holds both, ``resize`` is 0. Inference and
post-processing are timed by their stages. Waiting for a batch is what is left of the per-image
latency (decode start to result) after the other stages.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..runtime.pipeline import HostDecoder, Preprocessor
from .report import EndToEnd

if TYPE_CHECKING:
    from ..runtime.classifier import Classifier


class TimedDecoder(HostDecoder):
    """cnn-infer's decoder (read, then decode and resize in one call) adding up the time of each step."""

    def __init__(self, preprocessor: Preprocessor) -> None:
        super().__init__(preprocessor)
        self.lock = threading.Lock()
        self.total = {"read": 0.0, "decode": 0.0}
        self.count = 0

    def decode_row(self, item: Any) -> Any:
        if item.path is None:
            return super().decode_row(item)
        from ..imaging.files import read_file

        t0 = time.perf_counter()
        data = read_file(item.path)
        t1 = time.perf_counter()
        pixels = self.preprocessor.decode_pixels(data, item.path)
        t2 = time.perf_counter()
        with self.lock:
            self.total["read"] += t1 - t0
            self.total["decode"] += t2 - t1
            self.count += 1
        return pixels

    def mean_ms(self, key: str) -> float:
        return 1000.0 * self.total[key] / self.count if self.count else 0.0


def preprocessor_of(clf: "Classifier") -> Preprocessor:
    return Preprocessor.from_card(clf.card, clf.backend.input_spec.dtype, clf.reduce_decode)


def list_images(folder: str | Path) -> list[str]:
    from ..runtime.sources import FileSource, open_source

    p = Path(folder)
    if not p.is_dir():
        raise UsageError(f"--end-to-end {p}: not a folder of images")
    src = open_source(str(p))
    try:
        if not isinstance(src, FileSource) or not src.paths:
            raise UsageError(f"--end-to-end {p}: no image files in this folder")
        return list(src.paths)
    finally:
        src.close()


def bound(clf: "Classifier", files: list[str], workers: int) -> tuple[float, dict[str, float]]:
    """Read + decode + resize alone (the pipeline's decoder, one call per file) over ``files`` on
    ``workers`` threads: (images/s, mean ms per stage)."""
    from ..imaging.errors import ImageError
    from ..runtime.sources import Frame

    timed = TimedDecoder(preprocessor_of(clf))

    def one(path: str) -> bool:
        try:
            timed.decode_row(Frame("bound", 0.0, 0.0, path=path))
        except ImageError:
            return False
        return True

    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        n = sum(pool.map(one, files))
    wall = time.perf_counter() - t_start
    if not n:
        raise UsageError("--end-to-end: none of the images could be decoded")
    return n / wall, {"read": timed.mean_ms("read"), "decode": timed.mean_ms("decode"), "resize": 0.0}


def run_end_to_end(clf: "Classifier", artifact: str, files: list[str], folder: str, batch: int, workers: int,
                   bound_result: tuple[float, dict[str, float]]) -> EndToEnd:
    from ..runtime.pipeline import PipelineStats, run

    side = clf.card.input
    warm = np.zeros((batch, side.height, side.width, side.channels), np.uint8)
    clf.infer_pixels(warm)  # the batch size's first call allocates; keep it out of the figures
    timed = TimedDecoder(preprocessor_of(clf))
    stats = PipelineStats()
    t0 = time.perf_counter()
    results = run(clf.backend, clf.card, folder, batch, workers=workers, stats=stats, decode="cpu", processes=False,
                  decoder=timed, topk=clf.topk, reduce_decode=clf.reduce_decode)
    try:
        for _ in results:
            pass
    finally:
        results.close()  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    if stats.done == 0:
        raise UsageError(f"--end-to-end {folder}: no image could be classified ({stats.failed} failed)")
    lat = np.asarray(stats.latencies_ms)
    p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
    calls = max(stats.batches, 1)
    stages = {"read": timed.mean_ms("read"), "decode": timed.mean_ms("decode"), "resize": 0.0,
              "inference": 1000.0 * stats.stage_seconds.get("inference", 0.0) / calls,
              "postprocess": 1000.0 * stats.stage_seconds.get("postprocess", 0.0) / calls}
    # latency per image = read + decode and resize + wait for the batch to fill and run + inference + postprocess
    stages["wait"] = max(0.0, float(lat.mean()) - sum(stages.values()))
    return EndToEnd(artifact=artifact, backend=clf.backend_name, batch=batch, workers=workers, images=stats.done,
                    failed=stats.failed, throughput=stats.throughput, bound_throughput=bound_result[0],
                    latency_ms={"p50": p50, "p90": p90, "p99": p99, "max": float(lat.max()),
                                "mean": float(lat.mean()), "images_per_batch": stats.done / calls},
                    stages_ms=stages, seconds=seconds)

