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
from typing import TYPE_CHECKING, Any

from ..artifact.card import ModelCard, card_path_for
from ..artifact.names import INT8_TRT_NAME

if TYPE_CHECKING:
    from .options import ExportOptions
    from .report import ExportReport

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


def quoted(text: str) -> str:
    """``text`` as a protobuf text-format string literal: quotes, backslashes and control characters escaped, so
    that a name from a model file can neither break config.pbtxt nor add a field to it."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def check_labels(card: ModelCard) -> None:
    """Triton's labels.txt holds one class name a line, with no escaping: a name with a line break would shift
    every label after it, so it is refused."""
    from ..errors import UsageError

    bad = [c for c in card.classes if any(ch in c for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")]
    if bad:
        raise UsageError(f"--triton: class name {bad[0]!r} holds a line break, which Triton's labels.txt (one name a "
                         "line) cannot hold; rename the class in the card or --labels file")


def _batching(max_batch: int) -> str:
    preferred = ", ".join(str(b) for b in sorted({max(1, max_batch // 4), max_batch}))
    return ("dynamic_batching {\n"
            f"  preferred_batch_size: [ {preferred} ]\n"
            "  max_queue_delay_microseconds: 500\n"
            "}\n")


def config_text(m: TritonModel, card: ModelCard, max_batch: int, fixed_batch: int | None = None) -> str:
    """config.pbtxt of an entry on Triton's ONNX Runtime or TensorRT backend. A graph that takes one batch size
    only (``fixed_batch``) cannot be batched by Triton: ``max_batch_size: 0`` and the batch in the dims."""
    lead = [] if fixed_batch is None else [fixed_batch]
    dims = ", ".join(str(d) for d in (*lead, *card.input.shape))
    out_dims = ", ".join(str(d) for d in (*lead, card.num_classes))
    return (f"name: {quoted(m.name)}\n"
            f"{KINDS[m.kind][1]}\n"
            f"max_batch_size: {0 if fixed_batch else max_batch}\n"
            "input [\n"
            "  {\n"
            f"    name: {quoted(m.input_name)}\n"
            f"    data_type: {_TYPES[card.input.dtype]}\n"
            f"    format: {'FORMAT_NHWC' if card.input.layout == 'NHWC' else 'FORMAT_NCHW'}\n"
            f"    dims: [ {dims} ]\n"
            "  }\n"
            "]\n"
            "output [\n"
            "  {\n"
            f"    name: {quoted(m.output_name)}\n"
            "    data_type: TYPE_FP32\n"
            f"    dims: [ {out_dims} ]\n"
            '    label_filename: "labels.txt"\n'
            "  }\n"
            "]\n"
            + ("" if fixed_batch else _batching(max_batch))
            + "instance_group [ { kind: KIND_AUTO } ]\n")


def cnnedge_config_text(m: TritonModel, card: ModelCard, max_batch: int, instances: int = 2) -> str:
    """config.pbtxt of a cnnedge entry: IMAGE (an encoded file as uint8 [1, bytes]; ragged, so files of
    any size batch together) or PIXELS (prepared uint8) in; two instances, so that one decodes while
    the other infers. Its ``backend`` parameter is cnnedge's (``auto``; edit it to ``openvino``, ``ort-cpu``...)."""
    spec = card.input
    return (f"name: {quoted(m.name)}\n"
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
            f'parameters {{ key: "artifact", value: {{ string_value: {quoted(m.artifact.name)} }} }}\n'
            f'parameters {{ key: "backend", value: {{ string_value: "auto" }} }}\n')


def write_model(repo: Path, m: TritonModel, card: ModelCard, max_batch: int, force: bool,
                fixed_batch: int | None = None) -> Path:
    """Write one model directory atomically file by file; refuses to overwrite without ``force``."""
    check_labels(card)
    from ..staging import staged_path, refuse_overwrite, write_text

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
        with staged_path(target) as tmp:
            shutil.copyfile(src, tmp)
    write_text(d / "labels.txt", "\n".join(card.classes) + "\n")
    if cnnedge:
        write_text(d / "1" / "model.py", ENTRY_SOURCE)
        write_text(d / "config.pbtxt", cnnedge_config_text(m, card, max_batch))
    else:
        write_text(d / "config.pbtxt", config_text(m, card, max_batch, fixed_batch))
    return d


def check_repository(repo: Path, card: ModelCard, opts: "ExportOptions") -> None:
    """Refuse up front (not after the export) to overwrite a Triton model without --force."""
    from ..staging import refuse_overwrite

    check_labels(card)
    precisions = ["fp32"] + (["fp16"] if opts.fp16 else []) + (["int8"] if opts.int8 else [])
    for name in planned_names(card, precisions, bool(opts.engine)):
        refuse_overwrite(repo / name / "config.pbtxt", opts.force)


def write_repository(repo: Path, report: "ExportReport", card: ModelCard, profile: Any, force: bool,
                     fixed_batch: int | None = None) -> list[str]:
    """Per artifact, the entry for Triton's own backend (when it has one) and cnnedge's Python-backend entry."""
    from . import onnx_io

    written = []
    for a in report.artifacts:
        p = Path(a.path)
        if a.kind == "onnx" and p.name == INT8_TRT_NAME:
            continue  # Triton's ONNX Runtime model is model.int8.onnx; TensorRT takes the plan
        if a.kind == "onnx":
            import onnx

            proto = onnx.load(str(p), load_external_data=False)
            inp, outp = onnx_io.io_names(proto)
            models = [TritonModel(model_name(card, a.precision, "onnxruntime"), p, "onnxruntime", inp, outp),
                      TritonModel(model_name(card, a.precision, "cnnedge"), p, "cnnedge", inp, outp)]
        else:
            from ..artifact.sidecar import EngineSidecar

            side = EngineSidecar.load(p)
            models = [TritonModel(model_name(card, a.precision, "cnnedge-engine"), p, "cnnedge-engine",
                                  side.input_name, side.output_name)]
            if report.engines and report.engines["flavour"] == "tensorrt":
                models.insert(0, TritonModel(model_name(card, a.precision, "tensorrt"), p, "tensorrt",
                                             side.input_name, side.output_name))
        written += [str(write_model(repo, m, card, profile.max, force, fixed_batch)) for m in models]
    return written
