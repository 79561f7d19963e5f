"""cnnedge's runtime as a Triton Python-backend model (the ``_cnnedge`` entries of ``cnn-export --triton``).

Each entry's ``1/model.py`` imports :class:`TritonPythonModel` from here; the server's Python
must have cnnedge installed. Inputs: ``IMAGE`` (an encoded JPEG/PNG file as uint8 [1, bytes]) or
``PIXELS`` (prepared HxWxC uint8 pixels). Outputs: ``PROBABILITIES`` (with the entry's labels.txt:
ask it with ``class_count=1`` for "score:index:label"), ``CLASS`` (top index) and ``SCORE``.

Every tensor crosses by DLPack, both ways: the backend stub of the pytriton 0.7.0 wheel is built for
numpy < 2, and with numpy 2 its ``as_numpy()`` / ``Tensor(name, array)`` pass wrong data silently.
That is also why the images come as uint8, not TYPE_STRING (which cannot cross by DLPack): the stub
deserialises a string tensor through the same broken copy before any model code runs (measured: every
byte became the first one, and the stub died).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact.kinds import BACKEND_CHOICES
from ..errors import CnnEdgeError, first_line
from .batch import Answer, answer_batch

IMAGE, PIXELS = "IMAGE", "PIXELS"
PROBABILITIES, CLASS, SCORE = "PROBABILITIES", "CLASS", "SCORE"


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside Triton's Python backend

    return pb_utils


def load_entry(args: dict[str, str]) -> Any:
    """The Classifier of the entry Triton is initialising: ``parameters.artifact`` in its config, in
    the version folder, run by ``parameters.backend`` (``auto`` when absent, as in entries exported before it:
    on a CPU instance, the CPU engine measured at the entry's ``max_batch_size``); on a GPU instance, that GPU. A
    refusal is one line naming the artifact."""
    from ..runtime import Classifier

    config = json.loads(args["model_config"])
    params = config.get("parameters", {})
    artifact = params.get("artifact", {}).get("string_value")
    if not artifact:
        raise CnnEdgeError(f"{args['model_name']}: config.pbtxt names no artifact (parameters "
                           '{ key: "artifact" ... }); re-export with cnn-export --triton')
    backend = params.get("backend", {}).get("string_value") or "auto"
    if backend not in BACKEND_CHOICES:
        raise CnnEdgeError(f"{args['model_name']}: config.pbtxt's parameter backend is {backend!r}; use one of "
                           f"{', '.join(BACKEND_CHOICES)}")
    path = Path(args["model_repository"]) / args["model_version"] / artifact
    opts = {"device_id": int(args["model_instance_device_id"])} if args.get("model_instance_kind") == "GPU" else {}
    batch = max(1, int(config.get("max_batch_size") or 1))  # auto times the CPU engines at it
    try:
        return Classifier(path, backend, batch=batch, **opts)
    except CnnEdgeError as exc:
        raise CnnEdgeError(f"{args['model_name']}: cannot serve {path.name}: {first_line(exc)}") from None


def _input(pb: Any, request: Any, name: str) -> np.ndarray | None:
    t = pb.get_input_tensor_by_name(request, name)
    return None if t is None else np.from_dlpack(t)


def _response(pb: Any, a: Answer) -> Any:
    if a.error is not None:
        return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(a.error))
    return pb.InferenceResponse(output_tensors=[
        pb.Tensor.from_dlpack(PROBABILITIES, np.ascontiguousarray(a.probabilities, np.float32)),
        pb.Tensor.from_dlpack(CLASS, np.ascontiguousarray(a.classes, np.int32)),
        pb.Tensor.from_dlpack(SCORE, np.ascontiguousarray(a.scores, np.float32))])


class TritonPythonModel:
    """Triton's Python-backend interface: one Classifier per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        self.clf = load_entry(args)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = _pb()
        asked = [(_input(pb, r, IMAGE), _input(pb, r, PIXELS)) for r in requests]
        return [_response(pb, a) for a in answer_batch(self.clf, asked)]

    def finalize(self) -> None:
        self.clf.close()
