"""``--triton REPO``: Triton Inference Server model repository entries, two kinds per artifact.

- ``<name>_onnxruntime`` / ``<name>_tensorrt``: the artifact on Triton's own ONNX Runtime or TensorRT
  backend (the full Triton container on a GPU server; the model's own uint8 tensor in). Plans built
  with TensorRT-RTX have no such entry: Triton's TensorRT backend loads plans of full TensorRT only.
- ``<name>_cnnedge`` / ``<name>_engine_cnnedge``: Triton's Python backend running cnnedge's runtime
  (:mod:`cnnedge.serve.triton_python`) on any artifact, TensorRT-RTX plans included; encoded images in,
  decoded and preprocessed as cnn-infer does. Any Triton with the Python backend serves it, the
  ``nvidia-pytriton`` wheel's server included, with cnnedge installed in the server's Python.

Each entry: ``REPO/<name>/config.pbtxt``, ``labels.txt`` from the card, ``1/`` with the artifact
(``model.onnx`` or ``model.plan`` for Triton's backends; the artifact under its own name, its sidecar
and ``model.py`` for cnnedge's).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..card import ModelCard, card_path_for

_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
#: entry kind -> (name suffix, config line saying what runs it)
KINDS = {
    "onnxruntime": ("_onnxruntime", 'platform: "onnxruntime_onnx"'),
    "tensorrt": ("_tensorrt", 'platform: "tensorrt_plan"'),
    "cnnedge": ("_cnnedge", 'backend: "python"'),
    "cnnedge-engine": ("_engine_cnnedge", 'backend: "python"'),
}
#: the Python backend's model.py of a cnnedge entry
ENTRY_SOURCE = '''"""Triton Python-backend entry written by cnn-export --triton: cnnedge's runtime serves the artifact
named in config.pbtxt (needs cnnedge installed in the Python that Triton's backend stub runs)."""
from cnnedge.serve.triton_python import TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class TritonModel:
    name: str
    artifact: Path
    kind: str  # a key of KINDS
    input_name: str
    output_name: str


def model_name(card: ModelCard, precision: str, kind: str) -> str:
    """``<card name>[_<precision>]<kind suffix>``, e.g. digits-cnn_fp16_tensorrt, digits-cnn_cnnedge."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", card.name) or "model"
    if precision != "fp32":
        base += f"_{precision}"
    return base + KINDS[kind][0]


def planned_names(card: ModelCard, precisions: list[str], engines: bool) -> list[str]:
    """The entries an export with these precisions (and engines) may write: checked before exporting."""
    kinds = ["onnxruntime", "cnnedge"] + (["tensorrt", "cnnedge-engine"] if engines else [])
    return [model_name(card, p, k) for p in precisions for k in kinds]


def _batching(max_batch: int) -> str:
    preferred = ", ".join(str(b) for b in sorted({max(1, max_batch // 4), max_batch}))
    return ("dynamic_batching {\n"
            f"  preferred_batch_size: [ {preferred} ]\n"
            "  max_queue_delay_microseconds: 500\n"
            "}\n")


def config_text(m: TritonModel, card: ModelCard, max_batch: int) -> str:
    """config.pbtxt of an entry on Triton's ONNX Runtime or TensorRT backend."""
    dims = ", ".join(str(d) for d in card.input.shape)
    return (f'name: "{m.name}"\n'
            f"{KINDS[m.kind][1]}\n"
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
            + _batching(max_batch)
            + "instance_group [ { kind: KIND_AUTO } ]\n")


def cnnedge_config_text(m: TritonModel, card: ModelCard, max_batch: int, instances: int = 2) -> str:
    """config.pbtxt of a cnnedge entry: IMAGE (an encoded file as uint8 [1, bytes]; ragged, so files of
    any size batch together) or PIXELS (prepared uint8) in; two instances, so that one decodes while
    the other infers."""
    spec = card.input
    return (f'name: "{m.name}"\n'
            f"{KINDS[m.kind][1]}\n"
            f"max_batch_size: {max_batch}\n"
            "input [\n"
            '  { name: "IMAGE", data_type: TYPE_UINT8, dims: [ -1 ], optional: true, allow_ragged_batch: true },\n'
            f'  {{ name: "PIXELS", data_type: TYPE_UINT8, dims: [ {spec.height}, {spec.width}, {spec.channels} ], '
            "optional: true }\n"
            "]\n"
            "output [\n"
            f'  {{ name: "PROBABILITIES", data_type: TYPE_FP32, dims: [ {card.num_classes} ], '
            'label_filename: "labels.txt" },\n'
            '  { name: "CLASS", data_type: TYPE_INT32, dims: [ 1 ] },\n'
            '  { name: "SCORE", data_type: TYPE_FP32, dims: [ 1 ] }\n'
            "]\n"
            + _batching(max_batch)
            + f"instance_group [ {{ count: {instances}, kind: KIND_AUTO }} ]\n"
            f'parameters {{ key: "artifact", value: {{ string_value: "{m.artifact.name}" }} }}\n')


def write_model(repo: Path, m: TritonModel, card: ModelCard, max_batch: int, force: bool) -> Path:
    """Write one model directory atomically file by file; refuses to overwrite without ``force``."""
    from ..atomic import atomic_path, refuse_overwrite, write_text

    d = repo / m.name
    cnnedge = m.kind.startswith("cnnedge")
    if cnnedge:
        copies = [(m.artifact, d / "1" / m.artifact.name)]
        if m.kind == "cnnedge-engine":
            sidecar = card_path_for(m.artifact)
            copies.append((sidecar, d / "1" / sidecar.name))
    else:
        copies = [(m.artifact, d / "1" / ("model.plan" if m.kind == "tensorrt" else "model.onnx"))]
    for p in (d / "config.pbtxt", *(t for _, t in copies)):
        refuse_overwrite(p, force)
    for src, target in copies:
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    write_text(d / "labels.txt", "\n".join(card.classes) + "\n")
    if cnnedge:
        write_text(d / "1" / "model.py", ENTRY_SOURCE)
        write_text(d / "config.pbtxt", cnnedge_config_text(m, card, max_batch))
    else:
        write_text(d / "config.pbtxt", config_text(m, card, max_batch))
    return d
