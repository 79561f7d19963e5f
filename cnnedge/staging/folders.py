"""A staged folder: a set of files built in a hidden folder inside their target folder and put in place all or
nothing, by a record written before the first rename.

:meth:`StagedFolder.commit` writes the record (its owner, the staging folder, the files it moves in and the
files it removes), renames the files into place one by one, removes what the record says goes, then removes the
record and the staging folder; a stop signal (Ctrl-C, SIGTERM) during the renames finishes them first. A kill
leaves one of two states, and :func:`recover`, run by the next writer into the folder, handles each by the one
rule of :mod:`.owner` (a leftover whose owner lives is left alone):

- a staging folder and no record: the commit never began and the old set is whole; the folder is swept;
- the record: the new set is half in place; :func:`pending` tells a reader, and the commit is rolled forward
  from the staging folder.

Standard library only, so the runtime can check :func:`pending` without loading an exporter or a trainer.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .owner import HOST, Owner, from_record, me, parse_token

OWNER_FILE = ".owner.json"  # in a staging folder whose name carries no owner
COMMIT_GRACE_S = 60.0


@dataclass(frozen=True)
class Layout:
    """Where a kind of staged folder lives in its target folder: ``staging`` is a name prefix ending in ``-``
    (one folder per process, its name carrying the owner) or the one folder's name (its owner in
    :data:`OWNER_FILE`); ``record`` is the commit record's path relative to the target folder."""

    staging: str
    record: str

    @property
    def per_process(self) -> bool:
        return self.staging.endswith("-")


@dataclass
class Recovered:
    """What :func:`recover` did in a folder: the commit it rolled forward (``moved``: the files moved now;
    ``whole``: False when its staging folder was gone, so the folder may mix two sets and the record stays) and
    the staging folders of dead writers it swept."""

    rolled: bool = False
    owner: Owner | None = None
    moved: list[str] = field(default_factory=list)
    whole: bool = True
    damaged: bool = False  # the record named files it may not: nothing was moved
    swept: list[Path] = field(default_factory=list)


