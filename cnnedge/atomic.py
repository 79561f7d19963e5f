"""Atomic file writes: a kill at any moment leaves the old file or the new one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import FileExistsRefused


def refuse_overwrite(path: str | os.PathLike, force: bool, flag: str = "--force") -> None:
    """Raise unless ``path`` is absent or the user said ``force``."""
    if not force and Path(path).exists():
        raise FileExistsRefused(f"{path} exists; pass {flag} to overwrite it")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it over ``path`` on success.

    The temporary keeps the target's suffix so that libraries that dispatch on the
    extension (Keras, ONNX, OpenCV) write the right format.
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
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _set_mode(tmp: Path, target: Path) -> None:
    """mkstemp makes 0600 files; give the new file the target's mode, or what the umask allows."""
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
