"""Step 2: constant folding and graph simplification with onnxslim, output checked unchanged.

Clean-up is an optimisation: when onnxslim fails on a graph, or changes its output, the export goes on with
the graph as it was, and the report and the terminal say so.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import first_line
from . import onnx_io

TOLERANCE = 1e-5


@dataclass(frozen=True)
class CleanupResult:
    nodes_before: int
    nodes_after: int
    max_abs_diff: float | None
    tool: str
    applied: bool = True
    note: str | None = None  # why the graph was kept as it was


def simplify(model: Any, probe: Any) -> tuple[Any, CleanupResult]:
    """Simplify ``model``; ``probe`` is an input batch run through both graphs to prove nothing changed.
    Returns ``model`` itself, with a note, when onnxslim fails or changes the output."""
    import numpy as np

    from .._lazy import require

    onnxslim = require("onnxslim", "ONNX graph cleanup")
    tool = f"onnxslim {getattr(onnxslim, '__version__', '?')}"
    before = onnx_io.node_count(model)

    def kept(why: str, diff: float | None = None) -> tuple[Any, CleanupResult]:
        return model, CleanupResult(before, before, diff, tool, False,
                                    f"graph cleanup skipped: {why}; the graph is exported as it was")

    try:
        slim = onnxslim.slim(copy.deepcopy(model))
    except Exception as exc:  # noqa: BLE001 - any failure of the optimiser leaves the graph as it was
        return kept(f"onnxslim failed ({type(exc).__name__}: {first_line(exc, 200)})")
    if slim is None:
        return kept("onnxslim returned no model")
    slim.metadata_props.extend(p for p in model.metadata_props if p not in slim.metadata_props)
    from .compare import opened, side_by_side

    with opened(model) as (before_run,):
        a = side_by_side([before_run], lambda: [probe])[0]
    try:
        with opened(slim) as (after_run,):
            b = side_by_side([after_run], lambda: [probe])[0]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime refuses the simplified graph
        return kept(f"ONNX Runtime cannot run onnxslim's graph ({first_line(exc, 200)})")
    if a.shape != b.shape:
        return kept(f"onnxslim changed the output's shape ({a.shape} to {b.shape})")
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    if not diff <= TOLERANCE:
        return kept(f"onnxslim changed the model's output (max abs diff {diff:.2e})", diff)
    return slim, CleanupResult(before, onnx_io.node_count(slim), diff, tool)
