"""The trainer's ``--force`` swap marker (see cnnedge.trainer.rundir); exports stage through cnnedge.staging."""
from __future__ import annotations

import json
import os
from pathlib import Path


#: the trainer's staging folder inside a run folder, and the marker that commits its swap (see cnnedge.trainer.rundir)
TRAIN_STAGING = ".cnn-train-new"
SWAP_MARKER = "swap.json"


def swap_files(staging: Path, allowed: "tuple[str, ...]") -> list[str] | None:
    """The files a committed cnn-train swap moves (its marker, read from ``staging``), or None when no swap was
    committed there (no marker, or one that names anything but ``allowed``)."""
    try:
        files = json.loads((staging / SWAP_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(files, list) and all(f in allowed for f in files)
    return files if ok else None


def unfinished_swap(folder: str | os.PathLike) -> str | None:
    """A one-line reason when ``folder`` holds a run a killed ``cnn-train --force`` was replacing file by file (its
    swap committed, not finished): its model and card may come from two runs until cnn-train finishes the swap."""
    out = Path(folder)
    marker = out / TRAIN_STAGING / SWAP_MARKER
    if not marker.is_file():
        return None
    return (f"{out}: a cnn-train --force run was killed while replacing the run in this folder, so its model and "
            f"card may come from two runs; run cnn-train --resume {out} (it completes the replacement first)")
