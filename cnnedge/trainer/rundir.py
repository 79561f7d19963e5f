"""The run folder: what a run writes there, which folders a run may write into, and how ``--force``
replaces a run without ever losing it.

A folder is a cnn-train run when it holds ``train_config.json``, a regular file holding a JSON object with
``preset`` and ``dataset_spec``: the first file every run writes, and the last it would lose (a run stopped
before its first checkpoint removes what it wrote and leaves the folder as it found it). A run writes only
into a folder that does not exist yet, an empty one (no entries at all, hidden ones included) or a run; any
other folder is the user's and is never written into, with or without ``--force``. Nor may the run folder
be, or be inside, a ``--data`` folder: it would become a class of the next run on that data.

A ``--force`` run into a folder that holds a run is built beside it, in ``<out>/.cnn-train-new/`` (a
:class:`cnnedge.staging.StagedFolder` that names its process); the old run stays whole where it was. Only when
the new run has completed (or, on Ctrl-C, has a best checkpoint) is the swap committed: a record naming the new
files and the old ones that go (the old run's metrics, the exports made from its model) is written atomically,
then each new file is renamed over its old one and the old leftovers are removed. A kill before the record
leaves the old run untouched, and the next ``cnn-train`` into the folder removes the unfinished files; a kill
during the renames is finished by the next ``cnn-train`` (the new run had been committed). Both say what they
did. While a live process builds there, another ``cnn-train`` into the folder is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from ..artifact.card import CARD_FILENAME
from ..artifact.staged import TRAIN
from ..staging import StagedFolder, live_staging, recover
from ..errors import FileExistsRefused, UsageError, arg_name

MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
# in the order a swap renames them: the model first, its card next
ARTIFACTS = (MODEL_FILE, CARD_FILENAME, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, "loss.png", "accuracy.png",
             "confusion.png")
# What cnn-export makes from model.keras in the run folder: stale once --force replaces the model.
EXPORT_PATTERNS = ("model.onnx", "model.*.onnx", "model.onnx.json", "model.*.onnx.json", "*.engine", "*.engine.json",
                   "export_report.json", "model.int8.calib-*.json")
STAGING_DIR = TRAIN.staging
SWAP_MARKER = Path(TRAIN.record).name
MAX_CONFIG_BYTES = 1 << 20  # a train_config.json is a few hundred bytes; a larger one is not a run's


def is_run(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is a cnn-train run: it holds the ``train_config.json`` of one (see above)."""
    p = Path(folder) / CONFIG_FILE
    try:
        if not p.is_file() or p.stat().st_size > MAX_CONFIG_BYTES:
            return False
        obj = json.loads(p.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and "preset" in obj and "dataset_spec" in obj


def is_complete(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a finished run (model, card and metrics)."""
    d = Path(run_dir)
    return all((d / f).is_file() for f in (MODEL_FILE, CARD_FILENAME, METRICS_FILE))


def export_outputs(out: Path) -> list[Path]:
    found: dict[Path, None] = {}
    for pattern in EXPORT_PATTERNS:
        for p in sorted(out.glob(pattern)):
            if p.is_file() or p.is_symlink():
                found[p] = None
    return list(found)


def check_outside_data(out: Path, data: str | os.PathLike) -> None:
    """Refuse an ``out`` that is the ``data`` folder or inside it (its plots would be a class next time)."""
    d = Path(data).expanduser()
    if not d.is_dir():
        return
    d, o = d.resolve(), out.expanduser().resolve()
    if o == d or d in o.parents:
        where = "is the" if o == d else "is inside the"
        raise UsageError(f"{arg_name('out')} {out}: {where} {arg_name('data')} folder {d}; the run's files would "
                         f"become a class of the next run on it: choose an {arg_name('out')} outside {d}")


def check_out(out: Path, force: bool, log: Callable[[str], None]) -> None:
    """Refuse an ``out`` that is a file, a folder of the user's (neither empty nor a run), or a run with a
    checkpoint when ``force`` is not given; first finish or remove what a killed ``--force`` run left there."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{arg_name('out')} {out}: exists and is not a folder")
    if not out.is_dir():
        return
    if not is_run(out):
        names = sorted(e.name for e in out.iterdir())
        if names:
            more = f" and {len(names) - 4} more" if len(names) > 4 else ""
            raise FileExistsRefused(
                f"{arg_name('out')} {out}: not a cnn-train run (no {CONFIG_FILE} of one) and not empty (it holds "
                f"{', '.join(names[:4])}{more}); cnn-train never writes into such a folder, with or without "
                f"{arg_name('force')}: choose another {arg_name('out')}, a new or empty folder")
        return
    finish_unfinished(out, log)
    # a run with a checkpoint needs --force; one interrupted before its first (train_config.json and perhaps
    # history.csv only) has nothing to lose, and a new run simply starts over in it
    if not force and (out / MODEL_FILE).exists():
        ours = [n for n in ARTIFACTS if (out / n).exists()]
        raise FileExistsRefused(f"{arg_name('out')} {out}: already holds a run ({', '.join(ours[:4])}); pass "
                                f"{arg_name('force')} to overwrite it, {arg_name('resume')} {out} to continue it, "
                                f"or choose another {arg_name('out')}")


def needs_staging(out: Path) -> bool:
    """True when a ``--force`` run into ``out`` would replace something: it is then built beside it."""
    return out.is_dir() and (any((out / n).exists() for n in ARTIFACTS) or bool(export_outputs(out)))


def start_staging(out: Path) -> Path:
    """A new staging folder in ``out`` for a ``--force`` run to build in (see :func:`check_out` for a live one)."""
    return StagedFolder(out, TRAIN).path


def discard(staging: Path) -> None:
    StagedFolder(staging.parent, TRAIN, staging).discard()


def swap_in(staging: Path, out: Path) -> None:
    """Commit the new run in ``staging``: from here on the folder holds it, even after a kill."""
    new = [n for n in ARTIFACTS if (staging / n).is_file()]
    StagedFolder(out, TRAIN, staging).commit(new, _replaced(out, new))


def _replaced(out: Path, new: list[str]) -> list[str]:
    """What goes from ``out`` when a run of the files ``new`` replaces its run: the old run's other files, and
    the exports made from its model."""
    return [n for n in ARTIFACTS if n not in new] + [p.name for p in export_outputs(out)]


def finish_unfinished(out: Path, log: Callable[[str], None]) -> None:
    """What a killed ``--force`` run left in ``out``: a committed swap is finished, anything else removed. A
    ``--force`` run still building there (its process alive) is refused."""
    staging = out / STAGING_DIR
    if not staging.is_dir():
        return
    who = live_staging(out, TRAIN)
    if who is not None:
        raise FileExistsRefused(f"{out}: another cnn-train run (process {who.pid}) is building a new run in it "
                                "now; wait for it to end, or choose another folder")
    done = recover(out, TRAIN, allowed=lambda n: n in ARTIFACTS, stale=lambda new: _replaced(out, new))
    if done.rolled and not done.damaged:
        log(f"train: {out}: finished replacing its run with the new one a killed --force run had completed")
        return
    if done.damaged:  # a record that names files a run does not write: not a swap this package committed
        (out / TRAIN.record).unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    if done.damaged or done.swept:
        log(f"train: {out}: removed the files of a --force run that was stopped before it could replace the "
            "run there; the folder holds its previous run, unchanged")
