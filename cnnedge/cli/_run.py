"""One place that turns exceptions into messages and exit codes for every CLI."""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Sequence, TextIO

from ..errors import CnnEdgeError, ExitCode


def run_cli(prog: str, main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None,
            stderr: TextIO | None = None) -> int:
    """Call ``main(argv)``; a user error becomes ``prog: error: message`` and its exit code.

    ``--traceback`` anywhere in argv (or CNNEDGE_TRACEBACK=1) shows the real traceback.
    """
    err = stderr or sys.stderr
    args = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in args or os.environ.get("CNNEDGE_TRACEBACK") == "1"
    args = [a for a in args if a != "--traceback"]
    from ..runtime.interrupt import exit_code_for, watch_signals

    watch_signals()  # SIGTERM stops like Ctrl-C, and both stop a model run inside its engine
    try:
        code = main(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a reader that went away is caught, not in Python's flush at exit
        return int(code or 0)
    except BrokenPipeError:  # `cnn-... | head -1`: the reader has what it wanted; end quietly
        silence(sys.stdout)
        return int(ExitCode.BROKEN_PIPE)
    except CnnEdgeError as exc:
        if show_tb:
            traceback.print_exc(file=err)
        print(f"{prog}: error: {exc}", file=err)
        return int(exc.exit_code)
    except OSError as exc:
        if exc.filename is None:
            raise
        if show_tb:
            traceback.print_exc(file=err)
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"{prog}: error: {where}: {exc.strerror or exc}", file=err)
        return int(ExitCode.FAILURE)
    except KeyboardInterrupt as exc:
        code = exit_code_for(exc)
        name = {129: " (SIGHUP)", 143: " (SIGTERM)"}.get(code, "")
        print(f"{prog}: interrupted{name}", file=err)
        return code


def silence(stream: TextIO) -> None:
    """Point the file descriptor of a stream whose reader went away at /dev/null: what is still buffered for
    it, and Python's flush at exit, then go nowhere instead of raising BrokenPipeError ('Exception ignored')."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a StringIO in tests): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def entry(prog: str, main: Callable[[Sequence[str]], int | None]) -> Callable[[], None]:
    """A console-script entry point for ``main``."""
    def _entry() -> None:
        sys.exit(run_cli(prog, main))
    return _entry
