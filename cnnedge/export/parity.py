"""Every artifact against the source model, on the same decoded images, each fed the way it expects them.

The artifact is opened as a user opens it (:func:`cnnedge.runtime.backends.load_backend` through the
:class:`~cnnedge.runtime.classifier.Classifier`, whose colour/resize/normalisation come from the card the
artifact carries); the source model is fed as cnn-train fed it (or, for a model from elsewhere, with the
preprocessing the user declared). A card that disagrees with the export shows up as a miss; with labels,
:func:`check_card` also catches a card that disagrees with the model itself.

Per artifact: max absolute difference of outputs, top-1 agreement with the source model,
accuracy where labels are known (and the drop from Keras), each with its image counts, size on disk and
latency at batch 1 through the runtime (the engine that ran it: ONNX Runtime CPU or OpenVINO, see
:mod:`.parity_engines`). Thresholds are per precision and can be
overridden. Verdicts are decided on evidence (:mod:`.gate`): a miss is failed only when the images show it, a
threshold the images are too few to show met passes "undecided" with a warning, and NaN or infinite outputs
always fail. A miss names the artifact and what it missed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..artifact.card import ModelCard
from .compare import outputs, side_by_side, slices, top1
from .data import batch_for
from .gate import FAIL, PASS, UNDECIDED, agreement_decision, drop_decision, mcnemar_exact

# what a loss beyond a threshold that the images cannot show says: the user's images measured it
MEASURED_LOSS_HELP = ("To decide, give more --verify images; to recover it, calibrate on images like these (--calib) "
                      "or keep the layers that lose most float (--int8-float; the report's calibration.fallback)")
CARD_ALPHA = 0.001  # the card is convicted on a one-sided exact McNemar test at this level, on the images at hand
CARD_MARGIN = 0.05  # and only for a gain of at least this (a fraction): a real but negligible difference is no lie
BATCH = 64  # images per call to a model: memory stays flat whatever the number of images


@dataclass(frozen=True)
class Thresholds:
    """FP32 exact, FP16 close, INT8 within a point of accuracy. Agreement and accuracy drop are judged by exact
    one-sided tests at the 5% level on the images checked (see :mod:`.gate`); FP32's max abs diff is a plain
    bound, not a sampling question."""

    fp32_agreement: float = 1.0
    fp32_max_diff: float = 1e-4
    fp16_agreement: float = 0.995
    int8_agreement: float = 0.98
    int8_accuracy_drop: float = 0.01  # as a fraction: 1.0 point

    def agreement(self, precision: str) -> float:
        return {"fp32": self.fp32_agreement, "fp16": self.fp16_agreement, "int8": self.int8_agreement}[precision]


@dataclass
class ArtifactResult:
    """One artifact against its source. ``verdict``: pass, fail (the images show a threshold missed), undecided
    (too few images to show a threshold met: it passes, with ``warnings`` saying so) or not run; ``passed`` is
    False only for fail, None when not run. Every rate comes with its counts over ``n`` images."""

    path: str
    kind: str  # onnx | engine
    precision: str
    size_bytes: int
    max_abs_diff: float | None = None  # over the images where both outputs are finite
    top1_agreement: float | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None  # the source model's (Keras or the input ONNX), name kept for the report
    accuracy_drop: float | None = None
    latency_ms_b1: float | None = None
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    note: str | None = None
    seconds: float | None = None
    n: int | None = None  # images compared
    agree: int | None = None  # images whose top-1 class matches the source's
    correct: int | None = None  # labelled images the artifact gets right
    source_correct: int | None = None
    losses: int | None = None  # images the source gets right and the artifact wrong
    gains: int | None = None  # the reverse
    nonfinite: int | None = None  # images with a NaN or infinite output from the artifact
    source_nonfinite: int | None = None  # from the source model
    agreement_bounds: tuple[float, float] | None = None  # one-sided 95% Clopper-Pearson bounds
    drop_bounds: tuple[float, float] | None = None  # one-sided 95% bounds on the accuracy drop (see gate)
    verdict: str = "not run"
    warnings: list[str] = field(default_factory=list)
    cpu: str | None = None  # the CPU's integer kernels it ran on (ONNX files): "AVX-512 VNNI", "AVX2 ... (emulated)"
    engine: str | None = None  # the backend that ran it: "ort-cpu", "openvino", "trt" (None: not run)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """The artifact's name as the table, warnings and failures show it: ``@ emulated AVX2`` for the CPU INT8
        file's run on the emulated CPU (:func:`compare_emulated`), ``@ openvino`` for a run on another CPU engine
        than ONNX Runtime's."""
        where = " @ emulated AVX2" if self.cpu and "emulated" in self.cpu else \
            f" @ {self.engine}" if self.engine not in (None, "ort-cpu", "trt") else ""
        return Path(self.path).name + where


