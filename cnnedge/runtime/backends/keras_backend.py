"""Keras backend: a ``.keras`` model behind the runtime's backend interface, so that the tools that take any
artifact (cnn-infer, cnn-bench and its tutorial baselines, which call its ``model``) run the training model too."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact.card import ModelCard, card_path_for
from ...errors import ModelLoadError
from .base import Backend, TensorSpec


class KerasBackend(Backend):
    """A ``.keras`` model loaded in safe mode, called through one ``tf.function``.

    Options: ``trust`` (allow legacy ``.h5``), ``custom_objects``.
    """

    name = "keras"

    def __init__(self, path: str | os.PathLike, *, trust: bool = False, custom_objects: dict | None = None) -> None:
        super().__init__()
        from ...keras_io import load_keras_model
        from ..._lazy import require

        p = Path(path)
        self.path = str(p)
        self.model = load_keras_model(p, trust=trust, custom_objects=custom_objects)
        tf = require("tensorflow", "Keras models")
        inputs = self.model.inputs
        if len(inputs) != 1:
            raise ModelLoadError(f"{p}: a classifier has one input, this model has {len(inputs)}")
        shape = tuple(None if d is None else int(d) for d in inputs[0].shape)
        dtype = np.dtype(getattr(inputs[0], "dtype", "float32") or "float32").name
        self.input_spec = TensorSpec(getattr(inputs[0], "name", "input") or "input", shape, dtype)
        out_shape = tuple(None if d is None else int(d) for d in self.model.outputs[0].shape)
        self.output_spec = TensorSpec("output", out_shape, "float32")
        self.fixed_batch = shape[0]
        model = self.model
        sig = [tf.TensorSpec((None,) + shape[1:], dtype)]
        self._fn = tf.function(lambda x: _call(model, x), input_signature=sig, reduce_retracing=True)
        self._lock = threading.Lock()
        card_file = card_path_for(p)
        self.card = ModelCard.load(card_file) if card_file.is_file() else None

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self._fn(batch))

    def _close_impl(self) -> None:
        self.model = None
        self._fn = None


def _call(model: Any, x: Any) -> Any:
    from ...tfquiet import keras_warnings_off

    with keras_warnings_off():  # runs while tracing: a model built with a list of inputs warns here
        return model(x, training=False)
