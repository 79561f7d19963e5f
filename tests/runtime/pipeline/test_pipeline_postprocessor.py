"""The Postprocessor (issue 29): one implementation of softmax and top-k for the Classifier and the
pipeline; an image alone (predict's plain-Python path) and in a batch get the same Prediction."""
from __future__ import annotations

import numpy as np
import pytest

from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess
from cnnedge.errors import CardError, UsageError
from cnnedge.runtime.pipeline import Postprocessor


def _card(n: int, output: str) -> ModelCard:
    return ModelCard(name="m", classes=tuple(f"c{i}" for i in range(n)), input=InputSpec(8, 8, 3, "NHWC", "uint8"),
                     preprocess=Preprocess(in_graph=True), output=output)


@pytest.mark.parametrize("n", [3, 10, 100])
@pytest.mark.parametrize("output", ["logits", "probabilities"])
def test_one_image_and_a_batch_agree(n, output):
    out = np.random.default_rng(n).normal(size=(4, n)).astype(np.float32)
    if output == "probabilities":
        out = np.exp(out) / np.exp(out).sum(1, keepdims=True)
    post = Postprocessor.from_card(_card(n, output), topk=3, where="m.onnx")
    for k in (1, 3, n + 2):
        batch = post(out, k)
        for row, want in zip(out, batch):
            got = post.one(row, k)
            assert (got.label, got.index) == (want.label, want.index)
            assert [c for c, _ in got.topk] == [c for c, _ in want.topk] and len(got.topk) == min(k, n)
            assert np.allclose([s for _, s in got.topk], [s for _, s in want.topk], atol=1e-6)
    assert len(post(out)[0].topk) == 3  # its own top-k when the call names none
    if output == "logits":
        assert np.allclose(post.probabilities(out).sum(1), 1.0, atol=1e-5)


def test_a_wrong_width_and_a_bad_topk_say_so():
    post = Postprocessor.from_card(_card(3, "logits"), where="m.onnx")
    with pytest.raises(CardError, match="m.onnx: the model output has 4 values per image, the card names 3"):
        post(np.zeros((1, 4), np.float32))
    with pytest.raises(UsageError, match="topk must be a whole number >= 1"):
        Postprocessor.from_card(_card(3, "logits"), topk=0)
