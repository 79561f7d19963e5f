"""The one wrapper every export step runs under (as Ultralytics' ``@try_export``): it times the step, prints its
progress line, records it in the report, and turns a failure into one error that names the step and the model.

A step is ``with timer("FP16 ONNX"): ...``; the export as a whole runs in :meth:`StepTimer.guarded`, which
translates what escapes a step (or the code between steps) the one way, and keeps a stop a stop.
"""
from __future__ import annotations

import contextlib
import re
import time
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

from ..artifact.staged import EXPORT
from ..errors import CnnEdgeError, ExportError, UsageError, first_line
from .report import ParityFailure

if TYPE_CHECKING:
    import os

    from .report import ExportReport
    from .stops import Watch

T = TypeVar("T")


class StepTimer:
    """Times each step, reports progress, records it in the report."""

    def __init__(self, say: Callable[[str], None], watch: "Watch"):
        self.say, self.watch = say, watch
        self.report: "ExportReport | None" = None  # set once the export has one: the steps' times go there
        self.current: str | None = None  # the step running now (named in an unexpected failure)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        self.say(f"{name} ...")
        t0 = time.perf_counter()
        yield
        stop = self.watch.signalled()
        if stop is not None:  # a library swallowed the stop: the export ends here all the same
            raise stop
        dt = time.perf_counter() - t0
        self.current = None
        if self.report is not None:
            self.report.steps.append({"step": name, "seconds": round(dt, 3)})
        self.say(f"{name}: {dt:.1f} s")

    def warn(self, line: str) -> None:
        """A line the user should read even with -q: into the report's warnings, and said."""
        assert self.report is not None
        self.report.warnings.append(line)
        self.say(f"warning: {line}")

    def guarded(self, model_path: "str | os.PathLike", run: Callable[[], T]) -> T:
        """``run()``, its failures named (see :meth:`_named`); a stop (Ctrl-C, SIGTERM) stays a stop, whatever a
        library made of it (see :mod:`.stops`)."""
        try:
            return self._named(model_path, run)
        except BaseException as exc:
            stop = self.watch.stop_behind(exc)
            if stop is None or stop.__class__ is exc.__class__:
                raise
            raise stop from exc

    def _named(self, model_path: "str | os.PathLike", run: Callable[[], T]) -> T:
        """``run()``, its failures named: the step, the model, the library's message."""
        try:
            return run()
        except CnnEdgeError as exc:
            if self.current is None or isinstance(exc, (UsageError, ParityFailure)):
                raise
            msg = unstaged(str(exc))
            if msg == str(exc) and str(model_path) in msg:
                raise  # it names the model and nothing staged
            try:
                named = type(exc)(msg if str(model_path) in msg else f"{self.current} failed for {model_path}: {msg}")
            except TypeError:  # an error class with its own fields: as it is
                raise exc from None
            raise named from exc
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and exc.filename is not None:
                raise  # a file the user named or a full disk: the CLI names the file
            what = "model card nested too deeply" if isinstance(exc, RecursionError) else first_line(exc)
            raise ExportError(f"{self.current or 'preparing the export'} failed for {model_path}: "
                              f"{type(exc).__name__}: {what} (run with --traceback for the details)") from exc


def unstaged(message: str) -> str:
    """``message`` without the staging folder's paths, which are gone when the user reads it: a staged file is
    named by its own name."""
    return re.sub(r"(?:[^\s'\"]*/)?" + re.escape(EXPORT.staging) + r"[^\s'\":]*/([^\s'\":/]+)", r"\1 (staged)",
                  message)
