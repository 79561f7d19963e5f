"""What a run counts while it goes: done, failed, skipped, batches, latencies, the sources' drops and reconnects."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..sources import Frame, Source


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
    stage_seconds: dict[str, float] = field(default_factory=dict)  # inference, postprocess: time in each, all batches

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