@dataclass
class AlternativeTest:
    """The source model fed one other way against its card's way, image by image: ``b`` labelled images only the
    alternative gets right, ``c`` only the card's way; ``p_value``: one-sided exact McNemar test that the
    alternative is the more accurate (P(X >= b), X ~ Binomial(b + c, 1/2))."""

    accuracy: float
    b: int
    c: int
    p_value: float


@dataclass
class CardCheck:
    """With labels: is the source model more accurate fed otherwise than its card says? Then the card is wrong.
    ``accuracy``/``alternatives``: fed as the card says and each other way, on ``n`` labelled images;
    ``tests``: the paired evidence per alternative."""

    accuracy: float
    alternatives: dict[str, float]
    failures: list[str] = field(default_factory=list)
    n: int = 0
    tests: dict[str, AlternativeTest] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


def _fed(predict: Callable[[np.ndarray], np.ndarray], card: ModelCard, **override: Any) -> Callable[[Any], Any]:
    """The source model as a model of decoded images, fed as ``card`` (with ``override``) says."""
    from .sources import source_inputs

    return lambda images: predict(source_inputs(images, card, **override))


def check_card(predict: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], labels: np.ndarray,
               card: ModelCard, accuracy: float, margin: float = CARD_MARGIN, *, ref: np.ndarray | None = None,
               alpha: float = CARD_ALPHA, batch: int = BATCH) -> CardCheck:
    """Feed the source model the other colour order, the other normalisation place and, where the host normalises,
    the common other normalisation values (scale, mean, std); convict the card field
    only when the images show the alternative is better: a one-sided exact McNemar test on the images where
    exactly one of the two feedings is right, p < ``alpha``, and a gain of at least ``margin``. A handful of
    images never convicts (6 right against 4 is p = 0.38). ``ref``: the source's outputs fed as the card says,
    when the caller has them (else they are computed here); ``accuracy`` is recomputed from them. ``images`` is
    only sliced, ``batch`` at a time."""
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
    runs = [_fed(predict, card, **override) for override, _ in tries.values()]
    if not pre.in_graph:  # the host applies the card's values: are they the model's? (scale, mean, std)
        for name, values, message in _value_alternatives(card):
            tries[name] = ({}, message)
            runs.append(_fed(predict, card.replace(preprocess=values)))
    labels = np.asarray(labels)
    n = len(labels)
    classes = side_by_side(runs if ref is not None else [_fed(predict, card), *runs], slices(images, batch), top1)
    card_right = (top1(ref) if ref is not None else classes.pop(0)) == labels
    res = CardCheck(float(card_right.mean()) if n else accuracy, {}, n=n)
    for (name, (_, message)), alt in zip(tries.items(), classes):
        alt_right = alt == labels
        b, c = int(np.sum(alt_right & ~card_right)), int(np.sum(card_right & ~alt_right))
        test = AlternativeTest(float(alt_right.mean()) if n else 0.0, b, c, mcnemar_exact(b, c))
        res.alternatives[name], res.tests[name] = test.accuracy, test
        if test.p_value < alpha and n and (b - c) / n >= margin:
            res.failures.append(message.format(gain=f"{(b - c) / n * 100:.0f}") +
                                f" ({test.accuracy:.0%} against {res.accuracy:.0%} on {n} labelled images: {b} "
                                f"right only fed so, {c} only as the card says; one-sided exact McNemar "
                                f"p = {test.p_value:.1e} < {alpha:g})")
    return res


