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

    layers: int  # integer weight tensors checked
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


def check(path: str | Path) -> Guarantee:
    """The :class:`Guarantee` of the quantized ONNX file at ``path``, from its int8 weight initializers."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    weighted = {n.input[1] for n in graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1}
    worst, worst_name, offenders, layers = 0, None, [], 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in weighted or node.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype != np.int8 or q.size == 0:
            continue
        layers += 1
        mags = np.sort(np.abs(q.astype(np.int32)).ravel())
        pair = ACTIVATION_MAX * int(mags[-1] + (mags[-2] if mags.size > 1 else 0))
        if pair > worst:
            worst, worst_name = pair, node.input[0]
        if pair > INT16_MAX:
            offenders.append(node.input[0])
    return Guarantee(layers, worst, INT16_MAX, worst_name, offenders)
