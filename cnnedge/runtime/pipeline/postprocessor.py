"""The card's post-processing as one object: raw model output -> class probabilities -> Predictions.

Beside the :class:`~.preprocessor.Preprocessor`: both are built from the card, so the pipeline's
results stage and the Classifier's predict, predict_batch and postprocess share one implementation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...artifact.card import ModelCard
from ...errors import CardError, UsageError
from ..results import Prediction

DEFAULT_TOPK = 5
ROW_AT_A_TIME = 64  # up to this many classes one image is post-processed in plain Python: fewer numpy calls


def check_topk(k: Any) -> int:
    """``k`` when it is a whole number >= 1 (a top-k list has at least the top class), else UsageError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"topk must be a whole number >= 1, got {k!r}")
    return int(k)


@dataclass(frozen=True)
class Postprocessor:
    """The card's classes and output kind (a softmax only for logits), and the top-k length used when
    a call names none. ``where``: the artifact, for messages."""

    classes: tuple[str, ...]
    logits: bool
    topk: int = DEFAULT_TOPK
    where: str = "the model"

    @classmethod
    def from_card(cls, card: ModelCard, topk: Any = DEFAULT_TOPK, where: str = "the model") -> "Postprocessor":
        return cls(tuple(card.classes), card.output == "logits", check_topk(topk), where)

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        """Model output -> one float32 row of class probabilities per image."""
        out = out.reshape(out.shape[0], -1)
        if out.shape[1] != len(self.classes):
            raise CardError(f"{self.where}: the model output has {out.shape[1]} values per image, the card "
                            f"names {len(self.classes)} classes")
        if not self.logits:
            return out.astype(np.float32, copy=False)
        z = out.astype(np.float32) - out.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def __call__(self, out: np.ndarray, topk: Any = None) -> list[Prediction]:
        """A batch's output -> one Prediction per image, in one vectorised pass."""
        k = min(self.topk if topk is None else check_topk(topk), len(self.classes))
        out = self.probabilities(out)
        if k == 1:
            idx = out.argmax(axis=1)[:, None]
        else:
            idx = np.argsort(-out, axis=1, kind="stable")[:, :k]
        classes, preds = self.classes, []
        for ids, scores in zip(idx.tolist(), np.take_along_axis(out, idx, axis=1).tolist()):
            top = [(classes[i], s) for i, s in zip(ids, scores)]
            preds.append(Prediction(top[0][0], top[0][1], ids[0], top))
        return preds

    def one(self, row: np.ndarray, k: int) -> Prediction:
        """One image's flat output -> its Prediction (``k`` already checked): the same arithmetic as a
        batch, in plain Python for small class counts, where a call costs less than numpy's."""
        n = len(self.classes)
        if row.shape[0] != n or n > ROW_AT_A_TIME:
            return self(row[None], k)[0]
        vals = row.tolist()
        if self.logits:
            m = max(vals)
            e = [math.exp(v - m) for v in vals]
            t = sum(e)
            vals = [v / t for v in e]
        if k == 1:
            order = [vals.index(max(vals))]
        else:
            order = sorted(range(n), key=vals.__getitem__, reverse=True)[:k]
        classes = self.classes
        top = [(classes[i], vals[i]) for i in order]
        return Prediction(top[0][0], top[0][1], order[0], top)
