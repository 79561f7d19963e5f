"""The quantizer call: one flavour's Q/DQ file from calibrated ranges, with the layers kept float left float.

Two flavours from the same ranges (see :mod:`.int8`): :data:`CPU` for ONNX Runtime's integer kernels and
:data:`TENSORRT` for TensorRT's int8 kernels.
"""
from __future__ import annotations

import collections
import contextlib
import io
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..artifact.names import INT8_CPU_NAME, INT8_TRT_NAME
from ..errors import ExportError, UsageError, first_line
from . import saturation
from .calibration import ort_method
from .saturation import WEIGHT_BITS

TENSORRT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
TAIL_OPS = ("Softmax", "Sigmoid", "Relu", "Clip", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
            "Identity")
CPU = "onnxruntime-cpu"
TENSORRT = "tensorrt"
FILE_NAMES = {CPU: INT8_CPU_NAME, TENSORRT: INT8_TRT_NAME}


def pre_processed(fp32_path: Path, pre: Path, float_layers: Iterable[str] = ()) -> Any:
    """ONNX Runtime's ``quant_pre_process`` of the FP32 graph into ``pre``; its graph, whose node names
    ``float_layers`` (:attr:`.int8.Int8Options.float_layers`) must name."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    except Exception as exc:
        raise ExportError(f"INT8 pre-processing (quant_pre_process) failed: {first_line(exc)}") from None
    graph = onnx.load(str(pre)).graph
    unknown = sorted(set(float_layers) - {n.name for n in graph.node})
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
                              weight_type=q.QuantType.QInt8, calibrate_method=ort_method(q, method),
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
