"""The Sink base: one ``write`` method, ``commit`` when a run completes, and a context manager that
commits when its block ends without an exception."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..results import Result


class Sink:
    """Where results go. ``needs_images``: the pipeline keeps each original image for it.
    ``stopped``: the sink asks the run to end (a window closed). ``partial``: where a file
    sink closed without a commit kept what it wrote."""

    needs_images = False
    stopped = False
    partial: Path | None = None

    def write(self, result: Result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def write_batch(self, results: Sequence[Result]) -> None:
        """Several results at once (one inference call's); the default writes them one by one."""
        for r in results:
            self.write(r)

    def commit(self) -> None:
        """The run completed: make what was written final (file sinks replace their target)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.commit()
        self.close()
