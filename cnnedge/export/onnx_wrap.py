"""An ONNX classifier from elsewhere, wrapped to take uint8 NHWC pixels like every cnnedge export.

In front of the source graph: Cast to float, the card's ``(x * scale - mean) / std`` (unless the model
normalises itself), and a Transpose to NCHW when the source takes channels first. The source graph is
not changed; only its input is now computed instead of fed. Every name the wrapper adds is one the source
does not use (an Ultralytics export's input is called ``images`` too).
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import numpy as np

from ..artifact.card import ModelCard

INPUT_NAME = "images"


def graph_names(graph: Any) -> set[str]:
    """Every tensor and node name in ``graph`` and its subgraphs (If/Loop/Scan bodies)."""
    names: set[str] = set()
    for g in _graphs(graph):
        names.update(i.name for i in g.input)
        names.update(o.name for o in g.output)
        names.update(i.name for i in g.initializer)
        names.update(v.name for v in g.value_info)
        for n in g.node:
            names.add(n.name)
            names.update(n.input)
            names.update(n.output)
    return names


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def fresh(base: str, used: set[str]) -> str:
    """``base``, or ``cnnedge_<base>``, ``cnnedge_<base>_2``... : the first one not in ``used`` (then added)."""
    name, k = base, 1
    while name in used:
        k += 1
        name = f"cnnedge_{base}" if k == 2 else f"cnnedge_{base}_{k - 1}"
    used.add(name)
    return name


def wrap(model: Any, card: ModelCard, input_dtype: str = "uint8") -> Any:
    """A copy of ``model`` whose input takes what ``card`` (the source's) describes as pixels; ``float32``
    returns the graph as it is (the host keeps feeding what the source takes)."""
    from onnx import TensorProto, helper, numpy_helper

    from .onnx_io import fed_inputs

    out = copy.deepcopy(model)
    if input_dtype != "uint8":
        return out
    g = out.graph
    used = graph_names(g)
    src = fed_inputs(out)[0]
    dims = src.type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else "batch"
    spec = card.input
    in_name = fresh(INPUT_NAME, used)
    new_in = helper.make_tensor_value_info(in_name, TensorProto.UINT8, [batch, spec.height, spec.width,
                                                                       spec.channels])
    pre = card.preprocess
    x = fresh("cnnedge_pixels", used)
    nodes = [helper.make_node("Cast", [in_name], [x], name=fresh("cnnedge_cast", used), to=TensorProto.FLOAT)]
    if not pre.in_graph:
        for op, values in (("Mul", [pre.scale]), ("Sub", list(pre.mean)), ("Div", list(pre.std))):
            const = fresh(f"cnnedge_{op.lower()}_value", used)
            g.initializer.append(numpy_helper.from_array(np.asarray(values, np.float32), const))
            y = fresh(f"{x}_{op.lower()}", used)
            nodes.append(helper.make_node(op, [x, const], [y], name=fresh(f"cnnedge_{op.lower()}", used)))
            x = y
    if spec.layout == "NCHW":
        y = fresh(f"{x}_nchw", used)
        nodes.append(helper.make_node("Transpose", [x], [y], name=fresh("cnnedge_transpose", used), perm=[0, 3, 1, 2]))
        x = y
    nodes.append(helper.make_node("Identity", [x], [src.name], name=fresh("cnnedge_source_input", used)))
    kept = [i for i in g.input if i.name != src.name]
    del g.input[:]
    g.input.extend([new_in, *kept])
    body = list(g.node)
    del g.node[:]
    g.node.extend(nodes + body)
    return out
