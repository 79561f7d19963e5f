"""The results stage: a batch's raw output -> its Results, built in the caller's thread in one
vectorised post-processing call, so that sinks take a batch at a time."""
from __future__ import annotations

import math
import time
from ..results import Result
from .inference import Inferred
from .postprocessor import Postprocessor
from .stats import PipelineStats

NONFINITE = ("the model gave a non-finite score (NaN or inf) for this image: its input or its preprocessing "
             "(--scale, --mean, --std) overflows; not a prediction")


class ResultMaker:
    """Turns :class:`~.inference.Inferred` batches into lists of Results and counts them in ``stats``.
    ``postprocess``: raw output -> Predictions (the card's classes, its top-k length). A NaN or infinite
    score is a failed row saying so, never a prediction. Times itself (``seconds``)."""

    def __init__(self, postprocess: Postprocessor, stats: PipelineStats) -> None:
        self.postprocess, self.stats = postprocess, stats
        self.seconds = 0.0

    def results(self, done: Inferred, limit: int | None = None) -> list[Result]:
        """The batch's Results, the first ``limit`` of them only (``max_frames``): the rest are neither
        returned nor counted, so the summary says what the sinks got."""
        t0 = time.perf_counter()
        batch, stats = done.batch, self.stats
        preds = iter(self.postprocess(done.output) if done.output is not None else [])
        images = batch.images
        out: list[Result] = []
        for i, f in enumerate(batch.items[:limit]):
            error = batch.errors.get(i)
            if error is not None:
                stats.count_unusable(f)
                out.append(Result(f.source, f.timestamp, f.frame, f.path, error=error))
                continue
            pred = next(preds)
            if not math.isfinite(pred.score):
                stats.failed += 1
                out.append(Result(f.source, f.timestamp, f.frame, f.path, error=NONFINITE))
                continue
            start = batch.started if batch.started is not None and f.path is not None else f.t0
            lat = (done.ended - start) * 1000.0
            stats.done += 1
            stats.latencies_ms.append(lat)
            out.append(Result(f.source, f.timestamp, f.frame, f.path, pred, lat,
                              image=images[i] if images is not None else None, batch=done.call))
        if done.output is not None:
            stats.batches += 1
        self.seconds += time.perf_counter() - t0
        return out


