"""What this machine offers, asked in one place: the TensorRT module (``tensorrt`` or ``tensorrt_rtx``) and its
logger, the NVIDIA GPUs, the versions of the libraries installed or loaded.

Used by the runtime, the export and the benchmarks alike, so it imports only the standard library at import time:
TensorRT is imported when asked for, and a GPU is found through ``nvidia-smi`` (no CUDA library needed).
"""
from __future__ import annotations

import collections
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from importlib import metadata
from types import ModuleType
from typing import Any, Iterable, Mapping

TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")  # in order of preference; the module's name is its flavour
LOG_KEPT = 256  # logger messages kept: a long-lived process logs on every engine it loads
_LOGGERS: dict[str, Any] = {}


def tensorrt() -> ModuleType | None:
    """``tensorrt`` if it imports, else ``tensorrt_rtx``, else None (each caller says what it needed it for)."""
    for name in TENSORRT_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def has_tensorrt() -> bool:
    """Whether a TensorRT module is installed, without importing it."""
    return any(importlib.util.find_spec(m) is not None for m in TENSORRT_MODULES)


def trt_logger(trt: ModuleType) -> Any:
    """The one logger of this process for the TensorRT module ``trt``.

    TensorRT keeps the first logger it is given for the whole process, and its builder, parser and runtime report
    errors only through it: so there is one per module, keeping its last :data:`LOG_KEPT` ``(severity, message)``
    pairs in ``messages``; ``errors`` lists the errors among them. Clear ``messages`` before an operation whose
    errors are to be reported."""
    key = trt.__name__
    if key not in _LOGGERS:
        class Collect(trt.ILogger):  # type: ignore[name-defined, misc]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: collections.deque[tuple[Any, str]] = collections.deque(maxlen=LOG_KEPT)

            def log(self, severity: Any, msg: str) -> None:
                self.messages.append((severity, msg))

            @property
            def errors(self) -> list[str]:
                worst = int(trt.ILogger.Severity.ERROR)  # and INTERNAL_ERROR, below it
                return [m for s, m in list(self.messages) if int(s) <= worst]

        _LOGGERS[key] = Collect()
    return _LOGGERS[key]


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as nvidia-smi reports them (name, driver, memory, compute capability); [] when none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in (out.stdout or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            rows.append({"name": parts[0], "driver": parts[1], "memory": parts[2], "compute_capability": parts[3]})
    return rows


def gpu_sm() -> str | None:
    """The first GPU's compute capability as ``smXY`` (what TensorRT builds for), from nvidia-smi; None without
    one."""
    for gpu in gpus():
        m = re.match(r"\s*(\d+)\.(\d+)", gpu["compute_capability"])
        return f"sm{m.group(1)}{m.group(2)}" if m else None
    return None


def versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed versions of ``packages`` (distribution names), read from package metadata without importing
    them; those not installed are left out."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def loaded_versions(modules: Mapping[str, str]) -> dict[str, str]:
    """``{label: version}`` of the ``{module: label}`` already imported in this process: what actually ran, where
    several distributions provide one module (``cv2``, ``tensorflow``)."""
    out = {}
    for mod, label in modules.items():
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m else None
        if v:
            out[label] = str(v)
    return out
