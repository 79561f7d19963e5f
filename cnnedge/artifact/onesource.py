"""One export folder, one source model: refuse to run an artifact beside siblings exported from another model.

``cnn-export --force`` replaces or removes every file an earlier export left, but a folder can still mix two
exports (files copied in by hand, an export by an older cnnedge): ``model.int8.onnx`` of model A beside
``model.onnx`` of model B runs with exit 0 and wrong answers. Every artifact's card records the sha256 of the
model it was exported from; :func:`check_one_source` compares the opened file's with its siblings'.

The siblings' cards are read without ONNX or ONNX Runtime (:func:`.onnxmeta.onnx_card_json`), so a large sibling
costs a few reads, not a parse.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelLoadError
from .card import MAX_CARD_BYTES, card_path_for
from .names import SUFFIXES
from .onnxmeta import onnx_card_json

__all__ = ["EXPORT_SUFFIXES", "check_one_source", "export_stem", "onnx_card_json"]

EXPORT_SUFFIXES = SUFFIXES


def _source_of(path: Path) -> str | None:
    """The source sha256 a sibling's card records, or None when it has no readable card."""
    try:
        if path.suffix == ".engine":
            side = card_path_for(path)
            if not side.is_file() or side.stat().st_size > MAX_CARD_BYTES:
                return None
            card = json.loads(side.read_text()).get("card")
        else:
            text = onnx_card_json(path)
            card = json.loads(text) if text else None
        source = card.get("provenance", {}).get("source_sha256") if isinstance(card, dict) else None
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None


def export_stem(path: Path) -> str | None:
    """``model`` for ``model.int8.onnx`` and the other names cnn-export writes; None for any other name."""
    for suffix in sorted(EXPORT_SUFFIXES, key=len, reverse=True):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return None


def check_one_source(path: str | os.PathLike, source_sha256: str | None) -> None:
    """ModelLoadError when an artifact exported beside ``path`` (same stem) records another source model."""
    p = Path(path)
    stem = export_stem(p)
    if not source_sha256 or stem is None:
        return
    others = []
    for suffix in EXPORT_SUFFIXES:
        sibling = p.with_name(stem + suffix)
        if sibling.name == p.name or not sibling.is_file():
            continue
        theirs = _source_of(sibling)
        if theirs and theirs != source_sha256:
            others.append(f"{sibling.name} (source {theirs[:12]})")
    if others:
        raise ModelLoadError(
            f"{p}: exported from source {source_sha256[:12]}, but {', '.join(others)} beside it came from another "
            f"model, so the folder mixes two exports; export again into it with --force (it replaces or removes "
            f"every earlier file) or move the stale files out")