def _value_alternatives(card: ModelCard) -> list[tuple[str, dict[str, Any], str]]:
    """The common normalisations (:func:`cnnedge.imaging.conventions.conventions`: 0..1, -1..1, ImageNet, caffe, raw), in the card's
    colour order, whose values differ from the card's: each a name, the preprocess values and the message that
    convicts the card's values."""
    from ..imaging.conventions import conventions

    pre = card.preprocess
    rgb = card.input.color != "BGR"
    out = []
    for c in conventions(card.input.channels):
        same = len(c.mean) == len(pre.mean) and len(c.std) == len(pre.std) and \
            np.allclose([c.scale, *c.mean, *c.std], [pre.scale, *pre.mean, *pre.std])
        if c.rgb != rgb or same:
            continue
        values = {"scale": c.scale, "mean": c.mean, "std": c.std}
        out.append((f"values {c.name}", values,
                    f"the card says scale {pre.scale:g}, mean {list(pre.mean)}, std {list(pre.std)}, but the model "
                    f"is {{gain}} points more accurate with the {c.name} values ({c.flags(('scale', 'mean', 'std'))})"))
    return out


def _outputs(clf: Any, images: Sequence[np.ndarray], batch: int = BATCH) -> np.ndarray:
    """What the runtime computes for decoded images: the Classifier's colour/resize, then its normalise/feed."""
    return outputs(lambda imgs: clf.infer_pixels(np.stack([clf.prepare(im) for im in imgs])), slices(images, batch))


def _latency_ms(clf: Any, image: np.ndarray, runs: int = 50) -> float:
    """Median latency of one prepared image through the runtime, timed as cnn-bench times a call
    (:func:`cnnedge.bench.measure.time_calls`: a warm-up, then every call on its own)."""
    from ..bench.measure import time_calls
    from ..bench.stats import latency

    pixels = clf.prepare(image)[None]

    def call() -> None:
        clf.infer_pixels(pixels)

    return latency(time_calls(call, warmup=5, iters=runs, duration=None, repeats=1).samples_ms).p50


def compare_onnx(path: Path, precision: str, images: Sequence[np.ndarray], ref: np.ndarray,
                 labels: np.ndarray | None, thresholds: Thresholds, engine: str = "ort-cpu") -> ArtifactResult:
    """Open the artifact as a user will (the runtime's backend loader with ``engine``, the Classifier's
    preprocessing from the card it carries) and score it against the source model's outputs ``ref`` on the same
    decoded images. An engine other than ONNX Runtime's CPU provider that cannot open or run the file fails the
    row, with its reason; ONNX Runtime's failure is the export's."""
    from ..errors import CnnEdgeError, first_line
    from ..runtime.classifier import Classifier
    from ..runtime.cpu_kernels import int8_kernels

    t0 = time.perf_counter()
    res = ArtifactResult(str(path), "onnx", precision, path.stat().st_size, engine=engine,
                         cpu=int8_kernels().name if engine == "ort-cpu" else None)
    try:
        with Classifier(path, backend=engine, threads=1) as clf:
            _score(res, _outputs(clf, images, batch_for(clf.card.input)), ref, labels)
            res.latency_ms_b1 = _latency_ms(clf, images[0:1][0])
    except CnnEdgeError as exc:
        if engine == "ort-cpu":
            raise
        res.failures, res.verdict, res.passed = [f"{engine} cannot run it: {first_line(exc)}"], FAIL, False
        res.seconds = round(time.perf_counter() - t0, 3)
        return res
    judge(res, thresholds)
    res.seconds = round(time.perf_counter() - t0, 3)
    return res


