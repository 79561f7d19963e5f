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
calibration images than ``target_agreement`` (99%), :func:`.layer_fallback.fallback` ranks
every Conv/Gemm/MatMul by the signal-to-noise ratio it loses in int8 and keeps
the worst float in growing rounds until the file agrees. The choices, each with
its share of the multiply-adds, are recorded in the export report.

Its parts, one module each: :mod:`.calibration` (ranges, streamed, and their cache key), :mod:`.qdq` (the
quantizer call, one flavour's file), :mod:`.layer_fallback` and :mod:`.sensitivity` (which layers stay float),
:mod:`.saturation` (the 7-bit guarantee) and :mod:`.ort_kernels` (what ONNX Runtime runs the file as); this
module holds the options and the step that chains them.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifact.card import ModelCard
from ..errors import ExportError, UsageError
from . import saturation
from .calibration import METHODS, Batches, calibrate
from .layer_fallback import Fallback, LayerChoice, fallback, measure_candidates
from .ort_kernels import ort_cpu_ops
from .qdq import CPU, FILE_NAMES, TENSORRT, pre_processed, quantize_with_ranges, with_tail
from .saturation import WEIGHT_BITS

ACTIVATIONS = ("uint8", "int8")


@dataclass(frozen=True)
class Int8Options:
    """How ``--int8`` quantizes; validated on construction.

    ``activations``: the CPU file's activation type, ``"uint8"`` (U8S8, fastest on x86) or ``"int8"`` (S8S8).
    ``float_layers``: node names of the pre-processed graph to keep float in both files, besides the measured ones.
    ``max_agreement_cost``: a candidate layer stays float when quantizing it lowers top-1 agreement with FP32 on
    the calibration images by more than this fraction.
    ``target_agreement``: when the CPU file agrees with FP32 on fewer of the calibration images than this, the
    layers that lose most are kept float (:func:`.layer_fallback.fallback`) until it does; 0 turns the fallback
    off.
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


def quantize(fp32_path: Path, out_dir: Path, batches: Batches, n_images: int, data_sha256: str, card: ModelCard,
             method: str, cache_in: Path | None, cache_out: Path, options: Int8Options | None = None,
             batch: int | None = None) -> Int8Result:
    """Write :data:`FILE_NAMES` into ``out_dir`` from ``fp32_path``, each written once, with ``card`` embedded
    (its ``provenance.calibration`` completed with what :meth:`Int8Result.describe` says and the file's flavour).

    ``batches()`` yields the ``n_images`` calibration images as the model takes them, in chunks of any size, the
    same sequence on every call (it is read more than once; never all at once), and ``data_sha256`` is their
    :func:`.calibration.fingerprint_batches`. Ranges come from ``cache_in`` when present, else from
    :func:`.calibration.calibrate` (and are
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
        graph = pre_processed(fp32_path, pre, options.float_layers)
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
        measured, agreement = measure_candidates(graph, exclude, options.max_agreement_cost, batches, fp32_path,
                                                 cpu, requantize, batch)
        exclude = with_tail(graph, [*exclude, *(m.node for m in measured if m.kept_float)])
        if any(m.kept_float for m in measured):
            cpu = run(CPU, exclude, tmp / "cpu-final.onnx")
        fell_back: dict[str, Fallback] = {}
        cpu, done = fallback(graph, pre, fp32_path, cpu, exclude, agreement, options.target_agreement, batches,
                             requantize, batch)
        if done is not None:
            fell_back[CPU] = done
        guarantee = safe_weights(cpu)
        trt = run(TENSORRT, exclude, tmp / "trt.onnx")
        trt, done = fallback(graph, pre, fp32_path, trt, exclude, None, options.target_agreement, batches,
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




def safe_weights(cpu: Path) -> saturation.Guarantee:
    """The CPU file's :class:`.saturation.Guarantee`; an error when it does not hold (a file that gives other
    answers on x86 without VNNI is not written)."""
    guarantee = saturation.check(cpu)
    if not guarantee.holds:
        raise ExportError(f"the CPU INT8 file's weights can saturate ONNX Runtime's 16-bit pair sums on x86 CPUs "
                          f"without VNNI (255 x (two largest |w|) = {guarantee.worst_pair_sum} > "
                          f"{guarantee.limit} in {', '.join(guarantee.offenders[:3])}); this ONNX Runtime did "
                          f"not quantize to {WEIGHT_BITS}-bit weights")
    return guarantee
