"""The rules an output path given on the command line must pass before any work is done: a one-line
UsageError naming the flag, instead of a failure (or a traceback) at the end of a run."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..staging import refuse_special


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