def compare_emulated(path: Path, precision: str, images: Sequence[np.ndarray], ref: np.ndarray,
                     labels: np.ndarray | None, thresholds: Thresholds, exe: str, limit: int) -> ArtifactResult:
    """:func:`compare_onnx` on an emulated x86 CPU without VNNI (:mod:`.emulated`) for the first ``limit``
    images: the same pixels, prepared here by the Classifier, run there by it, judged by the same gate; its note
    compares the outputs with this CPU's run of the same file on the same pixels."""
    from ..runtime.classifier import Classifier
    from . import emulated

    t0 = time.perf_counter()
    keep = min(len(images), limit)
    with Classifier(path, backend="ort-cpu", threads=1) as clf:
        pixels = [clf.prepare(im) for im in images[:keep]]
        batch = batch_for(clf.card.input)
        native = outputs(lambda px: clf.infer_pixels(np.stack(px)), slices(pixels, batch))
    out, said = emulated.run(path, pixels, exe, batch)
    if said["kernels"]["exact"]:
        from ..errors import ExportError

        raise ExportError(f"{emulated.EMULATOR} -cpu {emulated.CPU_MODEL} ran {path.name} on "
                          f"{said['kernels']['name']} kernels: the emulation did not take effect")
    res = ArtifactResult(str(path), "onnx", precision, path.stat().st_size, engine="ort-cpu",
                         cpu=f"{said['kernels']['name']} (emulated: {emulated.EMULATOR} -cpu {emulated.CPU_MODEL})")
    _score(res, out, ref[:keep], None if labels is None else labels[:keep])
    judge(res, thresholds)
    differs = int(np.sum(top1(out) != top1(native)))
    res.note = (f"against this CPU's run of the same file on the same {keep} of {len(images)} images: max abs diff "
                f"{float(np.max(np.abs(out - native))) if keep else 0.0:.2e}, top-1 differs on {differs}")
    res.seconds = round(time.perf_counter() - t0, 3)
    return res


