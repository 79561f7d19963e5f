"""Step 4 (``--int8``): static post-training quantization, one calibration, two files for two kinds of engine.

ONNX Runtime's CPU provider runs a Conv as an integer kernel (``QLinearConv``)
only when Q/DQ wrap its output as well as its inputs; with Q/DQ on the inputs
only it runs a float Conv plus dequantize work and is slower than FP32
(measured: 0.43x on imagenette-cnn at 224x224). It also folds a Relu into the
kernel only when the Relu's output is quantized with its zero point at the
type's minimum (uint8, zero point 0), and a symmetric int8 Relu stays as
float DQ -> Relu -> Q around every Conv (measured: ~1.7x instead of ~3x).
TensorRT-RTX 1.7 needs the opposite: symmetric int8 activations (zero point 0),
no int32 bias ("DequantizeLinear: input has type Int32") and no quantized
constant feeding an elementwise op (the Rescaling Mul). One file cannot be
fast on both, so ``--int8`` writes two from the same calibration ranges:

- ``model.int8.onnx`` (:data:`CPU`): every op ONNX Runtime quantizes, Q/DQ on
  inputs and outputs, uint8 activations (U8S8: the x86 VNNI instruction
  multiplies u8 by s8) or int8 ones (:class:`Int8Options`), per-channel
  7-bit weights (``reduce_range``), int32 bias. ONNX Runtime fuses it into
  integer kernels. 7-bit, because on x86 without VNNI (AVX2, AVX-512 before
  Cascade Lake, AMD before Zen 4) those kernels add pairs of u8 x s8 products
  in 16 bits, which 8-bit weights overflow: the same file then gives other
  answers than where it was checked (a real gender model: 9 of 20 faces).
  With |w| <= 64 no pair can leave int16 (255 x 128 = 32640); the export
  checks that on the file's own weights (:mod:`.saturation`) and records it,
  and its parity is also run on an emulated AVX2 CPU (:mod:`.emulated`).
- ``model.int8.trt.onnx`` (:data:`TENSORRT`): symmetric int8 Q/DQ in front of
  Conv/MatMul/Gemm only, per-channel symmetric weights, float bias; TensorRT
  fuses it into int8 kernels. The INT8 engine is built from it, and the
  runtime's ``auto`` opens it for ONNX Runtime's GPU providers.

Layers that lose most in int8 stay float, chosen by measuring: each candidate
(the last Gemm/MatMul, whose logits decide top-1; quantizing it cost the
digits model 2.6 points of agreement) is quantized and kept float when that
costs more than ``max_agreement_cost`` of top-1 agreement with FP32 on the
calibration images. Then, when the CPU file still agrees with FP32 on fewer
calibration images than ``target_agreement`` (99%), :func:`fallback` ranks
every Conv/Gemm/MatMul by the signal-to-noise ratio it loses in int8 and keeps
the worst float in growing rounds until the file agrees. The choices, each with
its share of the multiply-adds, are recorded in the export report.

Calibration ranges are cached beside the output in a file whose name carries a
key made of the FP32 graph, the preprocessed calibration pixels and the
settings, so a re-export with the same data does not recalibrate.

Calibration streams: ONNX Runtime's histogram calibrators (entropy,
percentile) keep every intermediate output of every batch one
``collect_data`` call reads, so one ``quantize_static`` over all the images
needs memory in proportion to their number (measured: 2.6 GB with 42 images,
7.9 GB with 336 at 224x224). :func:`calibrate` calls ``collect_data`` once per
batch of :data:`CALIBRATION_BATCH` images (the histograms accumulate across
calls, min/max merge) and saves the ranges as the calibration cache, which
``quantize_static`` then reads instead of calibrating; peak memory depends on
the model and that batch, not on the number of images.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..artifact.card import ModelCard
from ..artifact.names import CALIB_PREFIX as CACHE_PREFIX
from ..artifact.names import INT8_CPU_NAME, INT8_TRT_NAME
from ..errors import ExportError, UsageError, first_line
from . import saturation
from .saturation import WEIGHT_BITS

METHODS = ("entropy", "minmax", "percentile")
ACTIVATIONS = ("uint8", "int8")
TENSORRT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CANDIDATE_OPS = ("Gemm", "MatMul")
TAIL_OPS = ("Softmax", "Sigmoid", "Relu", "Clip", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
            "Identity")
CPU = "onnxruntime-cpu"
TENSORRT = "tensorrt"
FILE_NAMES = {CPU: INT8_CPU_NAME, TENSORRT: INT8_TRT_NAME}
# what ONNX Runtime's CPU provider turns Q/DQ groups into when it runs them as integer kernels
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat")
FLOAT_OPS = ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "ConvTranspose")
# images run at once in calibration (one collect_data call: what the histogram calibrators hold) and in measuring
# the candidate layers; a fixed-batch graph takes its own size. Part of the cache key: merged histograms depend on it
CALIBRATION_BATCH = 16

Batches = Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class Int8Options:
    """How ``--int8`` quantizes; validated on construction.

    ``activations``: the CPU file's activation type, ``"uint8"`` (U8S8, fastest on x86) or ``"int8"`` (S8S8).
    ``float_layers``: node names of the pre-processed graph to keep float in both files, besides the measured ones.
    ``max_agreement_cost``: a candidate layer stays float when quantizing it lowers top-1 agreement with FP32 on
    the calibration images by more than this fraction.
    ``target_agreement``: when the CPU file agrees with FP32 on fewer of the calibration images than this, the
    layers that lose most are kept float (:func:`fallback`) until it does; 0 turns the fallback off.
    """

    activations: str = "uint8"
    float_layers: tuple[str, ...] = ()
    max_agreement_cost: float = 0.005
    target_agreement: float = 0.99

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATIONS:
            raise UsageError(f"int8 activations {self.activations!r}; expected one of {', '.join(ACTIVATIONS)}")
        if isinstance(self.float_layers, str) or not all(isinstance(n, str) for n in self.float_layers):
            raise UsageError(f"float_layers must be a sequence of node names, found {self.float_layers!r}")
        object.__setattr__(self, "float_layers", tuple(self.float_layers))
        for name in ("max_agreement_cost", "target_agreement"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise UsageError(f"{name} must be a fraction in 0..1, found {value!r}")


@dataclass(frozen=True)
class LayerChoice:
    """One candidate layer: top-1 agreement with FP32 on the calibration images, quantized and kept float."""

    node: str
    op: str
    agreement_quantized: float
    agreement_float: float
    kept_float: bool


@dataclass(frozen=True)
class KeptLayer:
    """A layer the fallback keeps float in the CPU file, and what that costs."""

    node: str
    op: str
    noise_added: float  # noise-to-signal power ratio the layer adds in int8 (see :func:`sensitivity`)
    mac_share: float  # of the model's multiply-adds per image: what this layer now runs in float
    agreement: float  # the CPU file's top-1 agreement with FP32 on the calibration images, this layer float too


@dataclass(frozen=True)
class Fallback:
    """What :func:`fallback` did: the CPU file's calibration agreement before and after keeping ``kept`` float."""

    target: float
    images: int
    agreement_before: float
    agreement_after: float
    kept: list[KeptLayer]
    float_mac_share: float  # of the model's multiply-adds, all kept layers together
    reached: bool


