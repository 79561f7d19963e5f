"""The staged folders a model's folder can hold (an export's, a ``cnn-train --force`` run's), and the one line a
reader refuses a half-replaced set with. How they are staged, committed and recovered is :mod:`cnnedge.staging`'s;
standard library only, so the runtime checks a folder without loading the exporter or the trainer."""
from __future__ import annotations

import os

from ..staging import Layout, pending

#: an export stages in ``.cnn-export-<owner>-<random>/`` (one per process) and records its commit in the folder
EXPORT = Layout(".cnn-export-", ".cnn-export-commit.json")
#: a ``cnn-train --force`` run builds the new run in ``.cnn-train-new/``, its commit record (the swap) inside
TRAIN = Layout(".cnn-train-new", ".cnn-train-new/swap.json")


def half_replaced(folder: str | os.PathLike) -> str | None:
    """A one-line reason when ``folder`` holds a set a killed export or ``cnn-train --force`` left half in place:
    its files may come from two exports, or two runs."""
    if pending(folder, EXPORT):
        return (f"{folder}: an export into this folder was interrupted while putting its files in place, so they "
                "mix two exports; run cnn-export again (it completes the interrupted one first)")
    if pending(folder, TRAIN):
        return (f"{folder}: a cnn-train --force run was killed while replacing the run in this folder, so its "
                f"model and card may come from two runs; run cnn-train --resume {folder} (it completes the "
                "replacement first)")
    return None
