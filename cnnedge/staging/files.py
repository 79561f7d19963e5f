"""A staged file: written under a hidden name beside its target that names its owner, fsynced, then renamed into
place. A kill at any moment leaves the old file or the new one, never half of one, and the hidden file a killed
writer left is removed by the next write into the same target (see :mod:`.owner` for when a writer is dead)."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from glob import escape
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import CnnEdgeError, FileExistsRefused, UsageError
from .owner import me, parse_token

TAG = ".run-"  # in a staged file's hidden name: ``.<name>.run-<owner>-<random>.tmp<suffix>``


class OutputError(CnnEdgeError):
    """An output that could not be written whole or put in place (a full disk, a file of its name that appeared
    while the run wrote it): an old file is left as it was, and the message says where this run's results are."""


def write_failure(target: str | os.PathLike, exc: OSError) -> OutputError:
    """The one line for a write into ``target``'s temporary that failed (a full disk, a quota, an I/O error)."""
    return OutputError(f"{target}: cannot write it ({exc.strerror or exc}); "
                       + ("the old file is left as it was" if os.path.lexists(target) else "nothing was replaced"))


def refuse_overwrite(path: str | os.PathLike, force: bool, flag: str = "--force") -> None:
    """Raise unless ``path`` is absent or the user said ``force``: nothing a user made is replaced unasked."""
    if not force and Path(path).exists():
        raise FileExistsRefused(f"{path} exists; pass {flag} to overwrite it")


def refuse_special(path: str | os.PathLike, flag: str | None = None) -> None:
    """UsageError when ``path`` exists and is not a regular file (a device, a FIFO, a socket, a link to one):
    an output is renamed into place, and renaming over ``/dev/null`` replaces the device itself."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise UsageError(f"{flag + ' ' if flag else ''}{path}: cannot be checked ({exc.strerror})") from None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return
    kind = ("a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "special")
    raise UsageError(f"{flag + ' ' if flag else ''}{path}: not a regular file ({kind}); cnnedge writes its outputs "
                     "to regular files and never replaces anything else: give a file name")


class StagedFile:
    """A file written at :attr:`path`, a hidden name beside ``target`` that names this process, replacing
    ``target`` only on :meth:`commit`; :meth:`keep_partial` keeps what was written as ``<stem>.partial<suffix>``
    instead, so a failed or interrupted run never costs the previous complete file.

    The hidden name keeps the target's suffix, so that libraries that dispatch on the extension (Keras, ONNX,
    OpenCV) write the right format. Creating one first sweeps the hidden files that dead writers left for the
    same target. ``replace=False`` (no ``--force``): a file that appeared at ``target`` while the run wrote is
    kept, and so are this run's results (see :func:`put_in_place`).
    """

    def __init__(self, target: str | os.PathLike, replace: bool = True) -> None:
        self.target = Path(target)
        self.replace = replace
        self.target.parent.mkdir(parents=True, exist_ok=True)
        sweep_files(self.target)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}{TAG}{me().token}-",
                                   suffix=f".tmp{self.target.suffix}", dir=self.target.parent)
        os.close(fd)
        self.path = Path(tmp)

    @property
    def partial_path(self) -> Path:
        return self.target.with_name(f"{self.target.stem}.partial{self.target.suffix}")

    def commit(self) -> Path:
        """Put the finished file in place (fsynced, with the target's mode): see :func:`put_in_place`."""
        with open(self.path, "rb+") as fh:
            os.fsync(fh.fileno())
        _set_mode(self.path, self.target)
        refuse_special(self.target)
        put_in_place(self.path, self.target, self.replace)
        return self.target

    def keep_partial(self) -> Path:
        """Keep what was written beside the target as ``<stem>.partial<suffix>``, or ``<stem>.partial-N<suffix>``
        when that name is taken (a file there may be the user's: it is never replaced); the target is untouched.
        With 999 partial files beside it (or a folder that takes no new name), it keeps its temporary name."""
        _set_mode(self.path, self.target)
        t = self.target
        return keep_under_free_name(self.path, [self.partial_path] + [t.with_name(f"{t.stem}.partial-{i}{t.suffix}")
                                                                     for i in range(2, 1000)])

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def sweep_files(target: str | os.PathLike) -> list[Path]:
    """Remove the hidden files of earlier writes into ``target`` whose writer is dead; a live writer's stay."""
    t = Path(target)
    prefix = f".{t.name}{TAG}"
    removed = []
    for p in t.parent.glob(f"{escape(prefix)}*.tmp{escape(t.suffix)}"):
        who = parse_token(p.name[len(prefix):])
        if who is None or who.alive() or not p.is_file() or p.is_symlink():
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def staged_path(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a :class:`StagedFile`'s hidden path to write; put it in place when the block ends without an error,
    remove it otherwise. A write that fails without naming a file (a full disk) is an OSError naming ``path``."""
    staged = StagedFile(path, replace)
    try:
        yield staged.path
        staged.commit()
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        staged.discard()


def write_bytes(path: str | os.PathLike, data: bytes, replace: bool = True) -> None:
    with staged_path(path, replace) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, replace: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), replace)


def put_in_place(tmp: Path, target: Path, replace: bool) -> None:
    """Move the finished ``tmp`` to ``target``: renamed over it when ``replace``; otherwise hard-linked, which
    fails if a file of that name appeared since the run checked (another run into the same file), and then that
    file is left as it was, ``tmp`` is kept under a free name (``<stem>-2<suffix>``, ...) and an OutputError says
    where."""
    if replace:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        _appeared(tmp, target)
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(target):
            _appeared(tmp, target)
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


def _appeared(tmp: Path, target: Path) -> None:
    kept = keep_under_free_name(tmp, (target.with_name(f"{target.stem}-{i}{target.suffix}") for i in range(2, 1000)))
    raise OutputError(f"{target}: a file of this name appeared while this run was writing it (another run into "
                      f"the same file?); it was left as it was and this run's results are in {kept} "
                      "(pass --force to replace it)")


def keep_under_free_name(tmp: Path, names: Iterable[Path]) -> Path:
    """Give ``tmp`` the first of ``names`` that no file has (a hard link, which never replaces one; a check and a
    rename where links fail); ``tmp`` itself when every name is taken or the folder takes no new name."""
    for dest in names:
        try:
            os.link(tmp, dest)
        except FileExistsError:
            continue
        except OSError:
            if os.path.lexists(dest):
                continue
            try:
                os.replace(tmp, dest)
            except OSError:
                return tmp
            return dest
        os.unlink(tmp)
        return dest
    return tmp


def _set_mode(tmp: Path, target: Path) -> None:
    """mkstemp makes 0600 files; give the new file the target's mode, or what the umask allows."""
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
