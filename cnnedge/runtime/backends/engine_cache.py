"""Where ``auto``'s measured CPU-engine choices are kept: one small JSON file, per model, engines, CPU and settings.

A choice holds for one model file (its sha256), the engine versions, the CPU (its model name, the instruction sets
the INT8 kernels use, the cores this process may use), the threads and the batch: a change in any of them measures
again. The file lies in ``$CNNEDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnedge``, else ``~/.cache/cnnedge``; it is
written atomically, and a cache that cannot be read or written is a warning, never a failure (the engines are
measured again).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import warnings
from pathlib import Path
from typing import Any

CACHE_ENV = "CNNEDGE_CACHE_DIR"
FILE_NAME = "engine-choice.json"
VERSION = 1
MAX_ENTRIES = 200  # the newest kept: one per model, batch and thread count in use on this machine


class EngineCacheWarning(UserWarning):
    """The engine-choice cache could not be read or written: the engines are measured (again), nothing fails."""


def cache_file() -> Path:
    """The cache's path (see the module's note on where it lies)."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base) / FILE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "cnnedge" / FILE_NAME


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def cpu_facts() -> str:
    """``AMD EPYC 7B13; AVX2, AVX-512 VNNI; 2 cores``: what an engine's speed on this CPU depends on."""
    from ..cpu_kernels import int8_kernels
    from .ort import usable_cores

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1
        from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore[no-redef]
    isa = [f for f in ("AVX2", "AVX512F", "AVX512_VNNI") if features.get(f.replace("_", ""))]
    return f"{name}; {', '.join(isa + [int8_kernels().name])}; {usable_cores()} cores"


def cache_key(model_sha256: str, versions: dict[str, str], threads: int, batch: int) -> str:
    engines = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    return f"{model_sha256} | {engines} | {cpu_facts()} | {threads} threads | batch {batch}"


def _read(path: Path) -> dict[str, Any]:
    """The cache's entries; {} when there is none yet, with a warning when it cannot be read or is not ours."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # none yet (an unwritable place warns when written)
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        warnings.warn(f"{path}: cannot read the engine-choice cache ({exc}); measuring the engines again",
                      EngineCacheWarning, stacklevel=4)
        return {}
    try:
        data = json.loads(text)
        entries = data["entries"] if data.get("version") == VERSION else {}
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
        return entries
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        warnings.warn(f"{path}: the engine-choice cache is corrupt ({type(exc).__name__}); measuring the engines "
                      "again and writing it anew", EngineCacheWarning, stacklevel=4)
        return {}


def lookup(key: str) -> dict[str, Any] | None:
    """The entry stored under ``key`` (``{"engine", "ratio", "reason", "date"}``), or None."""
    got = _read(cache_file()).get(key)
    return got if isinstance(got, dict) and isinstance(got.get("engine"), str) else None


def store(key: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` under ``key``, keeping the newest :data:`MAX_ENTRIES`; a warning when it cannot be written."""
    from ...staging import write_text

    path = cache_file()
    entries = _read(path)
    entries.pop(key, None)
    entries[key] = entry
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"version": VERSION, "entries": kept}, indent=1) + "\n")
    except Exception as exc:  # noqa: BLE001 - OSError, or the atomic writer's OutputError: never a failure
        warnings.warn(f"{path}: cannot write the engine-choice cache ({exc}); the engines will be measured again "
                      f"next time (set {CACHE_ENV} to a writable folder)", EngineCacheWarning, stacklevel=4)
