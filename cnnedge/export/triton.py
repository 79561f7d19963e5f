"""``--triton REPO``: a Triton Inference Server model repository entry per artifact.

``REPO/<name>/config.pbtxt``, ``REPO/<name>/1/model.onnx`` (or ``model.plan``) and
``REPO/<name>/labels.txt`` from the card. Engines built with TensorRT-RTX are
left out: Triton's TensorRT backend loads plans of full TensorRT only.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..card import ModelCard

_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}


@dataclass(frozen=True)
class TritonModel:
    name: str
    artifact: Path
    platform: str  # onnxruntime_onnx | tensorrt_plan
    input_name: str
    output_name: str


def model_name(card: ModelCard, precision: str, engine: bool) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", card.name) or "model"
    if precision != "fp32":
        base += f"_{precision}"
    return base + ("_trt" if engine else "")


def config_text(m: TritonModel, card: ModelCard, max_batch: int) -> str:
    dims = ", ".join(str(d) for d in card.input.shape)
    return (f'name: "{m.name}"\n'
            f'platform: "{m.platform}"\n'
            f"max_batch_size: {max_batch}\n"
            "input [\n"
            "  {\n"
            f'    name: "{m.input_name}"\n'
            f"    data_type: {_TYPES[card.input.dtype]}\n"
            f"    format: {'FORMAT_NHWC' if card.input.layout == 'NHWC' else 'FORMAT_NCHW'}\n"
            f"    dims: [ {dims} ]\n"
            "  }\n"
            "]\n"
            "output [\n"
            "  {\n"
            f'    name: "{m.output_name}"\n'
            "    data_type: TYPE_FP32\n"
            f"    dims: [ {card.num_classes} ]\n"
            '    label_filename: "labels.txt"\n'
            "  }\n"
            "]\n"
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {', '.join(str(b) for b in sorted({max(1, max_batch // 4), max_batch}))} ]\n"
            "  max_queue_delay_microseconds: 500\n"
            "}\n"
            "instance_group [ { kind: KIND_AUTO } ]\n")


def write_model(repo: Path, m: TritonModel, card: ModelCard, max_batch: int, force: bool) -> Path:
    """Write one model directory atomically file by file; refuses to overwrite without ``force``."""
    from ..atomic import atomic_path, refuse_overwrite, write_text

    d = repo / m.name
    target = d / "1" / ("model.plan" if m.platform == "tensorrt_plan" else "model.onnx")
    for p in (d / "config.pbtxt", target):
        refuse_overwrite(p, force)
    with atomic_path(target) as tmp:
        shutil.copyfile(m.artifact, tmp)
    write_text(d / "labels.txt", "\n".join(card.classes) + "\n")
    write_text(d / "config.pbtxt", config_text(m, card, max_batch))
    return d
