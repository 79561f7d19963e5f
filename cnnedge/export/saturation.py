"""Proof, read off a quantized file's own weights, that ONNX Runtime's x86 integer kernels cannot saturate on it.

ONNX Runtime multiplies uint8 activations by int8 weights (U8S8; int8 activations are shifted to uint8 first).
With VNNI (``VPDPBUSD``) or AMX each product is summed in 32 bits. Without them (AVX2, AVX-512 without VNNI) it
uses ``VPMADDUBSW``, which adds two adjacent products into a signed 16-bit lane and saturates there: a pair
``a0 w0 + a1 w1`` with ``a`` up to 255 leaves int16 once ``|w0| + |w1| > 128``. A file whose weights keep that
bound gives the same answers on every x86 CPU (ONNX Runtime's cure, 7-bit weights: ``reduce_range``).

Which two weights the kernel pairs depends on its packing, so the bound is taken over the two largest magnitudes
of each weight tensor: it holds for any pairing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INT16_MAX = 32767
ACTIVATION_MAX = 255  # a uint8 activation (int8 ones are shifted to uint8 by the kernel)
WEIGHT_BITS = 7  # what the CPU file is quantized with: |w| <= 64, so 255 * (64 + 64) = 32640 <= 32767
# ops whose second input (a weight, through DequantizeLinear) ONNX Runtime runs as an integer GEMM
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Guarantee:
    """The largest pair sum any weight tensor of the file can produce, against int16's limit."""

    layers: int  # int8 weight tensors checked: the file's dequantized ones and those of ORT's integer kernels
    worst_pair_sum: int  # max over them of 255 * (the two largest |w|)
    limit: int = INT16_MAX
    worst_layer: str | None = None
    offenders: list[str] = field(default_factory=list)  # weight tensors whose pair sum exceeds the limit

    @property
    def holds(self) -> bool:
        return not self.offenders

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "holds": self.holds, "activation_max": ACTIVATION_MAX,
                "rule": "255 * (two largest |int8 weight|) <= 32767 in every weight tensor: no 16-bit pair sum "
                        "(VPMADDUBSW, x86 without VNNI) can saturate"}


# ONNX Runtime's integer kernels and the input that holds their int8 weights
INTEGER_WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "ConvInteger": 1, "MatMulInteger": 1}


def check(path: str | Path) -> Guarantee:
    """The :class:`Guarantee` of the quantized ONNX file at ``path``: its int8 weights as ONNX Runtime's CPU
    provider runs them, read from the graph it optimizes the file into (its fusions applied, and any weight it
    quantizes itself at load: its ``WeightBiasQuantization`` gives a float Conv or Gemm between Q/DQ activations
    full 8-bit weights), and the file's own DequantizeLinear weights."""
    import onnx

    from . import onnx_io
    from .scratch import folder

    with folder("cnnedge-saturation-") as tmp:
        optimized = tmp / "optimized.onnx"
        onnx_io.session(path, optimized_model_path=optimized)
        run = onnx.load(str(optimized)).graph
    weights = _run_weights(run) | _file_weights(onnx.load(str(path)).graph)
    worst, worst_name, offenders = 0, None, []
    for name, q in sorted(weights.items()):
        mags = np.sort(np.abs(q.astype(np.int32)).ravel())
        pair = ACTIVATION_MAX * int(mags[-1] + (mags[-2] if mags.size > 1 else 0))
        if pair > worst:
            worst, worst_name = pair, name
        if pair > INT16_MAX:
            offenders.append(name)
    return Guarantee(len(weights), worst, INT16_MAX, worst_name, offenders)


def _int8(inits: dict[str, Any], name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    if name not in inits:
        return None
    q = numpy_helper.to_array(inits[name])
    return q if q.dtype == np.int8 and q.size else None


def _run_weights(graph: Any) -> dict[str, np.ndarray]:
    """The int8 weights of the integer kernels in ONNX Runtime's optimized graph, by the node that runs them."""
    inits = {i.name: i for i in graph.initializer}
    out = {}
    for n in graph.node:
        at = INTEGER_WEIGHT_INPUT.get(n.op_type)
        q = _int8(inits, n.input[at]) if at is not None and len(n.input) > at else None
        if q is not None:
            out[n.name or n.input[at]] = q
    return out


def _file_weights(graph: Any) -> dict[str, np.ndarray]:
    """The file's int8 weights dequantized into a Conv/Gemm/MatMul, by the node they feed."""
    inits = {i.name: i for i in graph.initializer}
    feeds = {n.input[1]: n.name for n in graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1}
    out = {}
    for n in graph.node:
        q = _int8(inits, n.input[0]) if n.op_type == "DequantizeLinear" and n.output[0] in feeds else None
        if q is not None:
            out[feeds[n.output[0]]] = q
    return out
