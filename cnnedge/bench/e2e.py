"""``--end-to-end DIR``: the whole pipeline on a folder, next to the decode+resize-only bound of the same run.

The pipeline is :func:`cnnedge.runtime.stream.run_pipeline` as cnn-infer runs
it, with one difference: files are decoded by threads in this process, never by
the worker processes cnn-infer starts on 4+ cores for long runs (nor on the GPU),
because the stage times come from a thin wrapper around the Classifier that times
the calls the pipeline makes (``decode``, ``prepare``, ``infer_pixels``,
``postprocess``), and a worker process would decode out of its sight; reading a file happens inside the pipeline's worker before
``decode``, so its time per image is taken from the bound pass over the same
files. Waiting for a batch is what is left of the per-image latency (file read
to result) after the other stages.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from ..errors import UsageError
from ..runtime.results import Prediction
from .report import EndToEnd

if TYPE_CHECKING:
    from ..runtime.classifier import Classifier
    from ..runtime.stream import BatchModel

T = TypeVar("T")


class TimedClassifier:
    """A :class:`~cnnedge.runtime.stream.BatchModel` that runs another one's steps and adds up
    the time of each call the pipeline makes (``decode_pixels`` as its two steps, each timed)."""

    def __init__(self, clf: "BatchModel") -> None:
        self._clf = clf
        self._lock = threading.Lock()
        self.total = {"decode": 0.0, "resize": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.count = {k: 0 for k in self.total}

    def _timed(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                self.total[key] += dt
                self.count[key] += 1

    def decode(self, data: bytes, path: Any = None) -> np.ndarray:
        return self._timed("decode", self._clf.decode, data, path)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return self._timed("resize", self._clf.prepare, image)

    def decode_pixels(self, data: bytes, path: Any = None) -> np.ndarray:
        return self.prepare(self.decode(data, path))

    def infer_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._timed("inference", self._clf.infer_pixels, pixels)

    def postprocess(self, out: np.ndarray, topk: int | None = None) -> Sequence[Prediction]:
        return self._timed("postprocess", self._clf.postprocess, out, topk)

    def mean_ms(self, key: str) -> float:
        return 1000.0 * self.total[key] / self.count[key] if self.count[key] else 0.0


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
    """Read + decode + resize alone over ``files`` on ``workers`` threads: (images/s, mean ms per stage)."""
    from ..imaging.errors import ImageError
    from ..imaging.files import read_file

    def one(path: str) -> tuple[float, float, float] | None:
        t0 = time.perf_counter()
        try:
            data = read_file(path)
            t1 = time.perf_counter()
            img = clf.decode(data, path)
            t2 = time.perf_counter()
            clf.prepare(img)
        except ImageError:
            return None
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        times = [t for t in pool.map(one, files) if t is not None]
    wall = time.perf_counter() - t_start
    if not times:
        raise UsageError("--end-to-end: none of the images could be decoded")
    a = np.asarray(times) * 1000.0
    return len(times) / wall, {"read": float(a[:, 0].mean()), "decode": float(a[:, 1].mean()),
                               "resize": float(a[:, 2].mean())}


def run_end_to_end(clf: "Classifier", artifact: str, files: list[str], folder: str, batch: int, workers: int,
                   bound_result: tuple[float, dict[str, float]]) -> EndToEnd:
    from ..runtime.stream import PipelineStats, run_pipeline

    side = clf.card.input
    warm = np.zeros((batch, side.height, side.width, side.channels), np.uint8)
    clf.infer_pixels(warm)  # the batch size's first call allocates; keep it out of the figures
    timed = TimedClassifier(clf)
    stats = PipelineStats()
    t0 = time.perf_counter()
    results = run_pipeline(timed, folder, batch=batch, workers=workers, stats=stats, decode="cpu", processes=False)
    try:
        for _ in results:
            pass
    finally:
        results.close()
    seconds = time.perf_counter() - t0
    if stats.done == 0:
        raise UsageError(f"--end-to-end {folder}: no image could be classified ({stats.failed} failed)")
    lat = np.asarray(stats.latencies_ms)
    p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
    bound_ips, bound_stages = bound_result
    per_image_batch = stats.done / max(stats.batches, 1)
    stages = {"read": bound_stages["read"], "decode": timed.mean_ms("decode"), "resize": timed.mean_ms("resize"),
              "inference": timed.mean_ms("inference"), "postprocess": timed.mean_ms("postprocess")}
    # latency per image = read + decode + resize + wait for the batch to fill and run + inference + postprocess
    stages["wait"] = max(0.0, float(lat.mean()) - stages["read"] - stages["decode"] - stages["resize"]
                         - stages["inference"] - stages["postprocess"])
    return EndToEnd(artifact=artifact, backend=clf.backend_name, batch=batch, workers=workers, images=stats.done,
                    failed=stats.failed, throughput=stats.throughput, bound_throughput=bound_ips,
                    latency_ms={"p50": p50, "p90": p90, "p99": p99, "max": float(lat.max()),
                                "mean": float(lat.mean()), "images_per_batch": per_image_batch},
                    stages_ms=stages, seconds=seconds)
