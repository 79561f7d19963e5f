"""How every export step compares models, in one place.

A model here is something that runs a batch: a runtime backend's ``infer`` (an ONNX file opened as cnn-infer
opens it), the Classifier's feed of decoded images, or the source model's ``predict``. A comparison runs several
of them side by side over one pass of a re-startable batch source, a batch at a time, and keeps only what it
needs of each output (the outputs, or just the top-1 classes): the parity report, the card check, INT8's layer
selection and clean-up's check all go through :func:`side_by_side`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

Run = Callable[[Any], Any]
Batches = Callable[[], Iterable[Any]]


def side_by_side(runs: Sequence[Run], batches: Batches, keep: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> list[np.ndarray]:
    """Each of ``runs`` on every batch of one pass of ``batches()``: its outputs as float32 rows (or what ``keep``
    keeps of them), in order. Memory holds one batch, plus what is kept."""
    kept: list[list[np.ndarray]] = [[] for _ in runs]
    for b in batches():
        for parts, run in zip(kept, runs):
            out = np.asarray(run(b), dtype=np.float32).reshape(len(b), -1)
            parts.append(out if keep is None else keep(out))
    return [np.concatenate(p) if p else np.zeros((0, 0), np.float32) for p in kept]


def outputs(run: Run, batches: Batches, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """:func:`side_by_side` for one model."""
    return side_by_side([run], batches, keep)[0]


def top1(out: np.ndarray) -> np.ndarray:
    return np.argmax(out, axis=1)


def slices(items: Sequence[Any], size: int) -> Batches:
    """Re-startable batches of ``size`` items (a list, or images decoded from files when sliced)."""
    return lambda: (items[i:i + size] for i in range(0, len(items), size))


@contextlib.contextmanager
def opened(*models: "str | os.PathLike | Any") -> Iterator[list[Run]]:
    """ONNX models (paths, or in-memory protos written to a :mod:`.scratch` folder) opened as cnn-infer opens
    them, on ONNX Runtime's CPU provider with one thread; their ``infer``, closed afterwards. A graph that does
    not load is named as the graph in memory, not by the temporary file it was written to."""
    from ..errors import ModelLoadError
    from ..runtime.backends import load_backend
    from .scratch import folder

    with folder("cnnedge-compare-") as tmp, contextlib.ExitStack() as stack:
        runs = []
        for i, m in enumerate(models):
            if isinstance(m, (str, os.PathLike)):
                runs.append(stack.enter_context(load_backend(m, "ort-cpu", threads=1)).infer)
                continue
            path = tmp / f"model{i}.onnx"
            path.write_bytes(m.SerializeToString())
            try:
                runs.append(stack.enter_context(load_backend(path, "ort-cpu", threads=1)).infer)
            except ModelLoadError as exc:
                raise type(exc)(str(exc).replace(str(path), "the graph in memory")) from None
        yield runs
