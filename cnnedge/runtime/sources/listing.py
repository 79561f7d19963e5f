"""Listing files to read: a folder walked recursively and a list file read line by line, each entry that
is not read reported as a Skipped in its place (only regular files are read; links to folders are not followed)."""
from __future__ import annotations

import os
import stat
from pathlib import Path, PurePath

from ...imaging.errors import ImageError
from ...imaging.files import MAX_FILE_BYTES, NOT_REGULAR, is_image_file, read_file, require_regular, stat_path
from .frames import HIDDEN, NOT_IMAGE, UNREADABLE, Skipped, SourceError


def folder_files(folder: Path, glob: str | None = None) -> tuple[list[Path], list[Skipped]]:
    """The files under ``folder`` that a run reads (see :func:`folder_entries`), and the
    entries it reports instead."""
    entries = folder_entries(folder, glob)
    return ([e for e in entries if isinstance(e, Path)], [e for e in entries if isinstance(e, Skipped)])


def folder_entries(folder: Path, glob: str | None = None) -> list[Path | Skipped]:
    """Every entry under ``folder``, recursive and sorted: the files to read (those matching
    ``glob``; without one, regular files named like images) and, in their places, the others
    with why they are not used. Hidden names are not entered, links to folders not followed;
    with a glob, files it does not match are left out without a report (the user chose)."""
    out: list[Path | Skipped] = []
    _walk(folder, PurePath(), _glob_pattern(glob), out)
    return out


def _glob_pattern(glob: str | None) -> str | None:
    while glob and glob.startswith("**/"):  # rglob's recursion is implied; PurePath.match has no **
        glob = glob[3:]
    return glob or None


def _walk(folder: Path, rel: PurePath, glob: str | None, out: list[Path | Skipped]) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.append(Skipped(str(folder), UNREADABLE, f"cannot list folder ({exc.strerror or exc})"))
        return
    for e in entries:
        path = folder / e.name
        if e.name.startswith("."):
            out.append(Skipped(str(path), HIDDEN, "hidden (the name starts with '.'); not read"))
            continue
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            _walk(path, rel / e.name, glob, out)
        elif not glob or PurePath(rel / e.name).match(glob):
            out.append(_entry(path, e, glob is not None))


def _entry(path: Path, e: os.DirEntry, globbed: bool) -> Path | Skipped:
    """A listed file, or why it is not read."""
    try:
        if e.is_symlink():
            st = stat_path(path)
            if stat.S_ISDIR(st.st_mode):
                return Skipped(str(path), NOT_REGULAR, f"a link to a folder, {os.path.realpath(path)} (links to "
                                                       "folders are not followed)")
            require_regular(path, st)
        elif not e.is_file(follow_symlinks=False):  # the listing's file type: no stat for a plain file
            require_regular(path, e.stat(follow_symlinks=False))
    except ImageError as exc:
        if exc.kind is not None:
            return Skipped(str(path), exc.kind, exc.reason)
        return path  # gone since the listing, or unreadable: its read reports it
    except OSError:
        return path
    if globbed or is_image_file(e.name):
        return path
    return Skipped(str(path), NOT_IMAGE, "not named like an image (use --glob to include it)")


def read_list_file(path: Path) -> list[Path | Skipped]:
    """The paths a list file names, one a line (relative to the list; ``#`` comments), in order;
    an entry that is not a regular file comes back as a :class:`Skipped`."""
    try:
        text = read_file(path, MAX_FILE_BYTES).decode("utf-8")
    except ImageError as exc:
        raise SourceError(f"{path}: cannot read list file ({exc.reason})") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: cannot read list file ({exc})") from None
    out: list[Path | Skipped] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if "\0" in line:  # no path holds one (os.stat would raise ValueError)
            raise SourceError(f"{path} line {number}: a NUL byte, which no file name holds; a list file names one "
                              "path a line")
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(list_entry(p if p.is_absolute() else path.parent / p))
    return out


def list_entry(p: Path) -> Path | Skipped:
    """A path named in a list: itself, or a Skipped when it is not a regular file (a missing
    file is left to its read, which reports it as failed)."""
    try:
        require_regular(p, stat_path(p))
    except ImageError as exc:
        if exc.kind is not None:
            return Skipped(str(p), exc.kind, exc.reason)
    return p
