"""Latency statistics: percentiles over every sample (no outlier clipping) and the spread between runs."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

QUANTILES = (50, 90, 99)
MAX_SAMPLES_KEPT = 20_000  # raw samples go into the JSON up to this many per row


@dataclass(frozen=True)
class Latency:
    """Per-call latency in milliseconds over every timed call: the tail is kept, never clipped."""

    p50: float
    p90: float
    p99: float
    max: float
    min: float
    mean: float
    std: float
    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("Latency needs at least one sample")
        if not (0 <= self.min <= self.p50 <= self.p90 <= self.p99 <= self.max):
            raise ValueError(f"inconsistent percentiles: {self}")

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def latency(samples_ms: Sequence[float] | np.ndarray) -> Latency:
    """Percentiles (linear interpolation), max, min, mean and standard deviation of ``samples_ms``."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = (float(v) for v in np.percentile(a, QUANTILES))
    lo, hi = float(a.min()), float(a.max())
    # interpolation can leave a percentile a rounding error outside [min, max]
    p50, p90, p99 = (min(max(v, lo), hi) for v in (p50, p90, p99))
    p90, p99 = max(p90, p50), max(p99, p90)
    return Latency(p50, p90, p99, hi, lo, float(a.mean()), float(a.std()), int(a.size))


def spread(run_medians: Sequence[float]) -> float | None:
    """(slowest - fastest) / median of the per-run medians; None for a single run."""
    if len(run_medians) < 2:
        return None
    m = float(np.median(run_medians))
    return (max(run_medians) - min(run_medians)) / m if m > 0 else None
