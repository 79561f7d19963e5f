"""Step 1: a Keras model -> an FP32 ONNX graph, via a ``tf.function`` with an explicit signature.

``tf2onnx.convert.from_keras`` fails on Keras 3 (KeyError on output names), so the
model is wrapped in a ``tf.function`` whose input signature fixes the dtype and
the image shape and leaves the batch dimension dynamic. With ``input_dtype``
"uint8" the graph takes uint8 NHWC pixels and casts them inside; a model that
does not normalise its own input (``card.preprocess.in_graph`` false, a model
from elsewhere) gets the card's ``(x * scale - mean) / std`` folded in front of
it, so every uint8 export takes plain pixels. With "float32" the graph takes
what the model takes (pixels 0..255, or normalised input when the model does
not normalise itself). See :func:`exported_card`.
"""
from __future__ import annotations

import re
from typing import Any

from ..artifact.card import ModelCard
from ..errors import ExportError

DEFAULT_OPSET = 17  # ONNX Runtime >= 1.14 and TensorRT 8.6+/10.x/RTX all read it; Q/DQ per-channel needs >= 13
INPUT_NAME = "images"


def check_image_model(model: Any, card: ModelCard) -> None:
    """Refuse a model whose input is not one NHWC image batch of the card's size."""
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != 1:
        raise ExportError(f"model has {len(inputs)} inputs; cnn-export takes image classifiers with one image input")
    shape = tuple(inputs[0].shape)
    want = (card.input.height, card.input.width, card.input.channels)
    if len(shape) != 4 or tuple(shape[1:]) != want:
        raise ExportError(f"model input shape {shape} is not an image batch of (batch, {want[0]}, {want[1]}, "
                          f"{want[2]}) as its card says; cnn-export takes NHWC image classifiers")
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[1] != card.num_classes:
        found = [tuple(o.shape) for o in outputs]
        raise ExportError(f"model outputs {found} do not match the card's {card.num_classes} classes "
                          f"(expected one (batch, {card.num_classes}) output)")
    if card.input.layout != "NHWC":
        raise ExportError(f"card input layout {card.input.layout}: Keras models here are NHWC")


def exported_card(card: ModelCard, input_dtype: str) -> ModelCard:
    """The card of the ONNX graph :func:`keras_to_onnx` writes from a model with ``card``."""
    if input_dtype == "uint8":  # plain pixels, as OpenCV gives them: normalisation and layout inside the graph
        return card.replace(input={"dtype": "uint8", "layout": "NHWC"}, preprocess={"in_graph": True})
    return card.replace(input={"dtype": input_dtype})


def keras_to_onnx(model: Any, card: ModelCard, input_dtype: str = "uint8", opset: int = DEFAULT_OPSET,
                  output_name: str | None = None) -> Any:
    """Convert; return an ``onnx.ModelProto`` with input ``images`` and one output named after card.output."""
    from .._lazy import require
    from ..tfquiet import keras_warnings_off

    tf = require("tensorflow", "exporting Keras models")
    tf2onnx = require("tf2onnx", "exporting to ONNX")
    check_image_model(model, card)
    out_name = output_name or card.output
    dtype = {"uint8": tf.uint8, "float32": tf.float32}.get(input_dtype)
    if dtype is None:
        raise ExportError(f"input dtype {input_dtype!r}; expected uint8 or float32")
    spec = tf.TensorSpec([None, card.input.height, card.input.width, card.input.channels], dtype, name=INPUT_NAME)

    pre = card.preprocess
    fold = not pre.in_graph and input_dtype == "uint8"  # the host normalisation moves into the graph
    scale, mean, std = (tf.constant(v, tf.float32) for v in (pre.scale, pre.mean, pre.std))

    @tf.function(input_signature=[spec])
    def serve(x):
        x = tf.cast(x, tf.float32)
        if fold:
            x = (x * scale - mean) / std
        with keras_warnings_off():  # runs while tracing: a model built with a list of inputs warns here
            return {out_name: model(x, training=False)}

    import logging

    log = logging.getLogger("tf2onnx")
    level = log.level
    log.setLevel(logging.CRITICAL)  # it logs unsupported ops as errors; they are reported below, in one line
    try:
        constants = _captured_constants(serve.get_concrete_function())
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset)
    except Exception as exc:
        raise ExportError(f"tf2onnx cannot convert the model: {_conversion_reason(exc)}") from None
    finally:
        log.setLevel(level)
    _fold_constant_inputs(proto, constants)
    unknown = sorted({n.op_type for n in proto.graph.node if not _known_op(n.op_type, n.domain)})
    if unknown:  # tf2onnx logs these and still returns a graph that nothing can load
        raise ExportError(f"tf2onnx cannot convert the TensorFlow op(s) {', '.join(unknown)} to ONNX opset "
                          f"{opset}; replace the layer that uses them (or try another --opset)")
    if len(proto.graph.output) != 1:
        raise ExportError(f"converted graph has {len(proto.graph.output)} outputs; expected 1")
    proto.graph.output[0].name  # noqa: B018 - tf2onnx names it after the dict key
    proto.producer_name = "cnnedge"
    return proto


def _captured_constants(concrete: Any) -> dict[str, Any]:
    """Tensors the traced function captured by value (not variables): name in the graph -> numpy value.

    Keras' ``Normalization(mean=..., variance=...)`` keeps its statistics as such tensors; tf2onnx leaves
    them as extra graph inputs, which nothing feeds.
    """
    import tensorflow as tf

    return {placeholder.name: value.numpy() for value, placeholder in concrete.graph.captures
            if value.dtype != tf.resource and hasattr(value, "numpy")}


def _fold_constant_inputs(proto: Any, constants: dict[str, Any]) -> None:
    """Turn graph inputs that are captured constants into initializers; refuse any other extra input."""
    from onnx import numpy_helper

    keep = []
    for inp in proto.graph.input:
        if inp.name in constants:
            proto.graph.initializer.append(numpy_helper.from_array(constants[inp.name], inp.name))
        else:
            keep.append(inp)
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    extra = [i.name for i in keep if i.name != INPUT_NAME]
    if extra:
        raise ExportError(f"converted graph has inputs besides {INPUT_NAME!r}: {', '.join(extra)}; the model "
                          "takes something other than the image (a state or a second input?)")


def _known_op(op_type: str, domain: str) -> bool:
    import onnx

    if domain not in ("", "ai.onnx"):
        return domain == "ai.onnx.ml" and onnx.defs.has(op_type, domain)
    return onnx.defs.has(op_type)


def _conversion_reason(exc: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    errors = re.findall(r"^\s*(?:\w+Error|\w+Exception): (.*)$", text, flags=re.M)
    if "in user code" in text and errors:  # a TensorFlow trace: the innermost error is the reason
        tail = text[text.rindex(errors[-1]):].strip().splitlines()
        detail = next((ln.strip() for ln in tail[1:] if ln.strip()), "")
        return f"{errors[-1].strip()} {detail}".strip()[:300]
    ops = re.findall(r"(?:op|Op)\s*\[?'?([A-Za-z0-9_]+)'?\]?\s*(?:is not supported|not supported)", text)
    counter = re.findall(r"Unsupported ops: Counter\(\{([^}]*)\}", text)
    if counter:
        return f"unsupported TensorFlow op(s) {counter[0]}"
    if ops:
        return f"unsupported TensorFlow op {', '.join(sorted(set(ops)))}"
    first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return first
