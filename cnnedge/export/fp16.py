"""Step 3 (``--fp16``): weights and compute in half precision, inputs and outputs as the FP32 model has them.

Two details matter (both measured): ``keep_io_types=True`` breaks a graph whose
uint8 input feeds a Cast (the converter retypes that Cast's output and ONNX
Runtime refuses the file), so the input Casts stay FP32 through
``node_block_list``; and the converter leaves stale ``value_info`` behind, so the
types are inferred afresh. Softmax and reductions stay in FP32; a Softmax that
produces the graph output is taken off before conversion and put back after it
(the converter fails on a blocked op at the output: "The downstream node of the
second cast node should be graph output").
"""
from __future__ import annotations

from typing import Any

from ..errors import ExportError, first_line

# Numerically sensitive: exponentials and sums over many values.
FP32_OPS = ("Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
            "GlobalAveragePool", "LayerNormalization", "Exp", "Log")


MIN_POSITIVE, MAX_FINITE = 1e-7, 1e4  # the converter's defaults: values beyond are clamped


def to_fp16(model: Any) -> tuple[Any, dict[str, int]]:
    """The half-precision model and how many weight values the converter moved into FP16's range (it warns
    once per tensor; the counts go in the report instead): :func:`moved`."""
    import warnings

    from .._lazy import require

    onnx = require("onnx", "FP16 export")
    float16 = require("onnxconverter_common.float16", "FP16 export")
    inputs = {i.name for i in model.graph.input}
    input_casts = [n.name for n in model.graph.node if n.op_type == "Cast" and any(i in inputs for i in n.input)]
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    model, tail = _detach_output_softmax(model)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"the float32 number .* will be truncated")
            half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=input_casts,
                                                    op_block_list=blocked, min_positive_val=MIN_POSITIVE,
                                                    max_finite_val=MAX_FINITE)
        if tail is not None:
            _reattach(half, tail)
        del half.graph.value_info[:]
        half = onnx.shape_inference.infer_shapes(half, strict_mode=True)
        onnx.checker.check_model(half)
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {first_line(exc)}") from None
    return half, moved(model, half)


def moved(model: Any, half: Any) -> dict[str, int]:
    """Values of ``model``'s float32 weights that became FP16 in ``half`` and lay outside the converter's range:
    ``tiny`` ones (0 < |w| < 1e-7, set to +-1e-7) and ``large`` ones (|w| > 1e4, clamped to +-1e4); and
    ``clamped_values``, both together."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    halved = {i.name for i in half.graph.initializer if i.data_type == TensorProto.FLOAT16}
    tiny = large = 0
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name in halved:
            a = np.abs(numpy_helper.to_array(init))
            tiny += int(np.count_nonzero((a > 0) & (a < MIN_POSITIVE)))
            large += int(np.count_nonzero(a > MAX_FINITE))
    return {"clamped_values": tiny + large, "tiny_values": tiny, "large_values": large}


def moved_line(counts: dict[str, int]) -> str | None:
    """What the export says of :func:`moved`'s counts, or None when nothing moved."""
    parts = ([f"{counts['tiny_values']} tiny weight values (0 < |w| < {MIN_POSITIVE:g}) were set to "
              f"+-{MIN_POSITIVE:g}"] if counts["tiny_values"] else []) + \
            ([f"{counts['large_values']} weight values beyond +-{MAX_FINITE:g} were clamped to it"]
             if counts["large_values"] else [])
    return f"FP16: {'; '.join(parts)}" if parts else None


def _detach_output_softmax(model: Any) -> tuple[Any, Any]:
    """A copy of ``model`` without the Softmax that produces its only output, and that node (or None)."""
    import copy

    out = model.graph.output[0].name
    last = [n for n in model.graph.node if out in n.output]
    if len(model.graph.output) != 1 or len(last) != 1 or last[0].op_type != "Softmax":
        return model, None
    m = copy.deepcopy(model)
    node = next(n for n in m.graph.node if out in n.output)
    tail = copy.deepcopy(node)
    m.graph.node.remove(node)
    m.graph.output[0].name = node.input[0]
    m.graph.output[0].type.tensor_type.ClearField("shape")
    return m, (tail, copy.deepcopy(model.graph.output[0]))


def _reattach(half: Any, tail: Any) -> None:
    node, out = tail
    half.graph.node.append(node)  # consumes the FP32 logits the converter kept as the output
    half.graph.output[0].CopyFrom(out)
