"""A backend that answers every batch with a stored output: the runtime's own cost, without a model's.

Composed around a real backend (it takes that backend's specs, batch limits and
card, and never calls it), so a benchmark can measure what the Classifier adds
over the inference call (colour swap, checks, top-k, the Prediction) through
public API only::

    real = load_backend("model.onnx")
    stored = real.infer(x)
    clf = Classifier(ReplayBackend(real, stored))   # predict() now costs only cnnedge's Python
"""
from __future__ import annotations

import numpy as np

from ...errors import UsageError
from .base import Backend, Slot


class ReplayBackend(Backend):
    """Returns ``output`` (rows repeated to the batch size when it has fewer) for every batch.

    The specs, batch limits and card are ``real``'s; ``close()`` closes ``real`` too.
    """

    def __init__(self, real: Backend, output: np.ndarray) -> None:
        super().__init__()
        self.real = real
        self.name, self.path = f"replay:{real.name}", real.path
        self.input_spec, self.output_spec, self.card = real.input_spec, real.output_spec, real.card
        self.fixed_batch, self.max_batch, self.min_batch = real.fixed_batch, real.max_batch, real.min_batch
        self.output = np.ascontiguousarray(output)
        if self.output.ndim < 1 or self.output.shape[0] < 1:
            raise ValueError("ReplayBackend needs an output with at least one row")

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n == self.output.shape[0]:
            return self.output
        return np.repeat(self.output[:1], n, axis=0)

    def _make_slot(self) -> Slot | None:
        base = super()._make_slot()
        return None if base is None else Slot(self, base.input, self._first_row)

    def _first_row(self) -> np.ndarray:
        """A slot's run: the stored output's first row, after the closed check every call makes (nothing
        to free under it, so no in-flight count)."""
        if self._closed:
            raise UsageError(f"{self.name} backend for {self.path} is closed")
        return self.output[:1]

    def _close_impl(self) -> None:
        self.real.close()
