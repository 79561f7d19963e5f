"""cnnedge: image-classification CNNs from training to the edge.

``from cnnedge import Classifier`` is the runtime API; it is imported lazily so
that ``import cnnedge`` stays light.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Classifier", "ModelCard", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from .runtime import Classifier

        return Classifier
    if name == "ModelCard":
        from .artifact.card import ModelCard

        return ModelCard
    raise AttributeError(f"module 'cnnedge' has no attribute {name!r}")
