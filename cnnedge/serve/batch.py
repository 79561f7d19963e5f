"""One server batch of requests through a Classifier: each request's images decoded as cnn-infer
decodes them, one inference for every request that decoded, a per-request error for the others.

Independent of any server: the Triton entry (:mod:`.triton_python`) only moves tensors in and out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import CnnEdgeError, first_line


@dataclass(frozen=True)
class Answer:
    """What one request gets: scores per image, the top class's index and score; or ``error`` (one line)."""

    probabilities: np.ndarray | None = None
    classes: np.ndarray | None = None
    scores: np.ndarray | None = None
    error: str | None = None


def request_pixels(clf: Any, images: np.ndarray | None, pixels: np.ndarray | None) -> np.ndarray:
    """One request's prepared NHWC uint8 pixels: encoded ``images`` (uint8 [n, bytes], one encoded image a
    row) decoded and prepared by ``clf.decode_pixels`` (cnn-infer's path for files), or ``pixels``
    already prepared. Raises CnnEdgeError naming the bad row."""
    if (images is None) == (pixels is None):
        raise CnnEdgeError("send exactly one of the inputs IMAGE (encoded JPEG/PNG bytes) and PIXELS "
                           "(prepared uint8 pixels)")
    if pixels is not None:
        h, w = clf.input_size
        want = (h, w, clf.card.input.channels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != want:
            raise CnnEdgeError(f"PIXELS must be uint8 [batch, {', '.join(map(str, want))}], got {pixels.dtype} "
                               f"{list(pixels.shape)}")
        return np.ascontiguousarray(pixels)
    if images.dtype != np.uint8 or images.ndim != 2:  # type: ignore[union-attr]
        raise CnnEdgeError(f"IMAGE must be uint8 [batch, bytes] (one encoded image a row), got "
                           f"{images.dtype} {list(images.shape)}")  # type: ignore[union-attr]
    out = []
    for i, row in enumerate(images):  # type: ignore[union-attr]
        try:
            out.append(clf.decode_pixels(row.tobytes()))
        except CnnEdgeError as exc:
            raise CnnEdgeError(f"IMAGE row {i}: {first_line(exc)}") from None
    return np.stack(out)


def answer_batch(clf: Any, requests: Sequence[tuple[np.ndarray | None, np.ndarray | None]]) -> list[Answer]:
    """``(images, pixels)`` per request -> an Answer per request, in order. A request whose input is
    bad gets its error; the others share one inference of up to the server's batch."""
    prepared: list[np.ndarray | None] = []
    answers: list[Answer | None] = []
    for images, pixels in requests:
        try:
            prepared.append(request_pixels(clf, images, pixels))
            answers.append(None)
        except CnnEdgeError as exc:
            prepared.append(None)
            answers.append(Answer(error=str(exc)))
    good = [p for p in prepared if p is not None]
    if not good:
        return [a for a in answers if a is not None]
    probs = np.ascontiguousarray(clf.probabilities(np.asarray(clf.infer_pixels(np.concatenate(good)))))
    top = probs.argmax(axis=1)[:, None]  # the class and score postprocess(topk=1) would give
    start = 0
    out = []
    for p, a in zip(prepared, answers):
        if p is None:
            out.append(a)
            continue
        rows = slice(start, start + len(p))
        start += len(p)
        out.append(Answer(probs[rows], top[rows].astype(np.int32),
                          np.take_along_axis(probs[rows], top[rows], axis=1)))
    return out
