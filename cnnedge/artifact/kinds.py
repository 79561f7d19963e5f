"""The one table of artifact kinds and backends: which files exist, what runs them, with what options.

Read by :func:`cnnedge.runtime.backends.load_backend` and ``kind_of``, by
cnn-bench's planner, by the card and Keras helpers (suffixes) and by the CLIs'
``--backend`` choices, so adding a backend or a file suffix is one edit here.
A leaf module (standard library and :mod:`cnnedge.errors` only), so the card can
import it without loading the runtime.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnsupportedModelFile, UsageError


@dataclass(frozen=True)
class ArtifactKind:
    """A kind of model file: its suffixes and the backends that open it, best first. ``auto`` opens the first that
    starts among those of ONNX Runtime for ``.onnx`` (see :func:`auto_candidates`)."""

    name: str
    suffixes: tuple[str, ...]
    backends: tuple[str, ...]
    legacy_suffixes: tuple[str, ...] = ()  # opened when named, never picked up from a run folder
    label: str = ""  # what messages call it


@dataclass(frozen=True)
class BackendInfo:
    """One backend: the kind it runs, its implementation family, the options it takes, whether it
    needs a GPU, and ONNX Runtime's execution provider name (None outside ONNX Runtime)."""

    name: str
    kind: str
    family: str
    options: frozenset[str]
    gpu: bool
    ort_provider: str | None = None


_ORT_OPTIONS = frozenset({"threads", "fp16", "cache_dir", "device_id"})

KINDS: dict[str, ArtifactKind] = {k.name: k for k in (
    ArtifactKind("keras", (".keras",), ("keras",), legacy_suffixes=(".h5", ".hdf5"), label="Keras"),
    ArtifactKind("onnx", (".onnx",), ("ort-trt", "ort-cuda", "ort-cpu", "openvino"), label="ONNX"),
    ArtifactKind("engine", (".engine", ".plan", ".trt"), ("trt",), label="TensorRT"),
)}

TABLE: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo("ort-trt", "onnx", "ort", _ORT_OPTIONS, True, "TensorrtExecutionProvider"),
    BackendInfo("ort-cuda", "onnx", "ort", _ORT_OPTIONS, True, "CUDAExecutionProvider"),
    BackendInfo("ort-cpu", "onnx", "ort", _ORT_OPTIONS, False, "CPUExecutionProvider"),
    BackendInfo("openvino", "onnx", "openvino", frozenset({"threads", "hint"}), False),
    BackendInfo("trt", "engine", "trt", frozenset({"device_id"}), True),
    BackendInfo("keras", "keras", "keras", frozenset({"trust", "custom_objects"}), False),
)}

BACKEND_NAMES: tuple[str, ...] = tuple(TABLE)
BACKEND_CHOICES: tuple[str, ...] = ("auto",) + BACKEND_NAMES
ORT_PROVIDERS: dict[str, str] = {b.name: b.ort_provider for b in TABLE.values() if b.ort_provider}
KERAS_SUFFIXES = KINDS["keras"].suffixes + KINDS["keras"].legacy_suffixes
EXPORT_SOURCES: tuple[str, ...] = ("keras", "onnx")  # the kinds cnn-export converts (cnn-infer runs every kind)
SUFFIX_KIND: dict[str, str] = {s: k.name for k in KINDS.values() for s in k.suffixes + k.legacy_suffixes}
KIND_ORDER: dict[str, int] = {k: i for i, k in enumerate(KINDS)}


def auto_candidates(kind: str) -> tuple[str, ...]:
    """The backends ``auto`` tries for ``kind``, best first: for ``.onnx`` ONNX Runtime's providers only.

    OpenVINO is not in the order: on the 2-core EPYC of issue 31 it is 1.5-1.9x slower than ONNX Runtime on a
    tiny model at batch 1 and up to 2.3x faster on batched INT8, so a fixed order picks the slower engine for
    one of them. Where no GPU provider starts, ``auto`` times ONNX Runtime's CPU provider against OpenVINO
    instead (cnnedge.runtime.backends.engine_choice)."""
    wants = KINDS[kind].backends
    ort = tuple(n for n in wants if TABLE[n].ort_provider)
    return ort or wants


def describe_suffixes(kinds: tuple[str, ...] = tuple(KINDS)) -> str:
    """Every suffix that ``kinds`` take, for messages: ``Keras .keras/.h5/.hdf5, ONNX .onnx or TensorRT
    .engine/.plan/.trt``."""
    parts = [f"{k.label} {'/'.join(k.suffixes + k.legacy_suffixes)}" for k in (KINDS[name] for name in kinds)]
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]


def kind_for_suffix(path: str | os.PathLike, kinds: tuple[str, ...] = tuple(KINDS)) -> str | None:
    """The artifact kind from the file name alone, among ``kinds``, or None."""
    kind = SUFFIX_KIND.get(Path(path).suffix.lower())
    return kind if kind in kinds else None


def backend_info(name: str, what: str = "backend") -> BackendInfo:
    """The table's row for ``name``; a UsageError naming ``what`` with the closest match otherwise."""
    info = TABLE.get(name)
    if info is None:
        close = difflib.get_close_matches(str(name), BACKEND_CHOICES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown {what} {name!r}; expected one of {', '.join(BACKEND_CHOICES)}{hint}")
    return info


def is_gpu(name: str) -> bool:
    """Whether the backend runs on an NVIDIA GPU (so copies to and from the device are worth timing)."""
    return backend_info(name).gpu


def check_options(name: str, options: "dict[str, object]") -> None:
    """UsageError naming the options ``name`` does not take, and those it does."""
    allowed = backend_info(name).options
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(f"backend {name} takes no option {', '.join(unknown)} "
                         f"(it takes: {', '.join(sorted(allowed))})")


def require_kind(path: str | os.PathLike, tool: str = "cnnedge", kinds: tuple[str, ...] = tuple(KINDS)) -> str:
    """The kind of ``path`` by suffix, among the ``kinds`` that ``tool`` takes; otherwise an
    :class:`~cnnedge.errors.UnsupportedModelFile` (a usage mistake) naming every suffix they have."""
    kind = kind_for_suffix(path, kinds)
    if kind is None:
        raise UnsupportedModelFile(f"{path}: not a model file {tool} knows (expected {describe_suffixes(kinds)})")
    return kind