@dataclass(frozen=True)
class Int8Result:
    method: str
    images: int
    cache_file: str
    cache_hit: bool
    data_sha256: str
    files: dict[str, str]
    activations: str
    float_layers: list[str]
    measured: list[LayerChoice] = field(default_factory=list)
    ort_cpu_ops: dict[str, int] = field(default_factory=dict)
    fallback: dict[str, Fallback] = field(default_factory=dict)  # per flavour that needed it
    saturation: dict[str, Any] = field(default_factory=dict)  # .saturation.Guarantee.describe() of the CPU file

    def describe(self) -> dict[str, Any]:
        """What the export report and the INT8 cards record."""
        return {"method": self.method, "data_sha256": self.data_sha256, "cache_file": self.cache_file,
                "cache_hit": self.cache_hit, "files": self.files, "cpu_activations": self.activations,
                "cpu_weight_bits": WEIGHT_BITS, "float_layers": self.float_layers,
                "measured_layers": [asdict(m) for m in self.measured],
                "fallback": {flavour: asdict(f) for flavour, f in self.fallback.items()},
                "saturation": self.saturation, "ort_cpu_ops": self.ort_cpu_ops}


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


def ort_cpu_ops(path: str | Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime's CPU provider actually runs (its optimized model), restricted to the
    integer kernels and the float Conv/MatMul/Gemm forms: how much of the model runs in int8 there."""
    from . import onnx_io

    from .scratch import folder

    with folder("cnnedge-ortopt-") as tmp:
        opt = tmp / "optimized.onnx"
        onnx_io.session(path, optimized_model_path=opt)
        import onnx

        counts = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    return {op: counts[op] for op in (*INTEGER_OPS, *FLOAT_OPS) if counts[op]}


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


def _ort_method(q: Any, method: str) -> Any:
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
    calib_method = _ort_method(q, method)
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


def quantize(fp32_path: Path, out_dir: Path, batches: Batches, n_images: int, data_sha256: str, card: ModelCard,
             method: str, cache_in: Path | None, cache_out: Path, options: Int8Options | None = None,
             batch: int | None = None) -> Int8Result:
    """Write :data:`FILE_NAMES` into ``out_dir`` from ``fp32_path``, each written once, with ``card`` embedded
    (its ``provenance.calibration`` completed with what :meth:`Int8Result.describe` says and the file's flavour).

    ``batches()`` yields the ``n_images`` calibration images as the model takes them, in chunks of any size, the
    same sequence on every call (it is read more than once; never all at once), and ``data_sha256`` is their
    :func:`fingerprint_batches`. Ranges come from ``cache_in`` when present, else from :func:`calibrate` (and are
    written to ``cache_out``). ``batch``: the graph's fixed batch size, when it has one; the images past the last
    whole batch are left out.
    """
    if method not in METHODS:
        raise ExportError(f"calibration method {method!r}; expected one of {', '.join(METHODS)}")
    options = options or Int8Options()
    used = n_images - n_images % batch if batch else n_images
    if used <= 0:
        raise ExportError(f"{n_images} calibration images; the model takes batches of {batch}")
    from .._lazy import require

    q = require("onnxruntime.quantization", "INT8 export")
    import onnx

    from . import onnx_io

    hit = cache_in is not None and cache_in.is_file()
    with tempfile.TemporaryDirectory(prefix="cnnedge-int8-", dir=out_dir) as tmp_name:
        tmp = Path(tmp_name)
        pre = tmp / "pre.onnx"
        graph = pre_processed(fp32_path, pre, options)
        ranges = tmp / "ranges.json"
        if hit:
            shutil.copyfile(cache_in, ranges)
        else:
            tensors, n = calibrate(pre, batches, method, tmp, batch)
            if n != used:
                raise ExportError(f"calibration read {n} images where {used} were announced")
            q.save_tensors_data(tensors, ranges)

        def run(flavour: str, exclude: list[str], target: Path) -> Path:
            return quantize_with_ranges(pre, target, ranges, flavour, exclude, options.activations, method)

        exclude = with_tail(graph, options.float_layers)
        cpu = run(CPU, exclude, tmp / "cpu.onnx")
        requantize = lambda ex, name: run(CPU, ex, tmp / name)  # noqa: E731
        measured, agreement = _measure_candidates(graph, exclude, options, batches, fp32_path, cpu, requantize,
                                                  batch)
        exclude = with_tail(graph, [*exclude, *(m.node for m in measured if m.kept_float)])
        if any(m.kept_float for m in measured):
            cpu = run(CPU, exclude, tmp / "cpu-final.onnx")
        fell_back: dict[str, Fallback] = {}
        cpu, done = fallback(graph, pre, fp32_path, cpu, exclude, agreement, options, batches, requantize, batch)
        if done is not None:
            fell_back[CPU] = done
        guarantee = saturation.check(cpu)
        if not guarantee.holds:
            raise ExportError(f"the CPU INT8 file's weights can saturate ONNX Runtime's 16-bit pair sums on x86 CPUs "
                              f"without VNNI (255 x (two largest |w|) = {guarantee.worst_pair_sum} > "
                              f"{guarantee.limit} in {', '.join(guarantee.offenders[:3])}); this ONNX Runtime did "
                              f"not quantize to {WEIGHT_BITS}-bit weights")
        trt = run(TENSORRT, exclude, tmp / "trt.onnx")
        trt, done = fallback(graph, pre, fp32_path, trt, exclude, None, options, batches,
                             lambda ex, name: run(TENSORRT, ex, tmp / f"trt-{name}"), batch)
        if done is not None:
            fell_back[TENSORRT] = done
        if not hit:
            from ..staging import write_bytes

            write_bytes(cache_out, ranges.read_bytes())
        result = Int8Result(method, used, cache_out.name, hit, data_sha256, dict(FILE_NAMES),
                            options.activations, exclude, measured, ort_cpu_ops(cpu), fell_back,
                            guarantee.describe())
        info = result.describe()
        for flavour, src in ((CPU, cpu), (TENSORRT, trt)):
            model = onnx.load(str(src))
            onnx_io.embed_card(model, card.replace(provenance={"calibration": {
                **(card.provenance.calibration or {}), **info, "flavour": flavour}}))
            onnx_io.save(model, out_dir / FILE_NAMES[flavour])
    return result


def pre_processed(fp32_path: Path, pre: Path, options: Int8Options) -> Any:
    """ONNX Runtime's ``quant_pre_process`` of the FP32 graph into ``pre``; its graph, whose node names
    ``options.float_layers`` must name."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    except Exception as exc:
        raise ExportError(f"INT8 pre-processing (quant_pre_process) failed: {first_line(exc)}") from None
    graph = onnx.load(str(pre)).graph
    unknown = sorted(set(options.float_layers) - {n.name for n in graph.node})
    if unknown:
        raise UsageError(f"--int8-float (float_layers): no node named {', '.join(unknown)} in the graph (its nodes: "
                         f"{', '.join(n.name for n in graph.node if n.op_type in TENSORRT_OPS)})")
    return graph


def quantize_with_ranges(pre: Path, target: Path, ranges: Path, flavour: str, exclude: list[str],
                         activations: str, method: str, weight_bits: int = WEIGHT_BITS) -> Path:
    """One flavour's Q/DQ file from the calibrated ``ranges`` (ONNX Runtime reads the file and does not
    calibrate): :data:`CPU` quantizes every op it can, with ``weight_bits`` (7: no 16-bit pair sum can saturate
    on x86 without VNNI, see :mod:`.saturation`; 8 only to measure what 7 costs), :data:`TENSORRT` symmetric
    int8 in front of the ops TensorRT runs in int8, with float bias."""
    import onnxruntime.quantization as q

    if weight_bits not in (7, 8):
        raise UsageError(f"weight_bits {weight_bits!r}; expected 7 or 8")
    if flavour == CPU:
        act = q.QuantType.QUInt8 if activations == "uint8" else q.QuantType.QInt8
        kw: dict[str, Any] = {"activation_type": act, "op_types_to_quantize": None, "extra_options": {},
                              "reduce_range": weight_bits == 7}
    else:
        kw = {"activation_type": q.QuantType.QInt8, "op_types_to_quantize": list(TENSORRT_OPS),
              "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                "OpTypesToExcludeOutputQuantization": list(TENSORRT_OPS)}}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            q.quantize_static(str(pre), str(target), None, quant_format=q.QuantFormat.QDQ, per_channel=True,
                              weight_type=q.QuantType.QInt8, calibrate_method=_ort_method(q, method),
                              nodes_to_exclude=exclude, calibration_cache_path=str(ranges), **kw)
    except Exception as exc:
        raise ExportError(f"INT8 quantization ({flavour}) failed: {first_line(exc)}") from None
    if exclude:
        float_inputs(target, exclude)
    return target


def float_inputs(path: Path, names: Iterable[str]) -> None:
    """Make each Conv/ConvTranspose/Gemm/MatMul named in ``names`` (a layer kept float) read its input through
    its own per-channel DequantizeLinear (the same scale and zero point repeated along the channel axis) instead
    of the per-tensor one the quantizer shares with its neighbours. Numerically the same; but ONNX Runtime's
    ``WeightBiasQuantization`` takes a per-tensor DequantizeLinear -> Conv/Gemm with float weights as its cue to
    quantize those weights itself at load, per tensor, to 8 bits: the layer was not float, and its sums saturated
    on x86 without VNNI (PaddleOCR's text-direction model: 54 layers "kept float" ran as 8-bit QLinearConv). A
    per-channel activation scale matches neither that pass nor a QDQ fusion, and the producer keeps its own
    integer kernel. Q/DQ nodes nothing reads any more go."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    keep = set(names)
    changed = False
    for node in list(graph.node):
        if node.name not in keep or node.op_type not in saturation.WEIGHTED_OPS or len(node.input) < 2:
            continue
        dq = producer.get(node.input[0])
        channels, axis = _input_channels(node, inits)
        if dq is None or dq.op_type != "DequantizeLinear" or channels is None or len(dq.input) < 3 \
                or dq.input[1] not in inits or dq.input[2] not in inits:
            continue
        scale, zero = (numpy_helper.to_array(inits[dq.input[i]]) for i in (1, 2))
        if scale.size != 1 or zero.size != 1:
            continue
        base = f"{node.name}_float_input"
        graph.initializer.extend([numpy_helper.from_array(np.full(channels, scale.item(), scale.dtype), base + "_scale"),
                                  numpy_helper.from_array(np.full(channels, zero.item(), zero.dtype), base + "_zero")])
        graph.node.insert(list(graph.node).index(node), helper.make_node(
            "DequantizeLinear", [dq.input[0], base + "_scale", base + "_zero"], [base], name=base, axis=axis))
        node.input[0] = base
        changed = True
    if not changed:
        return
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.save(model, str(path))


def with_tail(graph: Any, names: Any) -> list[str]:
    """``names`` and the nodes after them up to the next op that computes (Softmax, Relu, reshapes...): a layer
    kept float must not have its output quantized for its consumer, or ONNX Runtime fuses it back into an
    integer kernel (DQ -> Gemm -> Q)."""
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    out = list(dict.fromkeys(names))
    stack = [n for n in graph.node if n.name in out]
    while stack:
        for o in stack.pop().output:
            for c in consumers[o]:
                if c.op_type in TAIL_OPS and c.name not in out:
                    out.append(c.name)
                    stack.append(c)
    return out


def _measure_candidates(graph: Any, exclude: list[str], options: Int8Options, batches: Batches, fp32_path: Path,
                        quantized: Path, requantize: Any, batch: int | None = None
                        ) -> tuple[list[LayerChoice], float]:
    """Agreement with FP32 on the calibration images with each candidate layer quantized and kept float: the
    three models run side by side over one pass of ``batches()``, keeping only counts. Also the agreement of the
    CPU file as chosen."""
    linear = [n for n in graph.node if n.op_type in CANDIDATE_OPS]
    if not linear or linear[-1].name in exclude:
        return [], _agreements(fp32_path, [quantized], batches, batch)[0]
    last = linear[-1]  # the classifier head: its logits decide top-1
    without = requantize(with_tail(graph, [*exclude, last.name]), "cpu-candidate.onnx")
    with_q, without_q = _agreements(fp32_path, [quantized, without], batches, batch)
    keep = without_q - with_q > options.max_agreement_cost
    return [LayerChoice(last.name, last.op_type, with_q, without_q, keep)], without_q if keep else with_q


def _agreements(fp32_path: Path, models: list[Path], batches: Batches, batch: int | None) -> list[float]:
    """Top-1 agreement of each of ``models`` with ``fp32_path`` on the calibration images, side by side."""
    from .compare import opened, side_by_side, top1

    with opened(fp32_path, *models) as runs:
        ref, *top = side_by_side(runs, lambda: rebatch(batches(), batch or CALIBRATION_BATCH, tail=batch is None),
                                 top1)
    return [float(np.mean(t == ref)) if len(ref) else 0.0 for t in top]


def _rounds(n: int) -> Iterator[int]:
    """How many of the ``n`` ranked layers each fallback round keeps float: 1, 2, 3, 4, then growing by half."""
    k = 1
    while k < n:
        yield k
        k = k + 1 if k < 4 else k + k // 2
    yield n


def fallback(graph: Any, pre: Path, fp32_path: Path, quantized: Path, exclude: list[str], agreement: float | None,
             options: Int8Options, batches: Batches, requantize: Any, batch: int | None
             ) -> tuple[Path, Fallback | None]:
    """Accuracy-aware fallback for one INT8 file (``quantized``, made by ``requantize(exclude, name)``): while it
    agrees with FP32 (run by ONNX Runtime's CPU provider, which simulates a Q/DQ file's int8 exactly) on fewer
    calibration images than ``options.target_agreement``, keep float the layers that lose most in int8 (ranked by
    :func:`sensitivity`), in growing rounds, until it agrees or none is left. ``agreement``: the file's, when
    already measured. Returns the file and what was done (None when nothing needed doing)."""
    if options.target_agreement <= 0:
        return quantized, None
    if agreement is None:
        agreement = _agreements(fp32_path, [quantized], batches, batch)[0]
    if agreement >= options.target_agreement:
        return quantized, None
    ranking = [r for r in sensitivity(pre, quantized, batches, batch) if r[0] not in exclude]
    macs = mac_counts(graph)
    total = sum(macs.values()) or 1
    kept: list[KeptLayer] = []
    best, reached, now = quantized, False, agreement
    for k in _rounds(len(ranking)):
        best = requantize(with_tail(graph, [*exclude, *(r[0] for r in ranking[:k])]), f"fallback-{k}.onnx")
        now = _agreements(fp32_path, [best], batches, batch)[0]
        kept += [KeptLayer(node, op, float(f"{added:.3g}"), round(macs.get(node, 0) / total, 4), now)
                 for node, op, added in ranking[len(kept):k]]
        if now >= options.target_agreement:
            reached = True
            break
    share = sum(k.mac_share for k in kept)
    return best, Fallback(options.target_agreement, SENSITIVITY_IMAGES, agreement, now, kept, round(share, 4),
                          reached)


SENSITIVITY_IMAGES = 64  # calibration images the per-layer errors are measured on: every intermediate is held


def sensitivity(pre: Path, quantized: Path, batches: Batches, batch: int | None) -> list[tuple[str, str, float]]:
    """The compute layers of the pre-processed FP32 graph ``pre``, those that lose most in int8 first, each with
    the noise it adds: its output's noise-to-signal power ratio in ``quantized`` (against the FP32 tensor, over
    the first :data:`SENSITIVITY_IMAGES` calibration images; per channel, then averaged, so that one loud channel
    cannot hide the others' loss) minus that of its input *before* the layer's own input quantization. So a layer
    is charged with what keeping it float removes: the quantization of its input and weights, and its arithmetic
    on them (ONNX Runtime's ``qdq_loss_debug`` measures the same per tensor).
    Layers are matched by node name (the quantizer keeps them); sums stream, so memory holds one batch."""
    import onnx

    from . import onnx_io

    fg, qg = onnx.load(str(pre)).graph, onnx.load(str(quantized)).graph
    qnodes = {n.name: n for n in qg.node}
    producer = {o: n for n in qg.node for o in n.output}
    inputs = {i.name for i in qg.input}
    pairs: list[tuple[Any, tuple[str, str], tuple[str, str]]] = []  # layer, (float, quant) before, (.., ..) after
    for layer in fg.node:
        q = qnodes.get(layer.name)
        if layer.op_type not in saturation.WEIGHTED_OPS or q is None or not layer.input or not q.input:
            continue
        src = q.input[0]
        dq = producer.get(src)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in producer \
                and producer[dq.input[0]].op_type == "QuantizeLinear":
            src = producer[dq.input[0]].input[0]
        pairs.append((layer, (layer.input[0], src), _after(layer, q, fg, qnodes, qg)))
    wanted_f = list(dict.fromkeys(t for _, *ps in pairs for t, _ in ps))
    wanted_q = list(dict.fromkeys(t for _, *ps in pairs for _, t in ps if t not in inputs))
    fs, qs = (onnx_io.session(_with_outputs(p, w).SerializeToString()) for p, w in ((pre, wanted_f),
                                                                                   (quantized, wanted_q)))
    input_name = fs.get_inputs()[0].name
    signal: dict[tuple[str, str], Any] = collections.defaultdict(float)  # per channel (axis 1)
    noise: dict[tuple[str, str], Any] = collections.defaultdict(float)
    seen = 0
    for b in rebatch(batches(), batch or CALIBRATION_BATCH, tail=batch is None):
        if seen >= SENSITIVITY_IMAGES:
            break
        seen += len(b)
        ref = dict(zip(wanted_f, fs.run(wanted_f, {input_name: b})))
        got = {**dict(zip(wanted_q, qs.run(wanted_q, {input_name: b}))), **{i: b for i in inputs}}
        for _, *ps in pairs:
            for pair in ps:
                f, q = np.asarray(ref[pair[0]], np.float64), np.asarray(got[pair[1]], np.float64)
                if f.shape != q.shape:
                    continue
                axes = tuple(i for i in range(f.ndim) if i != 1)
                signal[pair] = signal[pair] + np.sum(f * f, axis=axes)
                noise[pair] = noise[pair] + np.sum((f - q) ** 2, axis=axes)

    def nsr(pair: tuple[str, str]) -> float:
        s, n = np.atleast_1d(signal[pair]), np.atleast_1d(noise[pair])
        live = s > 0  # a channel that is always zero carries nothing to lose
        return float(np.mean(np.minimum(n[live] / s[live], 1.0))) if live.any() else 0.0

    ranked = [(layer.name, layer.op_type, nsr(after) - nsr(before)) for layer, before, after in pairs
              if np.any(np.atleast_1d(signal[after]) > 0)]
    return sorted(ranked, key=lambda r: -r[2])


def _input_channels(node: Any, inits: dict[str, Any]) -> tuple[int | None, int]:
    """The channel count of a weighted layer's input, read from its weight's shape, and its axis in the input."""
    w = inits.get(node.input[1])
    if w is None or len(w.dims) < 2:
        return None, 1
    attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
    if node.op_type == "Conv":
        return int(w.dims[1]) * int(attrs.get("group", 1)), 1
    if node.op_type == "ConvTranspose":
        return int(w.dims[0]), 1
    if node.op_type == "Gemm":
        return (int(w.dims[1]) if attrs.get("transB", 0) else int(w.dims[0])), 1
    return int(w.dims[-2]), -1  # MatMul: [..., K] @ [K, N]


def _after(layer: Any, q: Any, fg: Any, qnodes: dict[str, Any], qg: Any) -> tuple[str, str]:
    """The (FP32 tensor, quantized tensor) pair a layer's output is judged on: after its output's own Q/DQ, where
    the quantized file has one (keeping the layer float removes it too); against the FP32 Relu's output where the
    quantizer folded that Relu into the Q (a uint8 zero point at 0 clips as Relu does)."""
    f_out, q_out = layer.output[0], q.output[0]
    consumers = [n for n in qg.node if q_out in n.input]
    if len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear":
        dq = [n for n in qg.node if consumers[0].output[0] in n.input and n.op_type == "DequantizeLinear"]
        if dq:
            q_out = dq[0].output[0]
    f_next = [n for n in fg.node if f_out in n.input]
    if len(f_next) == 1 and f_next[0].op_type == "Relu" and f_next[0].name not in qnodes:
        f_out = f_next[0].output[0]
    return f_out, q_out


def _with_outputs(path: Path, names: list[str]) -> Any:
    """The model at ``path`` with the float tensors ``names`` (those it has) added to its outputs."""
    import onnx

    model = onnx.load(str(path))
    produced = {o for n in model.graph.node for o in n.output}
    present = {o.name for o in model.graph.output}
    for t in names:
        if t in produced and t not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return model


def mac_counts(graph: Any) -> dict[str, int]:
    """Multiply-adds per image of each Conv/Gemm/MatMul with a constant weight, from the shapes ONNX's shape
    inference left in ``graph`` (a layer whose shape is unknown counts 0)."""
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.output]}
    weights = {i.name: list(i.dims) for i in graph.initializer}
    counts = {}
    for n in graph.node:
        if n.op_type not in saturation.WEIGHTED_OPS or len(n.input) < 2 or n.input[1] not in weights:
            continue
        w, out = weights[n.input[1]], shapes.get(n.output[0], [])
        if n.op_type in ("Conv", "ConvTranspose"):
            counts[n.name] = int(np.prod(out[1:])) * int(np.prod(w[1:])) if out and all(out[1:]) else 0
        else:
            counts[n.name] = int(np.prod(w)) * (int(np.prod(out[1:-1])) if len(out) > 2 and all(out[1:-1]) else 1)
    return counts
