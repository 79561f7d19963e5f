"""ONNX files: the card in ``metadata_props``, atomic saves, node counts, sessions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..artifact.card import ONNX_KEY, ModelCard
from ..errors import CardError, ModelLoadError, first_line


def embed_card(model: Any, card: ModelCard) -> Any:
    """Put ``card`` in the model's ``metadata_props`` under :data:`cnnedge.artifact.card.ONNX_KEY` (replacing any)."""
    props = [p for p in model.metadata_props if p.key != ONNX_KEY]
    del model.metadata_props[:]
    for p in props:
        model.metadata_props.add(key=p.key, value=p.value)
    model.metadata_props.add(key=ONNX_KEY, value=card.to_json())
    return model


def card_from_model(model: Any) -> ModelCard:
    for p in model.metadata_props:
        if p.key == ONNX_KEY:
            return ModelCard.from_json(p.value)
    raise CardError(f"ONNX model has no '{ONNX_KEY}' metadata; it was not written by cnn-export")


def read_card(path: str | os.PathLike) -> ModelCard:
    """The card embedded in an ONNX file (reads the graph header only, no weights needed)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelLoadError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return card_from_model(model)


def load_checked(path: str | os.PathLike) -> Any:
    """A third-party ONNX classifier: loaded (external data only from inside its folder, as onnx enforces) and
    checked to have one input and one output."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    inputs = [i.name for i in fed_inputs(model)]
    if len(inputs) != 1:
        raise ModelLoadError(f"{path}: the graph has {len(inputs)} inputs ({', '.join(inputs)}); cnn-export takes "
                             "image classifiers with one image input")
    if len(model.graph.output) != 1:
        raise ModelLoadError(f"{path}: the graph has {len(model.graph.output)} outputs; cnn-export takes "
                             "classifiers with one output (scores per class)")
    return model


def save(model: Any, path: str | os.PathLike) -> Path:
    """Write an ONNX model atomically (single file; these models are far below 2 GB)."""
    import onnx

    from ..staging import staged_path

    with staged_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    return Path(path)


def node_count(model: Any) -> int:
    return len(model.graph.node)


def fed_inputs(model: Any) -> list[Any]:
    """The graph inputs a caller feeds (old exporters also list initializers as inputs), as ValueInfos."""
    init = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def io_names(model: Any) -> tuple[str, str]:
    inputs = [i.name for i in fed_inputs(model)]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelLoadError(f"expected one input and one output, found {len(inputs)} and {len(model.graph.output)}")
    return inputs[0], model.graph.output[0].name


def session(path_or_bytes: Any, threads: int = 1, optimized_model_path: str | os.PathLike | None = None) -> Any:
    """An ONNX Runtime CPU session (one intra-op thread: steadier latency on small models); with
    ``optimized_model_path`` ONNX Runtime also writes the graph it runs there (its fusions applied)."""
    from .._lazy import require

    ort = require("onnxruntime", "running ONNX models")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    src = str(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) else path_or_bytes
    try:
        return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {path_or_bytes if isinstance(src, str) else 'the model'}: "
                             f"{first_line(exc)}") from None


def canonical_names(model: Any) -> Any:
    """Rename nodes, intermediate tensors and initializers by position (graph inputs and outputs keep theirs).

    tf2onnx and Keras name tensors with per-process counters (``BiasAdd__6`` in one run, ``BiasAdd__44`` in the
    next), which would make identical models differ and cached calibration ranges (keyed by tensor name) miss.
    """
    keep = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    inits = {i.name for i in model.graph.initializer}
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            if name and name in inits and name not in rename:
                rename[name] = f"w{len(rename)}"
        node.name = f"{node.op_type}_{i}"
        for j, name in enumerate(node.output):
            if name and name not in keep:
                rename[name] = f"{node.op_type}_{i}:{j}"
    for init in model.graph.initializer:
        init.name = rename.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for vi in model.graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    params: dict[str, str] = {}
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for k, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.dim_param:
                dim.dim_param = params.setdefault(dim.dim_param, "batch" if k == 0 else f"dim{len(params)}")
    return model
