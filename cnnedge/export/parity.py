"""Every artifact against the source model, on the same decoded images, each fed the way it expects them.

The artifact is opened as a user opens it (:func:`cnnedge.runtime.backends.load_backend` through the
:class:`~cnnedge.runtime.classifier.Classifier`, whose colour/resize/normalisation come from the card the
artifact carries); the source model is fed as cnn-train fed it (or, for a model from elsewhere, with the
preprocessing the user declared). A card that disagrees with the export shows up as a miss; with labels,
:func:`check_card` also catches a card that disagrees with the model itself.

Per artifact: max absolute difference of outputs, top-1 agreement with the source model,
accuracy where labels are known (and the drop from Keras), size on disk and
latency at batch 1 through the runtime (ONNX Runtime CPU). Thresholds are per precision and can be
overridden; a miss names the artifact and what it missed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..card import ModelCard

CARD_MARGIN = 0.15  # accuracy gain (fraction) that convicts the card of a wrong colour order or normalisation


@dataclass(frozen=True)
class Thresholds:
    """FP32 exact, FP16 close, INT8 within a point of accuracy."""

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
    keras_accuracy: float | None = None  # the source model's (Keras or the input ONNX), name kept for the report
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


@dataclass
class CardCheck:
    """With labels: is the source model more accurate fed otherwise than its card says? Then the card is wrong."""

    accuracy: float
    alternatives: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def check_card(predict: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], labels: np.ndarray,
               card: ModelCard, accuracy: float, margin: float = CARD_MARGIN) -> CardCheck:
    """Feed the source model the other colour order and the other normalisation place; a clear accuracy gain
    (``margin``, a fraction, to at least 50%) names the card field that disagrees with the model."""
    pre = card.preprocess
    tries: dict[str, tuple[dict[str, Any], str]] = {}
    if card.input.channels == 3:
        other = "BGR" if card.input.color == "RGB" else "RGB"
        tries[f"input.color {other}"] = ({"color": other}, f"the card says input.color {card.input.color}, but the "
                                                          f"model is {{gain}} points more accurate fed {other}")
    if pre.in_graph:
        tries["normalised on the host"] = ({"in_graph": False}, "the card says the model normalises its own input "
                                           "(preprocess.in_graph true), but it is {gain} points more accurate with "
                                           f"scale {pre.scale:g}, mean {list(pre.mean)}, std {list(pre.std)} "
                                           "applied before it")
    elif (pre.scale, pre.mean, pre.std) != (1.0, (0.0,), (1.0,)):
        tries["raw pixels"] = ({"in_graph": True}, "the card says the model takes normalised input "
                               "(preprocess.in_graph false), but it is {gain} points more accurate fed raw pixels "
                               "0..255")
    from .sources import source_inputs

    res = CardCheck(accuracy, {})
    for name, (override, message) in tries.items():
        acc = float(np.mean(top1(predict(source_inputs(images, card, **override))) == labels))
        res.alternatives[name] = acc
        if acc - accuracy >= margin and acc >= 0.5:  # and the model works fed that way: no verdict on chance
            res.failures.append(message.format(gain=f"{(acc - accuracy) * 100:.0f}") +
                                f" ({acc:.0%} against {accuracy:.0%} on {len(labels)} labelled images)")
    return res


def _outputs(clf: Any, images: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
    """What the runtime computes for decoded images: the Classifier's colour/resize, then its normalise/feed."""
    outs = []
    for i in range(0, len(images), batch):
        pixels = np.stack([clf.prepare(im) for im in images[i:i + batch]])
        outs.append(np.asarray(clf.infer_pixels(pixels), dtype=np.float32).reshape(len(pixels), -1))
    return np.concatenate(outs)


def _latency_ms(clf: Any, image: np.ndarray, runs: int = 50) -> float:
    """Median latency of one prepared image through the runtime, after a warm-up."""
    pixels = clf.prepare(image)[None]
    for _ in range(5):
        clf.infer_pixels(pixels)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        clf.infer_pixels(pixels)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def compare_onnx(path: Path, precision: str, images: Sequence[np.ndarray], ref: np.ndarray,
                 labels: np.ndarray | None, thresholds: Thresholds) -> ArtifactResult:
    """Open the artifact as a user will (the runtime's backend loader, the Classifier's preprocessing from the
    card it carries) and score it against the source model's outputs ``ref`` on the same decoded images."""
    from ..runtime.classifier import Classifier

    t0 = time.perf_counter()
    res = ArtifactResult(str(path), "onnx", precision, path.stat().st_size)
    with Classifier(path, backend="ort-cpu", threads=1) as clf:
        _score(res, _outputs(clf, images), ref, labels)
        res.latency_ms_b1 = _latency_ms(clf, images[0])
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

    rows = [("artifact", "prec", "max|diff|", "top1 agree", "accuracy", "source acc", "size", "ms@b1", "check")]
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


def compare_engine(path: Path, precision: str, images: Sequence[np.ndarray], ref: np.ndarray,
                   labels: np.ndarray | None, thresholds: Thresholds) -> ArtifactResult:
    """Run an engine through the runtime (TensorRT backend, Classifier preprocessing) where this machine can (a
    GPU it was built for, TensorRT of the same flavour and version, cuda-python); otherwise say why it was not."""
    from ..errors import CnnEdgeError, first_line
    from ..runtime.classifier import Classifier

    res = ArtifactResult(str(path), "engine", precision, path.stat().st_size)
    t0 = time.perf_counter()
    try:
        clf = Classifier(path, backend="trt")
    except (CnnEdgeError, ImportError) as exc:
        res.note = f"not run here ({first_line(exc, 200)})"
        return res
    with clf:
        _score(res, _outputs(clf, images), ref, labels)
        res.latency_ms_b1 = _latency_ms(clf, images[0])
        res.note = "GPU latency through the runtime's TensorRT backend"
    res.failures = thresholds.check(precision, None, res.top1_agreement, res.accuracy_drop)
    res.passed = not res.failures
    res.seconds = round(time.perf_counter() - t0, 3)
    return res
