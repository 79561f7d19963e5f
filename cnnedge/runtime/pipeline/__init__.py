"""The batched pipeline, one small type per stage; :func:`run` is the one way in.

    sources -> Batcher (batcher.py) -> decode stage: Decoder -> Batch (decoders.py; the CPU pool in
    decode_pool.py, its worker processes in decode_worker.py, the GPU decoder in gpu_decoder.py)
    -> InferenceStage (inference.py)
    -> ResultMaker (results.py) -> the caller: sinks, a batch at a time

The Preprocessor (preprocessor.py) and the Postprocessor (postprocessor.py) are built from the card,
so no stage reads the Classifier; run (wiring.py) takes a backend and its card, builds the stages and
connects them.

Names load on first use, so that a decode worker (``python -m cnnedge.runtime.pipeline.decode_pool``)
imports only what it runs.
"""
from __future__ import annotations

from typing import Any

_WHERE = {
    "Batch": "batch", "DeviceBuffer": "batch", "END_OF_INPUT": "batch", "Batcher": "batcher",
    "DecodeStage": "decoders", "Decoder": "decoders", "HostDecoder": "decoders", "OrderedStage": "decoders",
    "InferenceStage": "inference", "Inferred": "inference", "Preprocessor": "preprocessor",
    "Postprocessor": "postprocessor",
    "NONFINITE": "results", "ResultMaker": "results", "PipelineStats": "stats",
    "DECODE_MODES": "wiring", "FILE_BATCH": "wiring", "LIVE_BATCH": "wiring", "default_batch": "wiring",
    "default_workers": "wiring", "planned_batch": "wiring", "run": "wiring",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'cnnedge.runtime.pipeline' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
