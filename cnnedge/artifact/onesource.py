"""One export folder, one source model: refuse to run an artifact beside siblings exported from another model.

``cnn-export --force`` replaces or removes every file an earlier export left, but a folder can still mix two
exports (files copied in by hand, an export by an older cnnedge): ``model.int8.onnx`` of model A beside
``model.onnx`` of model B runs with exit 0 and wrong answers. Every artifact's card records the sha256 of the
model it was exported from; :func:`check_one_source` compares the opened file's with its siblings'.

The siblings' cards are read without ONNX or ONNX Runtime: :func:`onnx_card_json` walks the top-level fields of
the ``ModelProto`` and seeks past the graph, so a large sibling costs a few reads, not a parse.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from .card import MAX_CARD_BYTES, ONNX_KEY, card_path_for
from .names import SUFFIXES
from ..errors import ModelLoadError

EXPORT_SUFFIXES = SUFFIXES
_METADATA_PROPS = 14  # ModelProto.metadata_props (StringStringEntryProto: key = 1, value = 2)


def _varint(f: BinaryIO) -> int | None:
    shift = value = 0
    while shift < 70:
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
    return None


def _entry(data: bytes) -> tuple[str, bytes]:
    """(key, value) of one StringStringEntryProto."""
    import io

    f, key, value = io.BytesIO(data), "", b""
    while (tag := _varint(f)) is not None:
        if tag & 7 != 2:
            return "", b""
        n = _varint(f) or 0
        chunk = f.read(n)
        if tag >> 3 == 1:
            key = chunk.decode("utf-8", "replace")
        elif tag >> 3 == 2:
            value = chunk
    return key, value


def onnx_card_json(path: str | os.PathLike) -> str | None:
    """The card text an ONNX file carries in ``metadata_props``, or None (no card, or not a readable ONNX file)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while (tag := _varint(f)) is not None:
                wire = tag & 7
                if wire == 0:
                    if _varint(f) is None:
                        return None
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    n = _varint(f)
                    if n is None or f.tell() + n > size:
                        return None
                    if tag >> 3 == _METADATA_PROPS and n <= MAX_CARD_BYTES:
                        key, value = _entry(f.read(n))
                        if key == ONNX_KEY:
                            return value.decode("utf-8", "replace")
                    else:
                        f.seek(n, os.SEEK_CUR)
                else:
                    return None
    except OSError:
        return None
    return None


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
