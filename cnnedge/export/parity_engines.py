"""Which CPU engines the gate runs each ONNX file on, and why the others were not.

A file meets every CPU engine the runtime may pick for it: ONNX Runtime's CPU provider (``auto``'s choice on a
machine without a GPU) and OpenVINO where it is installed (``--backend openvino``, and ``auto`` once it picks by
measurement). So by default the gate checks each file on every one of them installed here; the
``parity_engines`` option narrows or widens that. ONNX Runtime's CPU provider is always checked: its rows are the
reference rows of the report (latency, the emulated CPU, Triton). GPU engines are not in this list: TensorRT
plans are checked where their GPU is (:func:`.parity.compare_engine`).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Sequence

from ..artifact.kinds import KINDS, TABLE
from ..errors import OptionError

REFERENCE = "ort-cpu"  # always checked
CPU_ENGINES: tuple[str, ...] = tuple(n for n in KINDS["onnx"].backends if not TABLE[n].gpu)
_MODULE = {"ort-cpu": ("onnxruntime", "cpu"), "openvino": ("openvino", "openvino")}  # import name, install extra


def _installed(engine: str) -> bool:
    module = _MODULE[engine][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module entry that is None in sys.modules: its import is refused
        return False


def install_hint(engine: str) -> str:
    return f"pip install 'cnnedge[{_MODULE[engine][1]}]'"


@dataclass(frozen=True)
class EnginePlan:
    """The engines to check on, in the report's order, and each left-out CPU engine with its reason."""

    run: tuple[str, ...]
    not_verified: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {"verified": list(self.run), "not_verified": dict(self.not_verified)}


def parse(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"ort-cpu,openvino"`` or a sequence of names as a tuple (None stays None: the default); OptionError for
    an unknown name, a GPU engine, or an empty list."""
    if value is None:
        return None
    if not isinstance(value, (str, list, tuple)):
        raise OptionError("parity_engines", f"must be a comma list or a sequence of names, found {value!r}")
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise OptionError("parity_engines", f"{value!r}: give a comma list of {', '.join(CPU_ENGINES)}")
    for n in names:
        if n not in CPU_ENGINES:
            import difflib

            close = difflib.get_close_matches(n, CPU_ENGINES, n=1)
            gpu = " (GPU engines are checked where their GPU is)" if n in TABLE and TABLE[n].gpu else ""
            raise OptionError("parity_engines", f"{n!r}: not a CPU engine; expected a comma list of "
                                                f"{', '.join(CPU_ENGINES)}{gpu}"
                              + (f" (did you mean {close[0]!r}?)" if close and not gpu else ""))
    return tuple(dict.fromkeys(names))


def plan(asked: tuple[str, ...] | None) -> EnginePlan:
    """The engines to check on: ``asked`` (with ONNX Runtime's CPU provider always), or every installed CPU
    engine; a named engine that is not installed is an OptionError naming the install extra."""
    for n in asked or ():
        if not _installed(n):
            raise OptionError("parity_engines", f"{n}: not installed here; {install_hint(n)}, or leave it out")
    run, skipped = [], {}
    for n in CPU_ENGINES:
        if n == REFERENCE or (n in asked if asked is not None else _installed(n)):
            run.append(n)
        elif not _installed(n):
            skipped[n] = f"not installed ({install_hint(n)})"
        else:
            skipped[n] = f"left out (parity engines asked for: {', '.join(asked or ())})"
    return EnginePlan(tuple(run), skipped)
