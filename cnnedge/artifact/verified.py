"""Which CPU engines the export's gate ran a model file on: read from the export report beside it, so that
``auto`` never moves a file to an engine its gate did not check. Standard library only."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .names import REPORT_NAME

REPORT_LIMIT = 16 << 20  # a report is a few kilobytes; a larger file beside a model is not read


def unverified_engines(model: str | os.PathLike) -> dict[str, str] | None:
    """The CPU engines the gate did not run ``model`` on, each with the report's reason; None when no export
    report beside it speaks of it (a file from elsewhere, or exported before reports named their engines):
    then nothing is known, and nothing is held back."""
    p = Path(model)
    report = p.with_name(REPORT_NAME)
    try:
        if not report.is_file() or report.stat().st_size > REPORT_LIMIT:
            return None
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("parity_engines"), dict):
        return None
    rows = data.get("artifacts") if isinstance(data.get("artifacts"), list) else []
    if p.name not in {Path(str(r.get("path", ""))).name for r in rows if isinstance(r, dict)}:
        return None
    missing = data["parity_engines"].get("not_verified")
    return {str(k): str(v) for k, v in missing.items()} if isinstance(missing, dict) else {}