class StagedFolder:
    """A hidden folder in ``target`` to build a set of files in, put in place by :meth:`commit`."""

    def __init__(self, target: str | os.PathLike, layout: Layout, path: str | os.PathLike | None = None) -> None:
        """``path``: an existing staging folder; otherwise one is made now (for a layout with one staging folder,
        whatever a dead writer left there is removed first)."""
        self.target, self.layout = Path(target), layout
        if path is not None:
            self.path = Path(path)
            return
        self.target.mkdir(parents=True, exist_ok=True)
        if layout.per_process:
            self.path = Path(tempfile.mkdtemp(prefix=f"{layout.staging}{me().token}-", dir=self.target))
            return
        self.path = self.target / layout.staging
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()
        _write_json(self.path / OWNER_FILE, me().as_record())

    @property
    def record(self) -> Path:
        return self.target / self.layout.record

    def commit(self, files: Iterable[str] | None = None, remove: Iterable[str] = ()) -> list[str]:
        """Move ``files`` (names in the staging folder, in the order given; every file there, sorted, when
        None) into the target folder and delete ``remove`` (names there that this set replaces with nothing),
        recorded first so that a kill midway is rolled forward. A stop (Ctrl-C, SIGTERM) during the renames
        finishes them before it is raised: the record has decided for the new set. A failure leaves the record
        and the staging folder for the next writer to complete. Returns the names moved."""
        names = list(files) if files is not None else sorted(
            f.name for f in self.path.iterdir() if f.is_file() and f.name != OWNER_FILE)
        gone = sorted(n for n in remove if n not in names)
        tmp = self.path / ".record.tmp"  # in the staging folder: a kill before the rename leaves no record
        _write_json(tmp, {**me().as_record(), "staging": self.path.name, "files": names, "remove": gone})
        os.replace(tmp, self.record)
        try:
            _apply(self.target, self.path, names, gone)
        except KeyboardInterrupt:
            _apply(self.target, self.path, names, gone)
            self._done()
            raise
        self._done()
        return names

    def _done(self) -> None:
        self.record.unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)

    def in_flight(self) -> bool:
        """Whether a record still needs this staging folder (a commit that failed midway): it is then kept for
        the next writer to complete."""
        data = _read(self.record)
        return data is not None and data.get("staging", self.layout.staging) == self.path.name

    def discard(self) -> None:
        """Remove the staging folder, unless a commit from it is in flight."""
        if not self.in_flight():
            shutil.rmtree(self.path, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read(record: Path) -> dict | None:
    try:
        data = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: a commit was decided, nothing is known of it
    return data if isinstance(data, dict) else {}


def _plain(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _apply(out: Path, staging: Path, names: list, gone: list) -> list[str]:
    """The renames and removals of one commit; what was moved (a name a killed commit moved is absent)."""
    moved = []
    for name in names:
        src = staging / str(name)
        if _plain(name) and src.is_file():
            os.replace(src, out / name)
            moved.append(name)
    for name in gone:
        if _plain(name) and name not in names:
            (out / name).unlink(missing_ok=True)
    return moved


def _committing(data: dict, record: Path) -> bool:
    """Whether the record's owner is another process, alive: its commit is under way, not interrupted. A commit is
    renames (milliseconds), so the record of another host's process (often a container's, whose pid means nothing
    here) that is older than :data:`COMMIT_GRACE_S` was left by a commit cut midway, not one under way."""
    who = from_record(data)
    if who is None or who.mine():
        return False
    if who.host and who.host != HOST:
        try:
            return time.time() - record.stat().st_mtime < COMMIT_GRACE_S
        except OSError:
            return False
    return who.alive()


def pending(target: str | os.PathLike, layout: Layout) -> bool:
    """Whether ``target`` holds a set that a killed (or failed) commit left half in place."""
    record = Path(target) / layout.record
    data = _read(record)
    return data is not None and not _committing(data, record)


def staging_owner(folder: Path, layout: Layout) -> Owner | None:
    """The owner of a staging folder: carried by its name or its owner file; None when it names none (then it
    counts as dead)."""
    if layout.per_process:
        return parse_token(folder.name[len(layout.staging):])
    data = _read(folder / OWNER_FILE)
    return from_record(data) if data else None


def live_staging(target: str | os.PathLike, layout: Layout) -> Owner | None:
    """The live owner of ``target``'s single staging folder (another process building there now), if any."""
    folder = Path(target) / layout.staging
    if layout.per_process or not folder.is_dir():
        return None
    who = staging_owner(folder, layout)
    return who if who is not None and not who.mine() and who.alive() else None


def sweep(target: str | os.PathLike, layout: Layout) -> list[Path]:
    """Remove the staging folders in ``target`` whose owner is dead and that no record needs (their commit never
    began: their files never reached ``target``); a live writer's folder stays."""
    out = Path(target)
    data = _read(out / layout.record)
    needed = str(data.get("staging", layout.staging)) if data is not None else None
    if layout.per_process:
        found = [d for d in out.glob(f"{layout.staging}*") if parse_token(d.name[len(layout.staging):])]
    else:
        found = [out / layout.staging]
    removed = []
    for d in found:
        if d.name == needed or not d.is_dir() or d.is_symlink():
            continue
        who = staging_owner(d, layout)
        if who is not None and (who.mine() or who.alive()):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def roll_forward(target: str | os.PathLike, layout: Layout, allowed: Callable[[str], bool] | None = None,
                 stale: Callable[[list[str]], list[str]] | None = None) -> Recovered:
    """Complete the commit a dead writer's record decided for, from its staging folder. ``allowed``: which names
    a record may move (one naming others is damaged: nothing is moved); ``stale``: what to remove when the record
    does not say (an older record)."""
    out = Path(target)
    data = _read(out / layout.record)
    if data is None or _committing(data, out / layout.record):
        return Recovered()  # nothing to do, or that commit is under way
    files = data.get("files") if isinstance(data.get("files"), list) else []
    staging = out / str(data.get("staging", layout.staging) or "")
    done = Recovered(rolled=True, owner=from_record(data))
    if not files or not all(_plain(n) and (allowed is None or allowed(n)) for n in files):
        done.damaged, done.whole = True, False
        return done
    gone = data.get("remove") if isinstance(data.get("remove"), list) else (stale(files) if stale else [])
    if not (staging.name and staging.is_dir() and staging.parent == out and _plain(staging.name)):
        done.whole = False
        return done  # nothing to complete it from: the record stays, and readers keep refusing the folder
    done.moved = _apply(out, staging, files, gone)
    (out / layout.record).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    return done


def recover(target: str | os.PathLike, layout: Layout, allowed: Callable[[str], bool] | None = None,
            stale: Callable[[list[str]], list[str]] | None = None) -> Recovered:
    """Finish or undo what writers killed in ``target`` left, before a new writer starts there: a commit cut midway
    is rolled forward (its record decided for the new set), staging folders of dead writers are swept (the old
    set is whole)."""
    done = roll_forward(target, layout, allowed, stale) if Path(target).is_dir() else Recovered()
    done.swept = sweep(target, layout) if Path(target).is_dir() else []
    return done
