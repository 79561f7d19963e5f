"""The one walk over a folder of images, for training data and for calibration/parity sets alike.

It keeps the runtime's rules for reading from strangers: hidden names are left out, only names with an
image suffix are read, a link to a folder is not followed (so no link loop), a FIFO, device, broken
link or link loop is reported instead of read, and the order is sorted (names sorted at each level).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..imaging.errors import ImageError
from ..imaging.files import is_image_file, require_regular, stat_path

NOT_IMAGE = "not an image file"


@dataclass(frozen=True)
class Entry:
    """A file found by :func:`walk`: an image to read (``skip`` None), or why it is not read."""

    path: Path
    skip: str | None = None


def walk(folder: Path, *, recursive: bool = True) -> Iterator[Entry]:
    """Every non-hidden file under ``folder`` in sorted order; sub-folders entered when ``recursive``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Entry(Path(folder), f"cannot list folder ({exc.strerror or exc})")
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        path = Path(folder) / e.name
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                yield from walk(path)
            continue
        yield _entry(path, e)


def _entry(path: Path, e: os.DirEntry) -> Entry:
    try:
        if e.is_symlink():
            st = stat_path(path)
            if stat.S_ISDIR(st.st_mode):
                return Entry(path, f"a link to a folder, {os.path.realpath(path)} (links to folders are not "
                                   "followed)")
            require_regular(path, st)
        elif not e.is_file(follow_symlinks=False):
            require_regular(path, e.stat(follow_symlinks=False))
    except ImageError as exc:
        if exc.kind is not None:
            return Entry(path, exc.reason)
    except OSError:
        pass  # gone since the listing, or unreadable: its read reports it
    return Entry(path) if is_image_file(path) else Entry(path, NOT_IMAGE)


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The image files :func:`walk` finds to read, in its order."""
    return [e.path for e in walk(folder, recursive=recursive) if e.skip is None]


def has_images(folder: Path) -> bool:
    """Whether ``folder`` itself holds an image file to read (stops at the first)."""
    return any(e.skip is None for e in walk(folder, recursive=False))


def class_dirs(root: Path) -> list[Path]:
    """The non-hidden sub-folders of ``root`` by name; a class folder may be a link to one elsewhere."""
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def class_files(base: Path, classes: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """The image files in ``base/<class>/`` (not below), class by class, labelled with the class index."""
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        d = base / c
        if not d.is_dir():
            continue
        found = image_files(d)
        files += found
        labels += [i] * len(found)
    return files, np.asarray(labels, np.int64)


def labelled_entries(root: Path, classes: Sequence[str]) -> Iterator[tuple[Entry, int | None]]:
    """Every entry under ``root`` (see :func:`walk`) with the index of the class its folder is named after:
    None for a file at the top, or in a folder that names no class."""
    index = {c: i for i, c in enumerate(classes)}
    for e in walk(root):
        yield e, (index.get(e.path.parent.name) if e.path.parent != root else None)
