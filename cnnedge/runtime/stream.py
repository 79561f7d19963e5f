"""The batched pipeline's public names where they have always been: :func:`iter_batches` and
:func:`run_pipeline` are thin wrappers over :func:`cnnedge.runtime.pipeline.run`, the one way in.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from ..card import ModelCard
from .backends.base import Backend
from .pipeline import (DECODE_MODES, FILE_BATCH, LIVE_BATCH, NONFINITE, PipelineStats, default_batch,
                       default_workers, run)
from .results import Prediction, Result

__all__ = ["BatchModel", "DECODE_MODES", "FILE_BATCH", "LIVE_BATCH", "NONFINITE", "PipelineStats",
           "default_batch", "default_workers", "iter_batches", "run_pipeline"]


class BatchModel(Protocol):
    """What the pipeline needs of a model: its card (the Preprocessor is built from it), its backend
    (the inference stage runs it), whether large JPEGs are decoded at reduced size, and the step from
    raw output to Predictions. :class:`~cnnedge.runtime.Classifier` implements it."""

    card: ModelCard
    backend: Backend
    reduce_decode: bool

    def postprocess(self, out: np.ndarray, topk: int | None = None) -> Sequence[Prediction]: ...


def iter_batches(clf: BatchModel, source: Any, batch: int | None = None, **options: Any) -> Iterator[list[Result]]:
    """One list of Results per inference call: :func:`cnnedge.runtime.pipeline.run` (its options)."""
    return run(clf, source, batch, **options)


def run_pipeline(clf: BatchModel, source: Any, batch: int | None = None, **options: Any) -> Iterator[Result]:
    """Classify everything ``source`` (one source spec or a list of them) delivers, one Result at a time.

    Unusable files come out as Results with an ``error``. Stops at the end of all finite sources, after
    ``max_frames`` results or ``duration`` seconds, or when the caller stops iterating. A live stream that
    drops reconnects with back-off until the run ends, or, with ``give_up_s``, ends once it has been down
    that long (``stats.given_up``). Options: :func:`cnnedge.runtime.pipeline.run`.
    """
    return _flatten(run(clf, source, batch, **options))


def _flatten(batches: Iterator[list[Result]]) -> Iterator[Result]:
    try:
        for rs in batches:
            yield from rs
    finally:
        batches.close()  # type: ignore[attr-defined]
