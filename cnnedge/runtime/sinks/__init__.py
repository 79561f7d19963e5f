"""Sinks: where results go. Each is a context manager with one ``write(result)`` method
(``write_batch(results)`` for several at once).

Files are staged (a temporary file in the same folder) and replace the old file
only at ``commit()``, which :func:`cnnedge.runtime.runner.run` calls when the run
completes and the context manager calls when its block ends without an
exception. A sink closed without a commit keeps what it wrote beside the target
as ``<name>.partial.<ext>`` (its ``partial`` attribute): a failed or interrupted
run never costs the previous complete file.

Paths are written as they are: a file name that is not UTF-8 (a 0xFF byte, legal
on Linux) reaches JSON as an escape, CSV as its own bytes, and a terminal as
``\xff``.

Where each part lives: :mod:`.base` (Sink), :mod:`.text` (lines on a terminal), :mod:`.files` (JSON
Lines and CSV files), :mod:`.annotated` (annotated images, ``--save-dir``), :mod:`.video`
(``--save-video``), :mod:`.window` (``--show``), :mod:`.evaluation` (``--eval``) and :mod:`.progress`.
"""
from __future__ import annotations

from .annotated import SaveDirSink, annotate
from .base import Sink
from .evaluation import EvalSink, read_labels_csv
from .files import CSV_COLUMNS, CsvSink, JsonlSink
from .progress import Progress
from .text import ErrorSink, LineSink, display_path, failure_line, where
from .video import VideoSink, check_video_format, video_codec
from .window import ShowSink, has_gui

__all__ = ["CSV_COLUMNS", "Sink", "display_path", "where", "failure_line", "ErrorSink", "LineSink", "JsonlSink",
           "CsvSink", "annotate", "SaveDirSink", "video_codec", "check_video_format", "VideoSink", "has_gui",
           "ShowSink", "read_labels_csv", "EvalSink", "Progress"]
