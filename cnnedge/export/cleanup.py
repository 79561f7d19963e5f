"""Step 2: constant folding and graph simplification with onnxslim, output checked unchanged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ExportError
from . import onnx_io

TOLERANCE = 1e-5


@dataclass(frozen=True)
class CleanupResult:
    nodes_before: int
    nodes_after: int
    max_abs_diff: float
    tool: str


def simplify(model: Any, probe: Any) -> tuple[Any, CleanupResult]:
    """Simplify ``model``; ``probe`` is an input batch run through both graphs to prove nothing changed."""
    import numpy as np

    from .._lazy import require

    onnxslim = require("onnxslim", "ONNX graph cleanup")
    before = onnx_io.node_count(model)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:
        raise ExportError(f"onnxslim failed to simplify the graph: {str(exc).strip()[:300]}") from None
    if slim is None:
        raise ExportError("onnxslim returned no model")
    slim.metadata_props.extend(p for p in model.metadata_props if p not in slim.metadata_props)
    a = onnx_io.run(onnx_io.session(model.SerializeToString()), probe)
    b = onnx_io.run(onnx_io.session(slim.SerializeToString()), probe)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    if a.shape != b.shape or diff > TOLERANCE:
        raise ExportError(f"graph cleanup changed the model's output (max abs diff {diff:.2e}); "
                          "report this with the model, or export with --no-cleanup")
    version = getattr(onnxslim, "__version__", "?")
    return slim, CleanupResult(before, onnx_io.node_count(slim), diff, f"onnxslim {version}")
