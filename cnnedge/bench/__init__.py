"""cnn-bench as a library: which file, backend, precision and batch size to ship, and the latency to expect.

>>> from cnnedge.bench import BenchConfig, run_bench
>>> report = run_bench(BenchConfig(["runs/demo"], batches=[1, 8, 32], duration=2))
>>> print(report.table()); report.write_json("bench.json"); report.plot("bench.png")

Modules: :mod:`.plan` (artifacts, backends, batch sizes), :mod:`.measure` (timed
calls, GPU copy split), :mod:`.stats` (percentiles, spread between runs),
:mod:`.e2e` (the pipeline on a folder against its decode+resize bound),
:mod:`.machine` (machine facts), :mod:`.report` (table, JSON, Markdown, plot).
Importing this package loads neither TensorFlow nor TensorRT; TensorFlow loads
only when a ``.keras`` file is measured.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BenchConfig", "BenchReport", "run_bench"]


def __getattr__(name: str) -> Any:
    if name in ("BenchConfig", "run_bench"):
        from . import core

        return getattr(core, name)
    if name == "BenchReport":
        from .report import BenchReport

        return BenchReport
    raise AttributeError(f"module 'cnnedge.bench' has no attribute {name!r}")
