"""Atomic file writes: a kill at any moment leaves the old file or the new one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import CnnEdgeError, FileExistsRefused, UsageError


class OutputError(CnnEdgeError):
    """An output that could not be written whole or put in place (a full disk, a file of its name that appeared
    while the run wrote it): an old file is left as it was, and the message says where this run's results are."""


def write_failure(target: str | os.PathLike, exc: OSError) -> OutputError:
    """The one line for a write into ``target``'s temporary that failed (a full disk, a quota, an I/O error)."""
    return OutputError(f"{target}: cannot write it ({exc.strerror or exc}); "
                       + ("the old file is left as it was" if os.path.lexists(target) else "nothing was replaced"))


def check_output(flag: str, path: str | os.PathLike | None, force: bool, suffix: str | None = None,
                 folder: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work is done: a one-line
    UsageError naming the flag, instead of a failure (or a traceback) at the end of a run.
    ``folder``: the path is a folder to create or fill, not a file."""
    if path is None:
        return
    p = Path(path)
    if suffix and p.suffix.lower() != suffix:
        raise UsageError(f"{flag} {p}: expected a {suffix} file name (e.g. {flag} out{suffix})")
    if folder:
        if p.exists() and not p.is_dir():
            raise UsageError(f"{flag} {p}: exists and is not a folder")
    else:
        if p.is_dir():
            raise UsageError(f"{flag} {p}: is a folder; give a file name")
        refuse_special(p, flag)
        if p.exists() and not force:
            raise UsageError(f"{flag} {p}: exists; pass --force to overwrite it")
    probe = p.parent if str(p.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {p}: cannot write there ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {p}: cannot write there ({probe} is not writable)")


def refuse_special(path: str | os.PathLike, flag: str | None = None) -> None:
    """UsageError when ``path`` exists and is not a regular file (a device, a FIFO, a socket, a link to one):
    an output is renamed into place, and renaming over ``/dev/null`` replaces the device itself."""
    import stat

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


def check_not_input(flag: str, path: str | os.PathLike | None, inputs: "list[str | os.PathLike]",
                    image_suffixes: tuple[str, ...] = ()) -> None:
    """UsageError when output ``path`` is one of the run's own inputs (the model, an image, a list or labels
    file), or an image file inside an input folder: ``--force`` is for old outputs, not for inputs."""
    if path is None or not os.path.exists(path):
        return
    out = Path(path).resolve()
    for given in inputs:
        if given is None or not isinstance(given, (str, os.PathLike)) or not os.path.exists(given):
            continue
        inp = Path(given)
        same = inp.is_file() and os.path.samefile(inp, out)
        inside = inp.is_dir() and out.is_relative_to(inp.resolve()) and out.suffix.lower() in image_suffixes
        if same or inside:
            raise UsageError(f"{flag} {path}: is {'an input of this run' if same else 'an image in input folder ' + str(inp)}"
                             f" ({given}); writing there would destroy it: give another file name")


def check_distinct(outputs: "list[tuple[str, str | os.PathLike | None]]", stdout: str | None = "-") -> None:
    """UsageError when two output flags name the same file (the same name, a link to it or a hard link), or
    both ``stdout`` (the name that means stdout; None: there is none): one output would replace the other and
    be lost without a word."""
    seen: list[tuple[str, str | os.PathLike, str]] = []
    for flag, path in outputs:
        if path is None:
            continue
        key = "-" if stdout is not None and str(path) == stdout else os.path.realpath(path)
        for other, other_path, other_key in seen:
            same = key == other_key or key != "-" and other_key != "-" and os.path.exists(key) \
                and os.path.exists(other_key) and os.path.samefile(key, other_key)
            if not same:
                continue
            if key == "-":
                raise UsageError(f"{other} - and {flag} -: both would write to stdout; send one of them to a file")
            raise UsageError(f"{flag} {path}: the same file as {other} {other_path}; one would replace the other: "
                             "give each output its own file")
        seen.append((flag, path, key))


def refuse_overwrite(path: str | os.PathLike, force: bool, flag: str = "--force") -> None:
    """Raise unless ``path`` is absent or the user said ``force``."""
    if not force and Path(path).exists():
        raise FileExistsRefused(f"{path} exists; pass {flag} to overwrite it")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it over ``path`` on success.

    The temporary keeps the target's suffix so that libraries that dispatch on the
    extension (Keras, ONNX, OpenCV) write the right format. ``replace=False``: a file that
    appeared at ``path`` meanwhile is kept (see :func:`put_in_place`). A write that fails
    without naming a file (a full disk) is an OSError naming ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _set_mode(tmp_path, target)
        refuse_special(target)
        put_in_place(tmp_path, target, replace)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


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


def write_bytes(path: str | os.PathLike, data: bytes, replace: bool = True) -> None:
    with atomic_path(path, replace) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, replace: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), replace)


STAGED_TAG = ".run-"  # in a staged output's temporary name: what the next run into the same place cleans up


class StagedOutput:
    """An output written under a temporary name beside ``target``, replacing ``target`` only on
    :meth:`commit`; :meth:`keep_partial` keeps what was written as ``<stem>.partial<suffix>`` instead,
    so a failed or interrupted run never costs the previous complete file.

    The temporary is locked (``flock``) for as long as this object lives, so a later run into the
    same place removes a leftover whose writer was killed (kill -9) and leaves a live one alone.
    ``replace=False`` (no ``--force``): a file that appeared at ``target`` while the run wrote is
    kept, and so are this run's results (see :func:`put_in_place`).
    """

    def __init__(self, target: str | os.PathLike, replace: bool = True) -> None:
        self.target = Path(target)
        self.replace = replace
        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staged(self.target)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}{STAGED_TAG}", suffix=f".tmp{self.target.suffix}",
                                   dir=self.target.parent)
        self.path = Path(tmp)
        self._fd: int | None = fd
        _lock(fd)

    @property
    def partial_path(self) -> Path:
        return self.target.with_name(f"{self.target.stem}.partial{self.target.suffix}")

    def commit(self) -> Path:
        """Put the finished file in place (fsynced, with the target's mode): see :func:`put_in_place`."""
        with open(self.path, "rb+") as fh:
            os.fsync(fh.fileno())
        _set_mode(self.path, self.target)
        refuse_special(self.target)
        try:
            put_in_place(self.path, self.target, self.replace)
        finally:
            self._release()
        return self.target

    def keep_partial(self) -> Path:
        """Keep what was written beside the target as ``<stem>.partial<suffix>``, or ``<stem>.partial-N<suffix>``
        when that name is taken (a file there may be the user's: it is never replaced); the target is untouched.
        With 999 partial files beside it (or a folder that takes no new name), it keeps its temporary name."""
        _set_mode(self.path, self.target)
        t = self.target
        kept = keep_under_free_name(self.path, [self.partial_path] + [t.with_name(f"{t.stem}.partial-{i}{t.suffix}")
                                                                     for i in range(2, 1000)])
        self._release()
        return kept

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no stale-file detection, nothing is removed
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_staged(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of earlier runs into ``target`` whose writer is gone (their lock is free)."""
    try:
        import fcntl
    except ImportError:
        return []
    from glob import escape

    t = Path(target)
    removed = []
    for p in t.parent.glob(f".{escape(t.name)}{STAGED_TAG}*.tmp{escape(t.suffix)}"):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run holds it
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed
