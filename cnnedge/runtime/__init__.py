"""The light runtime: preprocessing, backends, sources, pipeline, sinks and the Classifier API.

Importing this package imports neither TensorFlow/Keras nor TensorRT: heavy
packages load inside the functions that need them.

- :class:`Classifier` (``cnnedge.runtime.classifier``): load a model, predict, stream.
- :func:`load_backend` (``cnnedge.runtime.backends``): the backend interface.
- :func:`open_source` (``cnnedge.runtime.sources``): images, folders, videos, cameras, streams.
- :func:`cnnedge.runtime.pipeline.run`: a backend and its card over sources, a batch of Results at a time;
  the one way into the pipeline, which ``Classifier.stream`` and :func:`run` go through.
- :func:`run` (``cnnedge.runtime.runner``): sources through a model into sinks, as cnn-infer does.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Classifier", "Prediction", "Result", "RunSummary", "load_backend", "open_source", "run"]

_WHERE = {
    "Classifier": "classifier", "Prediction": "results", "Result": "results",
    "CardMissingWarning": "card_resolution", "OutputKindWarning": "card_resolution", "load_backend": "backends",
    "open_source": "sources", "run": "runner", "RunSummary": "runner",
}
_GONE = {"run_pipeline": "Classifier.stream(source, ...), or cnnedge.runtime.pipeline.run(clf.backend, clf.card, "
                         "source, ...) for a list of Results per inference call"}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        instead = f"; use {_GONE[name]}" if name in _GONE else ""
        raise AttributeError(f"module 'cnnedge.runtime' has no attribute {name!r}{instead}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