def _score(res: ArtifactResult, out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> None:
    """Fill the comparison columns of ``res``: the artifact's outputs against the source's, with their counts. A
    NaN or infinite output row is no prediction: it neither agrees nor is right."""
    ok_out, ok_ref = np.isfinite(out).all(axis=1), np.isfinite(ref).all(axis=1)
    both = ok_out & ok_ref
    res.n = n = len(out)
    res.nonfinite, res.source_nonfinite = int(n - ok_out.sum()), int(n - ok_ref.sum())
    res.max_abs_diff = float(np.max(np.abs(out[both] - ref[both]))) if both.any() else None
    agree = both & (top1(out) == top1(ref))
    res.agree = int(agree.sum())
    res.top1_agreement = res.agree / n
    if labels is not None:
        src_right = ok_ref & (top1(ref) == labels)
        art_right = ok_out & (top1(out) == labels)
        res.source_correct, res.correct = int(src_right.sum()), int(art_right.sum())
        res.losses, res.gains = int(np.sum(src_right & ~art_right)), int(np.sum(art_right & ~src_right))
        res.keras_accuracy, res.accuracy = res.source_correct / n, res.correct / n
        res.accuracy_drop = res.keras_accuracy - res.accuracy


def judge(res: ArtifactResult, thresholds: Thresholds, max_diff: bool = True) -> None:
    """The verdict on a scored artifact: fail when an output is NaN or infinite, when FP32's max abs diff
    (``max_diff``: where it was measured against the same inputs) exceeds its bound, or when the images show the
    agreement below / the accuracy drop above its threshold; undecided (a pass, with a warning) when they are
    too few to show a threshold met."""
    n, fails, warns = res.n or 0, [], []
    if res.source_nonfinite:
        fails.append(f"the source model's outputs are NaN or infinite on {res.source_nonfinite} of {n} images: "
                     "there is no reference for them (check the preprocessing, e.g. a tiny std)")
    if res.nonfinite:
        fails.append(f"outputs NaN or infinite on {res.nonfinite} of {n} images")
    want = thresholds.agreement(res.precision)
    if res.agree is not None and n:
        d = agreement_decision(res.agree, n, want)
        res.agreement_bounds = (d.lower, d.upper)
        seen = f"top-1 agreement {res.agree / n:.2%} ({res.agree}/{n})"
        if d.verdict == FAIL:
            fails.append(f"{seen} < {want:.2%}: {n - res.agree} images disagree" if want >= 1.0 else
                         f"{seen} is below {want:.2%} (one-sided 95% upper bound {d.upper:.2%})")
        elif d.verdict == UNDECIDED and res.agree / n < want:
            warns.append(f"{seen} is below {want:.2%}: a measured loss, though {n} images are too few to show it "
                         f"(one-sided 95% bounds {d.lower:.2%} .. {d.upper:.2%}); passed undecided. "
                         f"{MEASURED_LOSS_HELP}")
        elif d.verdict == UNDECIDED:
            warns.append(f"{seen}: {n} images cannot show it is at least {want:.2%} (one-sided 95% bounds "
                         f"{d.lower:.2%} .. {d.upper:.2%}); passed undecided")
    if max_diff and res.precision == "fp32" and res.max_abs_diff is not None \
            and res.max_abs_diff > thresholds.fp32_max_diff:
        fails.append(f"max abs diff {res.max_abs_diff:.2e} > {thresholds.fp32_max_diff:.0e} (on {n} images)")
    if res.precision == "int8" and res.losses is not None and n:
        want_drop = thresholds.int8_accuracy_drop
        d = drop_decision(res.losses, res.gains or 0, n, want_drop)
        res.drop_bounds = (d.lower, d.upper)
        seen = (f"accuracy drop {(res.losses - (res.gains or 0)) / n * 100:.2f} points ({res.losses} lost, "
                f"{res.gains} gained of {n} images)")
        drop = (res.losses - (res.gains or 0)) / n
        if d.verdict == FAIL:
            fails.append(f"{seen} is above {want_drop * 100:.2f} (one-sided 95% lower bound "
                         f"{d.lower * 100:.2f} points)")
        elif d.verdict == UNDECIDED and drop > want_drop:
            warns.append(f"{seen} is above {want_drop * 100:.2f}: a measured loss, though {n} images are too few to "
                         f"show it (one-sided 95% upper bound {d.upper * 100:.2f}); passed undecided. "
                         f"{MEASURED_LOSS_HELP}")
        elif d.verdict == UNDECIDED:
            warns.append(f"{seen}: {n} images cannot show it is at most {want_drop * 100:.2f} points (one-sided "
                         f"95% upper bound {d.upper * 100:.2f}); passed undecided")
    res.failures, res.warnings = fails, warns
    res.verdict = FAIL if fails else UNDECIDED if warns else PASS
    res.passed = not fails


def warning_lines(results: Sequence[ArtifactResult]) -> list[str]:
    """One line per warning, naming its artifact: what an export prints for undecided verdicts."""
    return [f"{r.label}: {w}" for r in results for w in r.warnings]


def table(results: list[ArtifactResult]) -> str:
    """The final table, one row per artifact, each rate with its count of images; then the warnings."""
    def pct(v: int | None, n: int | None) -> str:
        return "-" if v is None or not n else f"{v / n * 100:.2f}% ({v}/{n})"

    rows = [("artifact", "prec", "max|diff|", "top1 agree", "accuracy", "source acc", "size", "ms@b1", "check")]
    for r in results:
        verdict = {PASS: "ok", FAIL: "FAIL", UNDECIDED: "undecided"}.get(r.verdict, "n/a")
        rows.append((r.label, r.precision, "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}",
                     pct(r.agree, r.n), pct(r.correct, r.n), pct(r.source_correct, r.n), _size(r.size_bytes),
                     "-" if r.latency_ms_b1 is None else f"{r.latency_ms_b1:.3f}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"warning: {w}" for w in warning_lines(results)])


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
    res.engine = "trt"
    with clf:
        _score(res, _outputs(clf, images, batch_for(clf.card.input)), ref, labels)
        res.latency_ms_b1 = _latency_ms(clf, images[0:1][0])
        res.note = "GPU latency through the runtime's TensorRT backend"
    judge(res, thresholds, max_diff=False)
    res.seconds = round(time.perf_counter() - t0, 3)
    return res
