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


def to_fp16(model: Any) -> Any:
    from .._lazy import require

    onnx = require("onnx", "FP16 export")
    float16 = require("onnxconverter_common.float16", "FP16 export")
    inputs = {i.name for i in model.graph.input}
    input_casts = [n.name for n in model.graph.node if n.op_type == "Cast" and any(i in inputs for i in n.input)]
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    model, tail = _detach_output_softmax(model)
    try:
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=input_casts,
                                                op_block_list=blocked)
        if tail is not None:
            _reattach(half, tail)
        del half.graph.value_info[:]
        half = onnx.shape_inference.infer_shapes(half, strict_mode=True)
        onnx.checker.check_model(half)
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {first_line(exc)}") from None
    return half


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
