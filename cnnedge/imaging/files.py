"""Reading files that strangers name: only regular files, never more than a limit, without blocking.

A FIFO would block a read forever and /dev/zero never ends; a path swapped between
the check and the open is caught on the open descriptor. Each refusal is an
:class:`~cnnedge.imaging.errors.ImageError` that a folder run reports and skips.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm")
MAX_FILE_BYTES = 256 << 20  # the most bytes read from one image (or list) file

# Why a path is not read, as a run's summary counts them (ImageError.kind, sources' Skipped.kind).
NOT_REGULAR = "not a regular file"
BROKEN_LINK = "broken link"
LINK_LOOP = "link loop"

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a folder walk takes this name as an image (by suffix: nothing is read)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def stat_path(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` (links followed) where a missing file, a broken link and a link loop are ImageErrors."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(path, f"broken link (its target {os.readlink(path)!r} does not exist)",
                             BROKEN_LINK) from None
        raise ImageError(path, "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "link loop (a symbolic link that leads back to itself)", LINK_LOOP) from None
        if exc.errno == errno.ENOTDIR:
            raise ImageError(path, "no such file") from None
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None


def require_regular(path: str | os.PathLike, st: os.stat_result) -> None:
    """ImageError (kind NOT_REGULAR) unless ``st`` is a regular file: a FIFO would block a read
    forever, and a device such as /dev/zero never ends."""
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a folder, not an image", NOT_REGULAR)
    what = _KINDS.get(stat.S_IFMT(st.st_mode), "not a plain file")
    if os.path.islink(path):
        what = f"a link to {what}, {os.path.realpath(path)}"
    raise ImageError(path, f"not a regular file ({what}); only regular files are read", NOT_REGULAR)


def read_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of one regular file, at most ``limit`` of them; problems become ImageError.

    The path is checked with ``stat`` before it is opened, and opened with O_NONBLOCK, so a
    FIFO swapped in between cannot block. A file that reads as ``stat`` said (one read of its
    size and one byte more giving exactly its size) is done in four system calls; any other
    (swapped since, growing, /proc files and devices that report 0, a short read) has its open
    descriptor checked again and is read on, stopping one byte past ``limit``. Each call lets
    another thread take the GIL, which costs more than the call on a busy pipeline.
    """
    st = stat_path(path)
    if not stat.S_ISREG(st.st_mode):
        require_regular(path, st)
    if st.st_size > limit:
        raise ImageError(path, f"{st.st_size} bytes is over the {limit}-byte file limit")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        first = os.read(fd, st.st_size + 1)
        if len(first) == st.st_size:
            return first
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            require_regular(path, st)
        return _read_capped(fd, path, st.st_size, limit, first)
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _read_capped(fd: int, path: str | os.PathLike, size: int, limit: int, first: bytes = b"") -> bytes:
    """Read on to the end after ``first``, or raise one byte past ``limit``. Each read asks for what
    fstat's ``size`` says is left and one byte more; a file longer than it said is read on in
    growing chunks."""
    parts = [first] if first else []
    got = len(first)
    if got > limit:
        raise ImageError(path, f"more than {limit} bytes: over the file limit")
    want = size - got + 1 if got <= size else max(got, 1 << 16)
    while True:
        chunk = os.read(fd, min(want, limit + 1 - got))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        if got > limit:
            raise ImageError(path, f"more than {limit} bytes: over the file limit")
        want = size - got + 1 if got <= size else max(got, 1 << 16)
