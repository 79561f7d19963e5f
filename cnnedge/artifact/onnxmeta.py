"""An ONNX file's ``metadata_props`` read without ONNX or ONNX Runtime, and the card they carry.

The walker reads the top-level fields of the ``ModelProto`` and seeks past the graph, so a large file costs a few
reads, not a parse. Used for a sibling's card (:mod:`.onesource`) and by engines that do not hand the metadata
over (OpenVINO's ``read_model`` drops it); :func:`card_from_metadata` turns the props into the card and the file's
other metadata the same way for every engine.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from .card import MAX_CARD_BYTES, ONNX_KEY, ModelCard
from ..errors import CardError, ModelLoadError

_METADATA_PROPS = 14  # ModelProto.metadata_props (StringStringEntryProto: key = 1, value = 2)
MAX_ENTRY_BYTES = 64 << 20  # a larger metadata entry is a hostile file's, not a label list: skipped


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


def _entry(data: bytes) -> tuple[bytes, bytes]:
    """(key, value) of one StringStringEntryProto, as bytes."""
    f, key, value = io.BytesIO(data), b"", b""
    while (tag := _varint(f)) is not None:
        if tag & 7 != 2:
            return b"", b""
        n = _varint(f) or 0
        chunk = f.read(n)
        if tag >> 3 == 1:
            key = chunk
        elif tag >> 3 == 2:
            value = chunk
    return key, value


def _entries(path: str | os.PathLike, max_bytes: int) -> Iterator[tuple[bytes, bytes]]:
    """Every metadata entry of at most ``max_bytes``; stops quietly where the file is not a readable ONNX model."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while (tag := _varint(f)) is not None:
                wire = tag & 7
                if wire == 0:
                    if _varint(f) is None:
                        return
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    n = _varint(f)
                    if n is None or f.tell() + n > size:
                        return
                    if tag >> 3 == _METADATA_PROPS and n <= max_bytes:
                        yield _entry(f.read(n))
                    else:
                        f.seek(n, os.SEEK_CUR)
                else:
                    return
    except OSError:
        return


def onnx_card_json(path: str | os.PathLike) -> str | None:
    """The card text an ONNX file carries in ``metadata_props``, or None (no card, or not a readable ONNX file)."""
    key = ONNX_KEY.encode()
    for k, v in _entries(path, MAX_CARD_BYTES):
        if k == key:
            return v.decode("utf-8", "replace")
    return None


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Every ``metadata_props`` entry of an ONNX file as text; ModelLoadError naming the file when one is not
    UTF-8 (the words ONNX Runtime's backend uses for the same file)."""
    out = {}
    for k, v in _entries(path, MAX_ENTRY_BYTES):
        try:
            out[k.decode("utf-8")] = v.decode("utf-8")
        except UnicodeDecodeError:
            raise not_utf8(path) from None
    return out


def not_utf8(path: str | os.PathLike) -> ModelLoadError:
    return ModelLoadError(f"{path}: its metadata (metadata_props) holds a key or value that is not UTF-8 text; a "
                          "broken or tampered file: re-export it or strip its metadata")


def card_from_metadata(path: str | os.PathLike, meta: Mapping[str, str]) -> tuple[ModelCard | None, dict[str, str]]:
    """The card the metadata embeds (None: a third party's file) and the file's other metadata."""
    others = {k: v for k, v in meta.items() if k != ONNX_KEY}
    raw = meta.get(ONNX_KEY)
    if raw is None:
        return None, others
    try:
        return ModelCard.from_json(raw), others
    except CardError as exc:
        raise CardError(f"{Path(path)}: embedded {exc}") from None
