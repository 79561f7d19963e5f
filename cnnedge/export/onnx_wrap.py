"""An ONNX classifier from elsewhere, wrapped to take uint8 NHWC pixels like every cnnedge export.

In front of the source graph: Cast to float, the card's ``(x * scale - mean) / std`` (unless the model
normalises itself), and a Transpose to NCHW when the source takes channels first. The source graph is
not changed; only its input is now computed instead of fed.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..card import ModelCard

INPUT_NAME = "images"


def wrap(model: Any, card: ModelCard, input_dtype: str = "uint8") -> Any:
    """A copy of ``model`` whose input takes what ``card`` (the source's) describes as pixels; ``float32``
    returns the graph as it is (the host keeps feeding what the source takes)."""
    from onnx import TensorProto, helper, numpy_helper

    out = copy.deepcopy(model)
    if input_dtype != "uint8":
        return out
    g = out.graph
    init = {i.name for i in g.initializer}
    src = next(i for i in g.input if i.name not in init)
    dims = src.type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else "batch"
    spec = card.input
    new_in = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [batch, spec.height, spec.width,
                                                                          spec.channels])
    pre = card.preprocess
    nodes, x = [helper.make_node("Cast", [INPUT_NAME], ["cnnedge_pixels"], to=TensorProto.FLOAT)], "cnnedge_pixels"
    if not pre.in_graph:
        consts = {"cnnedge_scale": [pre.scale], "cnnedge_mean": list(pre.mean), "cnnedge_std": list(pre.std)}
        for name, values in consts.items():
            g.initializer.append(numpy_helper.from_array(np.asarray(values, np.float32), name))
        for op, c in (("Mul", "cnnedge_scale"), ("Sub", "cnnedge_mean"), ("Div", "cnnedge_std")):
            nodes.append(helper.make_node(op, [x, c], [f"{x}_{op.lower()}"]))
            x = f"{x}_{op.lower()}"
    if spec.layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [x], [f"{x}_nchw"], perm=[0, 3, 1, 2]))
        x = f"{x}_nchw"
    nodes.append(helper.make_node("Identity", [x], [src.name]))
    kept = [i for i in g.input if i.name != src.name]
    del g.input[:]
    g.input.extend([new_in, *kept])
    body = list(g.node)
    del g.node[:]
    g.node.extend(nodes + body)
    return out
