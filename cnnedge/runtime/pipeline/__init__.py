"""The batched pipeline, one small type per stage; :func:`run` is the one way in.

    sources -> Batcher (batcher.py) -> decode stage: Decoder -> Batch (decoders.py; the CPU pool in
    runtime/decodepool.py, the GPU decoder in runtime/gpu_decode.py) -> InferenceStage (inference.py)
    -> ResultMaker (results.py) -> the caller: sinks, a batch at a time

The Preprocessor (preprocessor.py) is built from the card, so no stage reads the Classifier;
run (wiring.py) builds the stages and connects them.
"""
from __future__ import annotations

from .batch import END_OF_INPUT, Batch, DeviceBuffer
from .batcher import Batcher
from .decoders import Decoder, DecodeStage, HostDecoder, OrderedStage
from .inference import InferenceStage, Inferred
from .preprocessor import Preprocessor
from .results import NONFINITE, ResultMaker
from .stats import PipelineStats
from .wiring import DECODE_MODES, FILE_BATCH, LIVE_BATCH, default_batch, default_workers, run

__all__ = ["Batch", "Batcher", "DECODE_MODES", "DecodeStage", "Decoder", "DeviceBuffer", "END_OF_INPUT",
           "FILE_BATCH", "HostDecoder", "InferenceStage", "Inferred", "LIVE_BATCH", "NONFINITE", "OrderedStage",
           "PipelineStats", "Preprocessor", "ResultMaker", "default_batch", "default_workers", "run"]
