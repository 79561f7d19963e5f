"""The kernels ONNX Runtime's CPU provider runs a Q/DQ file as: how much of the model runs in int8 there."""
from __future__ import annotations

import collections
from pathlib import Path

# what ONNX Runtime's CPU provider turns Q/DQ groups into when it runs them as integer kernels
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat")
FLOAT_OPS = ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "ConvTranspose")


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
