"""What the runtime hands back: a Prediction per image, a Result per item of a stream.

Kept apart from the Classifier so that sinks and the stream pipeline need only these
small dataclasses, not the Classifier and its backends.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One classified image: the top class, its score and the top-k list."""

    label: str
    score: float
    index: int
    topk: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"Prediction.index must be >= 0, got {self.index}")


@dataclass
class Result:
    """One item out of :meth:`Classifier.stream`: a prediction, or an error for an unusable input."""

    source: str
    timestamp: float
    frame: int | None = None
    path: str | None = None
    prediction: Prediction | None = None
    latency_ms: float | None = None
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # the original, when a sink needs it
    batch: int | None = None  # which inference call produced it (several sources share batches)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.path is not None:
            d["path"] = self.path
        if self.frame is not None:
            d["frame"] = self.frame
        d["timestamp"] = round(self.timestamp, 6)
        if self.error is not None:
            d["error"] = self.error
            return d
        p = self.prediction
        assert p is not None
        d.update(index=p.index, label=p.label, score=round(p.score, 6),
                 topk=[[lab, round(s, 6)] for lab, s in p.topk],
                 latency_ms=None if self.latency_ms is None else round(self.latency_ms, 3))
        return d
