"""Putting an export's files in place all or nothing: a commit record, written before the first rename.

The steps write everything into a staging folder inside the output folder. Only when every step has
succeeded does :func:`commit` write ``.cnn-export-commit.json`` (atomically) naming the staging folder
and its files, rename them into place one by one, and remove the record. A kill during the renames
leaves the record: :func:`pending` tells a reader that the folder holds a mixed set, and
:func:`roll_forward` (run by the next cnn-export into that folder, before anything else) completes the
renames from the staging folder, so the folder ends with the whole new set. Standard library only, so
the runtime can check :func:`pending` without loading the exporter.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

RECORD = ".cnn-export-commit.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": 0, "staging": "", "files": []}  # unreadable: treated as interrupted, nothing to move
    return data if isinstance(data, dict) else {"pid": 0, "staging": "", "files": []}


def pending(folder: str | os.PathLike) -> str | None:
    """A one-line reason when ``folder`` holds a set of artifacts an interrupted export left half-renamed."""
    data = _read(Path(folder))
    if data is None or (isinstance(data.get("pid"), int) and data["pid"] != os.getpid() and _alive(data["pid"])):
        return None
    return (f"{folder}: an export into this folder was interrupted while putting its files in place, so they "
            "mix two exports; run cnn-export again (it completes the interrupted one first)")


def commit(staging: Path, out: Path, remove: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """Move every file of ``staging`` into ``out`` and delete ``remove`` (names in ``out``: what an earlier export
    left that this one replaces with nothing), recorded first so that a kill midway can be completed."""
    from ..atomic import write_text

    names = sorted(f.name for f in staging.iterdir() if f.is_file())
    gone = sorted(n for n in remove if n not in names)
    write_text(out / RECORD, json.dumps({"pid": os.getpid(), "staging": staging.name, "files": names,
                                         "remove": gone}) + "\n")
    _apply(out, staging, names, gone)
    (out / RECORD).unlink()
    return names


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
    """Complete a commit that a killed export left (its process is gone); returns the files moved now."""
    data = _read(out)
    if data is None:
        return []
    pid = data.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        return []  # that export is still committing
    moved: list[str] = []
    staging = out / str(data.get("staging") or "")
    files = data.get("files") if isinstance(data.get("files"), list) else []
    gone = data.get("remove") if isinstance(data.get("remove"), list) else []
    if data.get("staging") and staging.is_dir() and staging.parent == out:
        moved = _apply(out, staging, files, gone)
        shutil.rmtree(staging, ignore_errors=True)
    (out / RECORD).unlink(missing_ok=True)
    return moved
