"""Class names for a model without a card: given by the user, or carried in the file's metadata.

Ultralytics classification exports store ``names`` as a Python dict literal
(``{0: 'cat', 1: 'dog'}``) in ONNX ``metadata_props``; other exporters use
``labels`` or ``classes``, as newline-separated text or a JSON list. Metadata is
untrusted text: it is parsed with ``ast.literal_eval`` / ``json.loads`` (never
``eval``), bounded in size, and a malformed value is a one-line ModelLoadError.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ModelLoadError, UsageError
from ..imaging.errors import ImageError
from ..imaging.files import read_file

METADATA_KEYS = ("names", "labels", "classes")
MAX_METADATA_CHARS = 1 << 20
MAX_LABELS_BYTES = 16 << 20


def read_labels(labels: Sequence[str] | str | os.PathLike | None) -> tuple[str, ...] | None:
    """A list of class names, or a text file with one name per line."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        try:  # regular files only, read to a bound: a FIFO or /dev/zero given here neither blocks nor fills memory
            text = read_file(p, MAX_LABELS_BYTES).decode("utf-8-sig")  # a BOM (Notepad) is no part of a name
        except ImageError as exc:
            raise UsageError(f"--labels {p}: cannot read ({exc.reason})") from None
        except UnicodeDecodeError:
            raise UsageError(f"--labels {p}: not UTF-8 text; give a text file with one class name a line") from None
        lines = text.splitlines()
        nul = next((n for n, line in enumerate(lines, 1) if "\0" in line), None)
        if nul is not None:
            raise UsageError(f"--labels {p} line {nul}: a NUL byte; give a text file with one class name a line")
        names = tuple(line.strip() for line in lines if line.strip())
    else:
        names = tuple(str(x) for x in labels)
    if len(names) < 2:
        raise UsageError(f"labels: need at least 2 class names, found {len(names)}")
    if len(set(names)) != len(names):
        raise UsageError("labels: class names must be unique")
    return names


def _parse(key: str, raw: str) -> list[str]:
    text = raw.strip()
    if key == "names":  # Ultralytics: a dict literal {0: 'cat', ...} (or a list)
        try:
            v = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            raise ValueError("not a Python dict or list literal") from None
        if isinstance(v, dict):
            if sorted(v) != list(range(len(v))) or any(isinstance(k, bool) for k in v):
                raise ValueError("its keys are not the indices 0..n-1")
            return [str(v[i]) for i in range(len(v))]
    elif text.startswith("["):
        try:
            v = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("starts like a JSON list but is not one") from None
    else:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(v, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
        raise ValueError("not a list of names")
    return [str(x) for x in v]


def metadata_labels(metadata: Mapping[str, str], path: str) -> tuple[tuple[str, ...], str] | None:
    """(names, key) from the first of ``names``, ``labels``, ``classes`` present, or None."""
    for key in METADATA_KEYS:
        raw = metadata.get(key)
        if raw is None:
            continue
        where = f"{path}: metadata {key!r}"
        if len(raw) > MAX_METADATA_CHARS:
            raise ModelLoadError(f"{where} is {len(raw)} characters, over the {MAX_METADATA_CHARS} limit")
        try:
            names = _parse(key, raw)
        except ValueError as exc:
            raise ModelLoadError(f"{where} cannot be read as class names ({exc}); give --labels FILE") from None
        if len(names) < 2 or len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise ModelLoadError(f"{where} must name at least 2 distinct, non-empty classes; give --labels FILE")
        return tuple(names), key
    return None


def check_count(names: Any, n_out: int | None, source: str, path: str, given: bool) -> None:
    """A wrong number of class names against the model's output width is an error: a
    UsageError for names the user ``given`` (``source`` is the flag), else a ModelLoadError."""
    if n_out is None or len(names) == n_out:
        return
    if given:
        raise UsageError(f"{source}: {len(names)} names given, the model outputs {n_out} classes")
    raise ModelLoadError(f"{path}: {source} names {len(names)} classes, the model outputs {n_out}; give a labels "
                         "file with one name per output (--labels FILE)")
