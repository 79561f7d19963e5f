"""INT8 calibration: the ranges of every float tensor, streamed in batches, and the key of their cache file.

ONNX Runtime's histogram calibrators (entropy, percentile) keep every intermediate output of every batch one
``collect_data`` call reads, so one ``quantize_static`` over all the images needs memory in proportion to their
number (measured: 2.6 GB with 42 images, 7.9 GB with 336 at 224x224). :func:`calibrate` calls ``collect_data``
once per batch of :data:`CALIBRATION_BATCH` images (the histograms accumulate across calls, min/max merge) and
the ranges are saved as the calibration cache, which ``quantize_static`` then reads instead of calibrating; peak
memory depends on the model and that batch, not on the number of images.

The cache file's name carries a key made of the FP32 graph, the preprocessed calibration pixels and the settings
(:func:`cache_name`), so a re-export with the same data does not recalibrate.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..artifact.names import CALIB_PREFIX as CACHE_PREFIX
from ..errors import ExportError, first_line

METHODS = ("entropy", "minmax", "percentile")
# images run at once in calibration (one collect_data call: what the histogram calibrators hold) and in measuring
# the candidate layers; a fixed-batch graph takes its own size. Part of the cache key: merged histograms depend on it
CALIBRATION_BATCH = 16

Batches = Callable[[], Iterable[np.ndarray]]


def fingerprint(pixels: np.ndarray) -> str:
    """sha256 of the preprocessed calibration pixels: the calibration cache key's data part."""
    return fingerprint_batches([pixels])


def fingerprint_batches(batches: Iterable[np.ndarray]) -> str:
    """:func:`fingerprint` of the concatenated ``batches``, hashed as they stream (never all in memory)."""
    h = hashlib.sha256()
    for b in batches:
        h.update(np.ascontiguousarray(b).tobytes())
    return h.hexdigest()


def cache_name(graph_sha256: str, data_sha256: str, method: str) -> str:
    """The cache file for this FP32 graph (hashed after :func:`.onnx_io.canonical_names`, which makes it
    reproducible), these preprocessed pixels and these settings."""
    import onnxruntime

    key = "|".join([graph_sha256, data_sha256, method, onnxruntime.__version__,
                    f"all-tensors-v4-batch{CALIBRATION_BATCH}"])
    return f"{CACHE_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def rebatch(batches: Iterable[np.ndarray], size: int, tail: bool = True) -> Iterator[np.ndarray]:
    """``batches`` (chunks of any size) as batches of ``size`` images, so what is computed from them does not
    depend on how the caller chunked; the short last batch is yielded when ``tail``, else dropped."""
    held: list[np.ndarray] = []
    count = 0
    for chunk in batches:
        while len(chunk):
            take = chunk[:size - count]
            held.append(take)
            count += len(take)
            chunk = chunk[len(take):]
            if count == size:
                yield held[0] if len(held) == 1 else np.concatenate(held)
                held, count = [], 0
    if held and tail:
        yield np.concatenate(held)


def ort_method(q: Any, method: str) -> Any:
    """ONNX Runtime's CalibrationMethod for ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise ExportError(f"calibration method {method!r}; expected one of {', '.join(METHODS)}")
    return {"entropy": q.CalibrationMethod.Entropy, "minmax": q.CalibrationMethod.MinMax,
            "percentile": q.CalibrationMethod.Percentile}[method]



class _OneBatch:
    """ONNX Runtime's CalibrationDataReader protocol over a single batch: one ``collect_data`` call each."""

    def __init__(self, input_name: str, batch: np.ndarray):
        self._feed: dict[str, Any] | None = {input_name: batch}

    def get_next(self) -> dict[str, Any] | None:
        feed, self._feed = self._feed, None
        return feed


def calibrate(model: Path, batches: Batches, method: str, work_dir: Path, batch: int | None = None) -> tuple[Any, int]:
    """Ranges of every float tensor of ``model`` (ONNX Runtime's ``TensorsData``) and the number of images used.

    One calibrator (``onnxruntime.quantization.create_calibrator``), fed by one ``collect_data`` call per batch
    of :data:`CALIBRATION_BATCH` images (or ``batch``, a fixed-batch graph's size: its short tail is dropped, as
    repeating images to fill it would weigh them twice), then ``compute_data``. ``create_calibrator`` (exported by
    ``onnxruntime.quantization``) and these two methods are ONNX Runtime's public calibration API; that
    ``collect_data`` may be called repeatedly, histograms accumulating, is stated in its docstring.
    """
    from .._lazy import require

    q = require("onnxruntime.quantization", "INT8 export")
    import onnx

    from . import onnx_io

    input_name = onnx_io.io_names(onnx.load(str(model), load_external_data=False))[0]
    calib_method = ort_method(q, method)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress
            calibrator = q.create_calibrator(Path(model), None, calibrate_method=calib_method,
                                             augmented_model_path=str(work_dir / "augmented.onnx"))
            def collect() -> int:
                seen = 0
                for b in rebatch(batches(), batch or CALIBRATION_BATCH, tail=batch is None):
                    calibrator.collect_data(_OneBatch(input_name, b))
                    seen += len(b)
                return seen

            n = collect()
            if n and method == "entropy":  # again, over each tensor's range on all the images
                empty_histograms(calibrator.collector.get_histogram_dict(), calibrator.collector.num_bins)
                collect()
            tensors = calibrator.compute_data() if n else None
    except Exception as exc:
        raise ExportError(f"INT8 calibration failed: {first_line(exc)}") from None
    if tensors is None:
        raise ExportError(f"no calibration images{f' (the model takes batches of {batch})' if batch else ''}")
    return tensors, n


def empty_histograms(histograms: dict[str, Any], bins: int) -> None:
    """Empty the entropy calibrator's histograms, each over its tensor's range on all the images seen.

    ONNX Runtime builds a histogram's bins from the first ``collect_data`` call and widens them, keeping their
    width, when a later call goes beyond; fed in chunks, the bins differ from one call over all the images and
    so do the ranges chosen (PaddleOCR's text-direction model: 114 instead of 117 of 120 lines agreeing). A
    second pass into these emptied histograms, whose range no chunk exceeds, adds up to the one-call histograms
    exactly. The collector's ``(hist, edges, min, max, threshold)`` entries are ONNX Runtime's (its
    ``HistogramCollector.get_histogram_dict``)."""
    for name, (_, _, lo, hi, _) in list(histograms.items()):
        dtype = np.asarray(hi).dtype
        t = np.array(max(abs(lo), abs(hi)), dtype=dtype)
        hist, edges = np.histogram(np.empty(0, dtype), bins, range=(-t, t))
        histograms[name] = (hist, edges, lo, hi, t)
