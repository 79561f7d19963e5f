"""Every artifact against the Keras model, on the same images, through the runtime's preprocessing.

Per artifact: max absolute difference of outputs, top-1 agreement with Keras,
accuracy where labels are known (and the drop from Keras), size on disk and
ONNX Runtime CPU latency at batch 1. Thresholds are per precision and can be
overridden; a miss names the artifact and what it missed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """Default thresholds: FP32 exact, FP16 close, INT8 within a point of accuracy."""

    fp32_agreement: float = 1.0
    fp32_max_diff: float = 1e-4
    fp16_agreement: float = 0.995
    int8_agreement: float = 0.98
    int8_accuracy_drop: float = 0.01  # as a fraction: 1.0 point

    def check(self, precision: str, max_diff: float | None, agreement: float | None,
              drop: float | None) -> list[str]:
        misses = []
        want_agree = {"fp32": self.fp32_agreement, "fp16": self.fp16_agreement, "int8": self.int8_agreement}[precision]
        if agreement is not None and agreement < want_agree:
            misses.append(f"top-1 agreement {agreement:.2%} < {want_agree:.2%}")
        if precision == "fp32" and max_diff is not None and max_diff > self.fp32_max_diff:
            misses.append(f"max abs diff {max_diff:.2e} > {self.fp32_max_diff:.0e}")
        if precision == "int8" and drop is not None and drop > self.int8_accuracy_drop:
            misses.append(f"accuracy drop {drop * 100:.2f} points > {self.int8_accuracy_drop * 100:.2f}")
        return misses


@dataclass
class ArtifactResult:
    path: str
    kind: str  # onnx | engine
    precision: str
    size_bytes: int
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None
    accuracy_drop: float | None = None
    latency_ms_b1: float | None = None
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    note: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top1(probs: np.ndarray) -> np.ndarray:
    return np.argmax(probs, axis=1)


def keras_outputs(model: Any, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Reference outputs: the Keras model called directly (not ``predict``) on float32 pixels."""
    from ..tfquiet import keras_warnings_off

    with keras_warnings_off():
        outs = [np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)


def latency_ms(sess: Any, x1: np.ndarray, runs: int = 50) -> float:
    """Median ONNX Runtime CPU latency at batch 1, after a warm-up."""
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x1})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x1})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def compare_onnx(path: Path, precision: str, x: np.ndarray, ref: np.ndarray, labels: np.ndarray | None,
                 thresholds: Thresholds) -> ArtifactResult:
    from . import onnx_io

    t0 = time.perf_counter()
    sess = onnx_io.session(path)
    out = onnx_io.run(sess, x)
    res = ArtifactResult(str(path), "onnx", precision, path.stat().st_size)
    _score(res, out, ref, labels)
    res.latency_ms_b1 = latency_ms(sess, x[:1])
    res.failures = thresholds.check(precision, res.max_abs_diff, res.top1_agreement, res.accuracy_drop)
    res.passed = not res.failures
    res.seconds = round(time.perf_counter() - t0, 3)
    return res


def _score(res: ArtifactResult, out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> None:
    """Fill the comparison columns of ``res``: the artifact's outputs against Keras's."""
    res.max_abs_diff = float(np.max(np.abs(out - ref)))
    res.top1_agreement = float(np.mean(top1(out) == top1(ref)))
    if labels is not None:
        res.keras_accuracy = float(np.mean(top1(ref) == labels))
        res.accuracy = float(np.mean(top1(out) == labels))
        res.accuracy_drop = res.keras_accuracy - res.accuracy


def table(results: list[ArtifactResult]) -> str:
    """The final table, one row per artifact."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.2f}%"

    rows = [("artifact", "prec", "max|diff|", "top1 agree", "accuracy", "keras acc", "size", "ms@b1", "check")]
    for r in results:
        verdict = {True: "ok", False: "FAIL", None: "n/a"}[r.passed]
        rows.append((Path(r.path).name, r.precision, "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}",
                     pct(r.top1_agreement), pct(r.accuracy), pct(r.keras_accuracy), _size(r.size_bytes),
                     "-" if r.latency_ms_b1 is None else f"{r.latency_ms_b1:.3f}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def compare_engine(path: Path, precision: str, x: np.ndarray, ref: np.ndarray, labels: np.ndarray | None,
                   thresholds: Thresholds) -> ArtifactResult:
    """Run an engine through the runtime's TensorRT backend where this machine can (a GPU it was built for,
    TensorRT of the same flavour and version, cuda-python); otherwise say why it was not run."""
    from ..errors import BackendUnavailable, CnnEdgeError, first_line

    res = ArtifactResult(str(path), "engine", precision, path.stat().st_size)
    t0 = time.perf_counter()
    try:
        from ..runtime.backends.trt import TrtBackend

        backend = TrtBackend(path)
    except (BackendUnavailable, CnnEdgeError, ImportError) as exc:
        res.note = f"not run here ({first_line(exc, 200)})"
        return res
    try:
        out = np.asarray(backend.infer(x), dtype=np.float32)
        _score(res, out, ref, labels)
        times = []
        for _ in range(50):
            t = time.perf_counter()
            backend.infer(x[:1])
            times.append(time.perf_counter() - t)
        res.latency_ms_b1 = float(np.median(times) * 1e3)
        res.note = "GPU latency through the runtime's TensorRT backend"
    finally:
        backend.close()
    res.failures = thresholds.check(precision, None, res.top1_agreement, res.accuracy_drop)
    res.passed = not res.failures
    res.seconds = round(time.perf_counter() - t0, 3)
    return res
