"""Step 4 (``--int8``): static post-training quantization to Q/DQ that ONNX Runtime runs and TensorRT parses.

Measured with TensorRT-RTX 1.7: asymmetric zero points are refused ("Non-zero
zero point is not supported"), so are ONNX Runtime's default int32 biases, and
so is a quantized constant feeding anything but a DequantizeLinear (the Mul of
a Rescaling layer). Hence: ``quant_pre_process`` first; symmetric int8
activations and per-channel symmetric weights; bias left in float; only the
ops TensorRT runs in int8 (Conv, MatMul, Gemm) get Q/DQ on their inputs, and
not on their outputs (quantizing the final Gemm's logits cost the digits model
2.6 points of top-1 agreement; without it agreement is 99.6%).

Calibration ranges are cached beside the output in a file whose name carries a
key made of the FP32 graph, the preprocessed calibration pixels and the
settings, so a re-export with the same data does not recalibrate.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..card import InputSpec, ModelCard
from ..errors import ExportError, first_line
from .data import ImageSet

METHODS = ("entropy", "minmax", "percentile")
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CACHE_PREFIX = "model.int8.calib-"


@dataclass(frozen=True)
class Int8Result:
    method: str
    images: int
    cache_file: str
    cache_hit: bool
    data_sha256: str


def cache_name(graph_sha256: str, data_sha256: str, method: str) -> str:
    """The cache file for this FP32 graph (hashed after :func:`.onnx_io.canonical_names`, which makes it
    reproducible), these preprocessed pixels and these settings."""
    import onnxruntime

    key = "|".join([graph_sha256, data_sha256, method, onnxruntime.__version__, ",".join(QUANTIZED_OPS), "sym-qdq-v2"])
    return f"{CACHE_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a fresh pass of an ImageSet."""

    def __init__(self, batches: Iterator[Any], input_name: str):
        self._it = batches
        self._name = input_name

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._it, None)
        return None if batch is None else {self._name: batch}


def quantize(fp32_path: Path, out_path: Path, calib: ImageSet, card: ModelCard, spec: InputSpec, method: str,
             cache_in: Path | None, cache_out: Path, batch: int | None = None) -> Int8Result:
    """Quantize ``fp32_path`` into ``out_path``; ranges come from ``cache_in`` when present, else from ``calib``
    (and are written to ``cache_out``). ``batch``: the graph's fixed batch size (``len(calib)`` a multiple of it)."""
    if method not in METHODS:
        raise ExportError(f"calibration method {method!r}; expected one of {', '.join(METHODS)}")
    from .._lazy import require

    q = require("onnxruntime.quantization", "INT8 export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from . import onnx_io

    calib_method = {"entropy": q.CalibrationMethod.Entropy, "minmax": q.CalibrationMethod.MinMax,
                    "percentile": q.CalibrationMethod.Percentile}[method]
    input_name = onnx_io.io_names(__import__("onnx").load(str(fp32_path)))[0]
    data_sha = calib.fingerprint(spec, card)
    hit = cache_in is not None and cache_in.is_file()
    with tempfile.TemporaryDirectory(prefix="cnnedge-int8-", dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception as exc:
            raise ExportError(f"INT8 pre-processing (quant_pre_process) failed: {first_line(exc)}") from None
        cache_tmp = Path(tmp) / "ranges.json"
        if hit:
            shutil.copyfile(cache_in, cache_tmp)
        # equal batches: ONNX Runtime's histogram calibrators stack per-batch outputs and fail on a short last one
        size = batch or max(b for b in range(1, 33) if len(calib) % b == 0)  # a fixed-batch graph takes its own
        reader = _Reader(calib.batches(spec, card, size), input_name)
        options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                   "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)}
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress
                q.quantize_static(str(pre), str(out_path), reader, quant_format=q.QuantFormat.QDQ,
                                  per_channel=True, activation_type=q.QuantType.QInt8,
                                  weight_type=q.QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS),
                                  calibrate_method=calib_method, extra_options=options,
                                  calibration_cache_path=str(cache_tmp))
        except Exception as exc:
            raise ExportError(f"INT8 quantization failed: {first_line(exc)}") from None
        if not hit:
            from ..atomic import write_bytes

            write_bytes(cache_out, cache_tmp.read_bytes())
    return Int8Result(method, len(calib), cache_out.name, hit, data_sha)
