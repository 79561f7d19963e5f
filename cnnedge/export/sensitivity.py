"""Which layers lose most in int8: the noise each adds, measured against FP32 on calibration images, and the
multiply-adds each costs, which the layer fallback (:mod:`.layer_fallback`) ranks and records."""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

from . import saturation
from .calibration import CALIBRATION_BATCH, Batches, rebatch

# activations the CPU quantizer removes, clipping with the Q that follows instead
FOLDED_ACTIVATIONS = ("Relu", "Clip")
SENSITIVITY_IMAGES = 64  # calibration images the per-layer errors are measured on: every intermediate is held


def sensitivity(pre: Path, quantized: Path, batches: Batches, batch: int | None) -> list[tuple[str, str, float]]:
    """The compute layers of the pre-processed FP32 graph ``pre``, those that lose most in int8 first, each with
    the noise it adds: its output's noise-to-signal power ratio in ``quantized`` (against the FP32 tensor, over
    the first :data:`SENSITIVITY_IMAGES` calibration images; per channel, then averaged, so that one loud channel
    cannot hide the others' loss) minus that of its input *before* the layer's own input quantization. So a layer
    is charged with what keeping it float removes: the quantization of its input and weights, and its arithmetic
    on them (ONNX Runtime's ``qdq_loss_debug`` measures the same per tensor).
    Layers are matched by node name (the quantizer keeps them); sums stream, so memory holds one batch."""
    import onnx

    from . import onnx_io

    fg, qg = onnx.load(str(pre)).graph, onnx.load(str(quantized)).graph
    qnodes = {n.name: n for n in qg.node}
    producer = {o: n for n in qg.node for o in n.output}
    inputs = {i.name for i in qg.input}
    f_producer = {o: n for n in fg.node for o in n.output}
    pairs: list[tuple[Any, tuple[str, str], tuple[str, str]]] = []  # layer, (float, quant) before, (.., ..) after
    for layer in fg.node:
        q = qnodes.get(layer.name)
        if layer.op_type not in saturation.WEIGHTED_OPS or q is None or not layer.input or not q.input:
            continue
        src = q.input[0]
        dq = producer.get(src)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in producer \
                and producer[dq.input[0]].op_type == "QuantizeLinear":
            src = producer[dq.input[0]].input[0]
        pairs.append((layer, (_before(layer, src, f_producer, qnodes), src), _after(layer, q, fg, qnodes, qg)))
    wanted_f = list(dict.fromkeys(t for _, *ps in pairs for t, _ in ps))
    wanted_q = list(dict.fromkeys(t for _, *ps in pairs for _, t in ps if t not in inputs))
    fs, qs = (onnx_io.session(_with_outputs(p, w).SerializeToString()) for p, w in ((pre, wanted_f),
                                                                                   (quantized, wanted_q)))
    input_name = fs.get_inputs()[0].name
    signal: dict[tuple[str, str], Any] = collections.defaultdict(float)  # per channel (axis 1)
    noise: dict[tuple[str, str], Any] = collections.defaultdict(float)
    seen = 0
    for b in rebatch(batches(), batch or CALIBRATION_BATCH, tail=batch is None):
        if seen >= SENSITIVITY_IMAGES:
            break
        seen += len(b)
        ref = dict(zip(wanted_f, fs.run(wanted_f, {input_name: b})))
        got = {**dict(zip(wanted_q, qs.run(wanted_q, {input_name: b}))), **{i: b for i in inputs}}
        for _, *ps in pairs:
            for pair in ps:
                f, q = np.asarray(ref[pair[0]], np.float64), np.asarray(got[pair[1]], np.float64)
                if f.shape != q.shape:
                    continue
                axes = tuple(i for i in range(f.ndim) if i != 1)
                signal[pair] = signal[pair] + np.sum(f * f, axis=axes)
                noise[pair] = noise[pair] + np.sum((f - q) ** 2, axis=axes)

    def nsr(pair: tuple[str, str]) -> float:
        s, n = np.atleast_1d(signal[pair]), np.atleast_1d(noise[pair])
        live = s > 0  # a channel that is always zero carries nothing to lose
        return float(np.mean(np.minimum(n[live] / s[live], 1.0))) if live.any() else 0.0

    ranked = [(layer.name, layer.op_type, nsr(after) - nsr(before)) for layer, before, after in pairs
              if np.any(np.atleast_1d(signal[after]) > 0)]
    return sorted(ranked, key=lambda r: -r[2])


def _before(layer: Any, src: str, f_producer: dict[str, Any], qnodes: dict[str, Any]) -> str:
    """The FP32 tensor a layer's input is judged against before its own quantization (``src`` in the quantized
    file): the input itself, or, where the quantizer folded the Relu or Clip before it into that quantization, the
    activation's unclipped input: the producer then writes the activation's output name, unclipped, into the Q,
    and the clipping is part of what the layer's input quantization does."""
    act = f_producer.get(layer.input[0])
    if act is not None and act.op_type in FOLDED_ACTIVATIONS and act.name not in qnodes and src in act.output:
        return act.input[0]
    return layer.input[0]


def _after(layer: Any, q: Any, fg: Any, qnodes: dict[str, Any], qg: Any) -> tuple[str, str]:
    """The (FP32 tensor, quantized tensor) pair a layer's output is judged on: after its output's own Q/DQ, where
    the quantized file has one (keeping the layer float removes it too); against the FP32 Relu's or Clip's (ReLU6)
    output where the quantizer folded it into the Q (a uint8 zero point at 0 clips as Relu does, and the Q's range
    ends at the Clip's maximum): compared with the unclipped output, that clipping read as noise (MobileNetV2:
    every expand conv before a ReLU6 charged ~0.5, the conv after it less than nothing)."""
    f_out, q_out = layer.output[0], q.output[0]
    consumers = [n for n in qg.node if q_out in n.input]
    if len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear":
        dq = [n for n in qg.node if consumers[0].output[0] in n.input and n.op_type == "DequantizeLinear"]
        if dq:
            q_out = dq[0].output[0]
    f_next = [n for n in fg.node if f_out in n.input]
    if len(f_next) == 1 and f_next[0].op_type in FOLDED_ACTIVATIONS and f_next[0].name not in qnodes:
        f_out = f_next[0].output[0]
    return f_out, q_out


def _with_outputs(path: Path, names: list[str]) -> Any:
    """The model at ``path`` with the float tensors ``names`` (those it has) added to its outputs."""
    import onnx

    model = onnx.load(str(path))
    produced = {o for n in model.graph.node for o in n.output}
    present = {o.name for o in model.graph.output}
    for t in names:
        if t in produced and t not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return model


def mac_counts(graph: Any) -> dict[str, int]:
    """Multiply-adds per image of each Conv/Gemm/MatMul with a constant weight, from the shapes ONNX's shape
    inference left in ``graph`` (a layer whose shape is unknown counts 0)."""
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.output]}
    weights = {i.name: list(i.dims) for i in graph.initializer}
    counts = {}
    for n in graph.node:
        if n.op_type not in saturation.WEIGHTED_OPS or len(n.input) < 2 or n.input[1] not in weights:
            continue
        w, out = weights[n.input[1]], shapes.get(n.output[0], [])
        if n.op_type in ("Conv", "ConvTranspose"):
            counts[n.name] = int(np.prod(out[1:])) * int(np.prod(w[1:])) if out and all(out[1:]) else 0
        else:
            counts[n.name] = int(np.prod(w)) * (int(np.prod(out[1:-1])) if len(out) > 2 and all(out[1:-1]) else 1)
    return counts
