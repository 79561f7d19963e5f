"""Where an export writes: the files it plans, the hidden staging folder its steps write into, and where a
failed export's files go. What goes into place, and how, is :mod:`cnnedge.staging`'s."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..artifact.card import ModelCard
from ..artifact.names import ENGINE_NAMES, INT8_TRT_NAME, ONNX_NAMES, REPORT_NAME
from ..errors import ExportError

if TYPE_CHECKING:
    import numpy as np

    from ..staging import StagedFolder
    from .data import ImageSet
    from .options import ExportOptions
    from .report import ExportReport
    from .sources import KerasSource, OnnxSource
    from .timer import StepTimer

FAILED_PREFIX = "export-failed-"


@dataclass(frozen=True)
class Workspace:
    """Where an export writes and what it tells: what every step shares."""

    opts: "ExportOptions"
    report: "ExportReport"
    timer: "StepTimer"
    out: Path
    staging: Path  # the hidden folder the steps write into


@dataclass(frozen=True)
class Checked:
    """What the load phase read and checked before anything is written: the steps' input."""

    source: "KerasSource | OnnxSource"
    card: ModelCard  # the source model's
    base_card: ModelCard  # as exported: input dtype, provenance
    verify: "ImageSet"
    calib: "ImageSet | None"
    ref: "np.ndarray"  # the source model's outputs on the verification images, fed as it expects
    probe: "np.ndarray"  # verification images as the FP32 graph takes them (the clean-up step's check)


def planned_outputs(fp16: bool, int8: bool, engine: bool) -> list[str]:
    """The file names an export with these options writes into its folder."""
    precisions = ["fp32"] + (["fp16"] if fp16 else []) + (["int8"] if int8 else [])
    names = [ONNX_NAMES[p] for p in precisions] + ([INT8_TRT_NAME] if int8 else [])
    for p in engine_precisions(fp16, int8) if engine else []:
        names += [ENGINE_NAMES[p], ENGINE_NAMES[p] + ".json"]
    return names + [REPORT_NAME]


def engine_precisions(fp16: bool, int8: bool) -> list[str]:
    """The precisions engines are built in: those asked for, or FP32 when none is."""
    return (["fp16"] if fp16 else []) + (["int8"] if int8 else []) or ["fp32"]


def all_outputs() -> list[str]:
    """Every file name an export can write into its folder (of any option combination)."""
    return planned_outputs(True, True, True) + [ENGINE_NAMES["fp32"], ENGINE_NAMES["fp32"] + ".json"]


def stale_outputs(out: Path, planned: list[str]) -> list[str]:
    """The export files in ``out`` that an export writing ``planned`` would not replace: left by an earlier
    export (of another model, or with other options), they must go with the commit."""
    return [n for n in all_outputs() if n not in planned and (out / n).is_file()]


@contextlib.contextmanager
def staging_folder(out: Path) -> "Iterator[StagedFolder]":
    """A new hidden folder in ``out`` (made if needed) for the steps to write into; removed at the end, unless a
    commit from it into ``out`` is in flight (the next export into ``out`` finishes that one)."""
    from ..artifact.staged import EXPORT
    from ..staging import StagedFolder

    folder = StagedFolder(out, EXPORT)
    try:
        yield folder
    finally:
        folder.discard()


def recovered_lines(out: Path) -> list[str]:
    """Finish or undo what exports killed while writing into ``out`` left, before a new export starts there, so
    that the folder holds one export's files (see :func:`cnnedge.staging.recover`). One line per thing done."""
    from ..artifact.staged import EXPORT
    from ..staging import recover

    done = recover(out, EXPORT)
    lines = []
    if done.rolled:
        who = f"process {done.owner.pid}" if done.owner else "a process"
        lines.append(f"{out}: an export ({who}) was killed while putting its files in place; " + (
            f"completed it: {len(done.moved)} of its files moved in, the folder holds that export's set"
            if done.whole else "its staging folder is gone, so the folder may mix two exports: export again with "
                               "--force"))
    if done.swept:
        lines.append(f"{out}: removed {len(done.swept)} staging folder(s) of exports killed before putting their "
                     f"files in place ({', '.join(d.name for d in done.swept)}); the folder's files are as they were")
    return lines


def keep_failed(staging: Path, out: Path) -> Path:
    """Move a failed export's staged files (its artifacts and report) to a new ``export-failed-<time>`` folder in
    ``out``, where the user can look at them, away from the working set."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = out / f"{FAILED_PREFIX}{stamp}{f'-{i}' if i else ''}"
        try:
            os.rename(staging, target)  # refuses an existing non-empty folder: never merges into one
            return target
        except OSError:
            if not target.exists():
                raise
    raise ExportError(f"{out}: could not find a free {FAILED_PREFIX}* folder name for the failed export's files")
