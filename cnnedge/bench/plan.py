"""What to measure: the model files (or every artifact of a run folder), backends and batch sizes."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..artifact.kinds import BACKEND_CHOICES as CHOICES
from ..artifact.kinds import BACKEND_NAMES, KIND_ORDER, KINDS, require_kind
from ..artifact.modelfile import require_model_file
from ..errors import ModelLoadError, UsageError


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # onnx | engine | keras

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def precision(self) -> str:
        """From the file name as cnn-export writes it (the card, when loaded, has the last word)."""
        parts = [s.lower() for s in self.path.suffixes]
        for p in ("int8", "fp16", "fp32"):
            if f".{p}" in parts:
                return p
        return "fp32"


def parse_backends(text: str) -> list[str]:
    """``auto`` or a comma list of backend names; an unknown name is an error with the closest match."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UsageError(f"--backends: expected auto or a comma list of {', '.join(BACKEND_NAMES)}")
    for n in names:
        if n not in CHOICES:
            close = difflib.get_close_matches(n, CHOICES, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"--backends: unknown backend {n!r}; expected auto or {', '.join(BACKEND_NAMES)}{hint}")
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def parse_batches(text: str | Iterable[int]) -> list[int]:
    """``"1,8,32"`` -> [1, 8, 32] (sorted, unique, each >= 1)."""
    items = str(text).split(",") if isinstance(text, str) else list(text)
    out = set()
    for t in items:
        try:
            b = int(str(t).strip())
        except ValueError:
            raise UsageError(f"--batch: expected positive integers separated by commas (e.g. 1,8,32), "
                             f"got {str(t).strip()!r}") from None
        if b < 1:
            raise UsageError(f"--batch: batch sizes must be at least 1, got {b}")
        out.add(b)
    if not out:
        raise UsageError("--batch: give at least one batch size (e.g. --batch 1,8,32)")
    return sorted(out)


def find_artifacts(models: Sequence[str | os.PathLike]) -> list[Artifact]:
    """Model files as given, and for a folder every model file directly inside it (hidden ones left out)."""
    if not models:
        raise UsageError("give at least one model file or run folder (e.g. cnn-bench runs/demo)")
    found: list[Artifact] = []
    for m in models:
        p = require_model_file(m, folders=True)
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                            and any(f.suffix.lower() in k.suffixes for k in KINDS.values()))
            if not inside:
                raise UsageError(f"{p}: no model files in this folder (expected model.keras, *.onnx or *.engine)")
            found += [Artifact(f, require_kind(f, "cnn-bench")) for f in inside]
        else:
            found.append(Artifact(p, require_kind(p, "cnn-bench")))
    unique: dict[Path, Artifact] = {}
    for a in found:
        unique.setdefault(a.path.resolve(), a)
    return sorted(unique.values(), key=lambda a: (KIND_ORDER[a.kind], a.name))


def preflight(artifacts: Sequence[Artifact], trust: bool = False) -> None:
    """Cheap checks that catch a file that is not a model before anything is timed."""
    for a in artifacts:
        if a.kind == "keras":
            from ..keras_io import check_model_file

            check_model_file(a.path, trust)
        elif a.kind == "onnx":
            from ..runtime.backends.ort_session import check_external_data

            check_external_data(a.path)  # parses the graph when the onnx package is installed
            with open(a.path, "rb") as fh:
                if not fh.read(64):
                    raise ModelLoadError(f"{a.path}: empty file, not an ONNX model")
        else:
            if a.path.stat().st_size == 0:
                raise ModelLoadError(f"{a.path}: empty file, not a TensorRT plan")


def expand(artifacts: Sequence[Artifact], backends: Sequence[str]) -> list[tuple[Artifact, str]]:
    """(artifact, backend) pairs: ``auto`` means every backend that can open the file's kind.

    A backend named explicitly that applies to none of the files is an error.
    """
    pairs: list[tuple[Artifact, str]] = []
    for a in artifacts:
        fits = KINDS[a.kind].backends
        chosen = fits if "auto" in backends else tuple(b for b in fits if b in backends)
        pairs += [(a, b) for b in chosen]
    for b in backends:
        if b != "auto" and not any(bb == b for _, bb in pairs):
            kinds = [k.name for k in KINDS.values() if b in k.backends]
            raise UsageError(f"--backends {b}: runs .{kinds[0]} files and none was given "
                             f"(files: {', '.join(a.name for a in artifacts)})")
    return pairs


def effective_batch(requested: int, fixed: int | None, lo: int, hi: int | None) -> tuple[int, str | None]:
    """The batch an artifact can take for a requested one, and a note when it differs."""
    if fixed is not None and requested != fixed:
        return fixed, f"takes only batch {fixed}; batch {requested} measured at {fixed}"
    if hi is not None and requested > hi:
        return hi, f"batch {requested} is above the engine profile's max {hi}; measured at {hi}"
    if requested < lo:
        return lo, f"batch {requested} is below the engine profile's min {lo}; measured at {lo}"
    return requested, None
