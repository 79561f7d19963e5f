"""Putting an export's files in place all or nothing, and recovering from an export that was killed.

The steps write everything into a staging folder inside the output folder, named after the exporting
process (:func:`staging_prefix`). Only when every step has succeeded does :func:`commit` write
``.cnn-export-commit.json`` naming the staging folder and its files, rename them into place one by one, and
remove the record; a stop signal during the renames finishes them first. A kill -9 leaves either a staging
folder and no record (the old set is whole: :func:`recover` removes the folder) or the record (the new set
is half in place: :func:`pending` tells a reader, and :func:`recover`, run by the next cnn-export into that
folder before anything else, completes the renames from the staging folder). An owner counts as dead when no
process has its pid, when that process is a zombie, or when the pid now belongs to a process started at
another time. Standard library only, so the runtime can check :func:`pending` without loading the exporter.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

RECORD = ".cnn-export-commit.json"
STAGING_PREFIX = ".cnn-export-"


def _stat(pid: int) -> tuple[str, str] | None:
    """The state letter and start time (clock ticks since boot) of process ``pid``, from ``/proc``; None where
    there is no ``/proc`` to read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def owner() -> tuple[int, str]:
    """This process's pid and start time ("" where unknown): what a staging folder and a record are named by."""
    stat = _stat(os.getpid())
    return os.getpid(), stat[1] if stat else ""


def alive(pid: int, started: str = "") -> bool:
    """Whether the process that wrote ``pid`` (started at ``started``, when known) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    stat = _stat(pid)
    if stat is None:
        return True  # no /proc (or not ours to read): kill() says it exists
    return stat[0] not in "ZX" and (not started or stat[1] == started)


def staging_prefix() -> str:
    """The name a staging folder of this process starts with: ``.cnn-export-<pid>-<start time>-``."""
    pid, started = owner()
    return f"{STAGING_PREFIX}{pid}-{started or 0}-"


def _staging_owner(name: str) -> tuple[int, str] | None:
    """The pid and start time a staging folder's name carries (an older name carries the pid only)."""
    parts = name[len(STAGING_PREFIX):].split("-")
    if not name.startswith(STAGING_PREFIX) or len(parts) < 2 or not parts[0].isdigit():
        return None
    started = parts[1] if len(parts) >= 3 and parts[1].isdigit() and parts[1] != "0" else ""
    return int(parts[0]), started


def _read(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": 0, "staging": "", "files": []}  # unreadable: treated as interrupted, nothing to move
    return data if isinstance(data, dict) else {"pid": 0, "staging": "", "files": []}


def _record_alive(data: dict) -> bool:
    pid = data.get("pid")
    started = data.get("started") if isinstance(data.get("started"), str) else ""
    return isinstance(pid, int) and pid > 0 and pid != os.getpid() and alive(pid, started)


def pending(folder: str | os.PathLike) -> str | None:
    """A one-line reason when ``folder`` holds a set of artifacts an interrupted export left half-renamed."""
    data = _read(Path(folder))
    if data is None or _record_alive(data):
        return None
    return (f"{folder}: an export into this folder was interrupted while putting its files in place, so they "
            "mix two exports; run cnn-export again (it completes the interrupted one first)")


def commit(staging: Path, out: Path, remove: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """Move every file of ``staging`` into ``out`` and delete ``remove`` (names in ``out``: what an earlier export
    left that this one replaces with nothing), recorded first so that a kill midway can be completed. A stop
    (Ctrl-C, SIGTERM) during the renames finishes them before it is raised: the record has decided for the new
    set. A failure leaves the record and the staging folder for the next export to complete."""
    names = sorted(f.name for f in staging.iterdir() if f.is_file())
    gone = sorted(n for n in remove if n not in names)
    pid, started = owner()
    tmp = staging / f"{RECORD}.tmp"  # in the staging folder: a kill before the rename leaves nothing in ``out``
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": pid, "started": started, "staging": staging.name, "files": names,
                             "remove": gone}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out / RECORD)
    try:
        _apply(out, staging, names, gone)
    except KeyboardInterrupt:
        _apply(out, staging, names, gone)
        (out / RECORD).unlink()
        raise
    (out / RECORD).unlink()
    return names


def in_flight(out: Path, staging: Path) -> bool:
    """Whether a commit record in ``out`` still needs ``staging`` (a commit that failed midway): the staging
    folder is then kept for the next export to complete it."""
    data = _read(out)
    return data is not None and data.get("staging") == staging.name


def _apply(out: Path, staging: Path, names: list, gone: list) -> list[str]:
    """The renames and removals of one commit; what was moved."""
    moved = []
    for name in names:
        src = staging / str(name)
        if isinstance(name, str) and "/" not in name and src.is_file():
            os.replace(src, out / name)
            moved.append(name)
    for name in gone:
        if isinstance(name, str) and "/" not in name and name not in names:
            (out / name).unlink(missing_ok=True)
    return moved


def roll_forward(out: Path) -> list[str]:
    """Complete a commit that a killed export left (its process is gone) from its staging folder; returns the
    files moved now."""
    data = _read(out)
    if data is None or _record_alive(data):
        return []  # nothing to do, or that export is still committing
    moved: list[str] = []
    staging = out / str(data.get("staging") or "")
    files = data.get("files") if isinstance(data.get("files"), list) else []
    gone = data.get("remove") if isinstance(data.get("remove"), list) else []
    if not (data.get("staging") and staging.is_dir() and staging.parent == out):
        return []  # nothing to complete it from: the record stays, and the runtime keeps refusing the folder
    moved = _apply(out, staging, files, gone)
    (out / RECORD).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    return moved


def sweep_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders in ``out`` whose exporting process is dead (killed before its commit: the
    folder's files never reached ``out``); a live export's folder stays."""
    removed = []
    for d in out.glob(f"{STAGING_PREFIX}*-*"):
        who = _staging_owner(d.name)
        if who is None or not d.is_dir() or who[0] == os.getpid() or alive(*who):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def recover(out: Path) -> list[str]:
    """Finish or undo what exports killed while writing into ``out`` left, before a new export starts there, so
    that the folder holds one export's files: a commit cut midway is completed (its record decided for the
    new set), staging folders of dead exports are removed (their commit never began, the old set is whole).
    One line per thing done, for the user."""
    lines = []
    data = _read(out)
    if data is not None and not _record_alive(data):
        staging = out / str(data.get("staging") or "")
        whole = bool(data.get("staging")) and staging.is_dir()
        moved = roll_forward(out)
        who = f"process {data.get('pid')}" if data.get("pid") else "a process"
        lines.append(f"{out}: an export ({who}) was killed while putting its files in place; " + (
            f"completed it: {len(moved)} of its files moved in, the folder holds that export's set"
            if whole else "its staging folder is gone, so the folder may mix two exports: export again with "
                          "--force"))
    removed = sweep_stale_staging(out)
    if removed:
        lines.append(f"{out}: removed {len(removed)} staging folder(s) of exports killed before putting their "
                     f"files in place ({', '.join(d.name for d in removed)}); the folder's files are as they were")
    return lines


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
