"""Results as JSON Lines or CSV files, staged beside the target: replaced at commit, kept as
``<name>.partial.<ext>`` when closed without one; or on a stream (stdout), as they come."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Sequence, TextIO

from ...staging import StagedFile, refuse_overwrite, refuse_special, write_failure
from ..results import Result
from .base import Sink

CSV_COLUMNS = ("source", "path", "frame", "timestamp", "index", "label", "score", "latency_ms", "topk", "error")


class _FileSink(Sink):
    """A text file staged beside ``path``: renamed over it at commit, kept as ``<name>.partial.<ext>``
    when closed without one. Names that are not UTF-8 are written as their own bytes. Each batch is flushed,
    so a full disk fails the run at the batch that meets it (an OutputError naming the file), never at the end.
    Without ``force``, a file that appears at ``path`` during the run is kept (see :class:`StagedFile`).

    ``path`` may be an open text stream instead (cnn-infer's ``--json -``: stdout): rows go to it a batch at a
    time, flushed, and it is neither staged nor closed."""

    def __init__(self, path: str | os.PathLike | TextIO, force: bool = False, newline: str | None = None) -> None:
        self.written = 0
        self.path: Path | None = None
        self._staged: StagedFile | None = None
        if hasattr(path, "write"):
            self._fh: TextIO = path  # type: ignore[assignment]
            return
        refuse_overwrite(path, force, "--force")  # type: ignore[arg-type]
        refuse_special(path)  # type: ignore[arg-type]
        self.path = Path(path)  # type: ignore[arg-type]
        self._staged = StagedFile(self.path, replace=force)
        self._fh = open(self._staged.path, "w", encoding="utf-8", errors="surrogateescape", newline=newline)

    def write(self, r: Result) -> None:
        self.write_batch([r])

    def write_batch(self, results: Sequence[Result]) -> None:
        text = "".join(self._format(r) for r in results)
        if self._staged is None:  # a stream's reader sees each batch, and one that went away is found now
            self._fh.write(text)
            self._fh.flush()
        else:
            try:
                self._fh.write(text)
                self._fh.flush()
            except OSError as exc:
                raise write_failure(self.path, exc) from None  # type: ignore[arg-type]
        self.written += len(results)

    def _format(self, r: Result) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def commit(self) -> None:
        if self._staged is None:
            self._fh.flush()
        elif not self._fh.closed:
            try:
                self._fh.close()
                self._staged.commit()
            except OSError as exc:  # fsync or rename on a full disk: what was written is kept, as partial
                self.partial = self._staged.keep_partial()
                raise write_failure(self.path, exc) from None  # type: ignore[arg-type]

    def close(self) -> None:
        """Without a commit: keep what was written as ``<name>.partial.<ext>`` (nothing written: nothing kept).
        A stream is flushed, not closed (a reader that went away is not an error here)."""
        if self._staged is None:
            with contextlib.suppress(BrokenPipeError):
                self._fh.flush()
        elif not self._fh.closed:
            with contextlib.suppress(OSError):  # a full disk: what reached the file is what is kept
                self._fh.close()
            if self.written:
                self.partial = self._staged.keep_partial()
            else:
                self._staged.discard()


class JsonlSink(_FileSink):
    """``--json out.jsonl``: one object per result (failures carry ``error``)."""

    def _format(self, r: Result) -> str:
        return json.dumps(r.to_dict()) + "\n"


class CsvSink(_FileSink):
    """``--csv out.csv``: the same fields, ``topk`` as ``label:score;label:score``."""

    def __init__(self, path: str | os.PathLike | TextIO, force: bool = False) -> None:
        super().__init__(path, force, newline="")
        self._row = io.StringIO()
        self._w = csv.DictWriter(self._row, CSV_COLUMNS)
        self._w.writeheader()
        self._fh.write(self._take())

    def _take(self) -> str:
        text = self._row.getvalue()
        self._row.seek(0)
        self._row.truncate()
        return text

    def _format(self, r: Result) -> str:
        d = r.to_dict()
        if "topk" in d:
            d["topk"] = ";".join(f"{lab}:{s}" for lab, s in d["topk"])
        self._w.writerow({k: d.get(k, "") for k in CSV_COLUMNS})
        return self._take()
