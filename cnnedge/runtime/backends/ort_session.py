"""An ONNX Runtime session as the runtime runs it: the external-data check before it opens, and its failures as
one line naming the file (a hostile model's 400 GB allocation, a shape its card did not promise), with runs that
another thread can stop."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ...errors import CnnEdgeError, ModelLoadError, arg_name, first_line
from ..interrupt import PerThread, RunInterrupted


def check_external_data(path: str | os.PathLike) -> None:
    """Refuse an ONNX file whose external data lies outside its folder.

    Uses the ``onnx`` package when installed (without loading the data); ONNX
    Runtime refuses such paths by itself as well, and its error is mapped too.
    """
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError:
        return
    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a model"
        raise ModelLoadError(f"{p}: not a valid ONNX model ({first_line(exc)})") from None
    root = p.resolve().parent
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    for t in tensors:
        if not uses_external_data(t):
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (root / loc).resolve()
        if os.path.isabs(loc) or not target.is_relative_to(root):
            raise ModelLoadError(f"{p}: external data {loc!r} of tensor {t.name!r} lies outside the model's "
                                 "folder; refusing to read it (keep external data files beside the model)")


ALLOC = re.compile(r"failed to allocate memory for requested buffer of size (\d+)|bad[_ ]alloc", re.I)
NODE = re.compile(r"while running (\w+) node")
# ORT's "/onnxruntime_src/x.cc:360 void* f(size_t, ...) " source locations and "a == b was false." asserts
SOURCE_LOCATION = re.compile(r"\S*onnxruntime_src/\S+ .*?\)\s+|[^.]* was false\.\s*")


def ort_failure(path: str | os.PathLike, exc: BaseException, doing: str) -> CnnEdgeError:
    """One line for an ONNX Runtime failure while ``doing`` (``"loading"``, ``"running a batch of 8"``).

    A model can ask for any amount of memory (a ``ConstantOfShape`` of 1e5x1e5x10 wants
    400 GB) or fail on the input shape its card promised; ORT's message spans lines and
    quotes its C++ sources. This keeps the node and the size, and names the file.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    node = NODE.search(text)
    where = f" in its {node.group(1)} node" if node else ""
    alloc = ALLOC.search(text)
    if alloc or isinstance(exc, MemoryError):
        size = f"{int(alloc.group(1)) / 1e9:.3g} GB of" if alloc and alloc.group(1) else "more"
        batch = re.search(r"batch of (\d+)", doing)
        why = (f"a smaller {arg_name('batch')} may fit; if batch 1 fails too, a broken or hostile model"
               if batch and int(batch.group(1)) > 1 else "a broken or hostile model, not one to run")
        return ModelLoadError(f"{path}: the model asks for {size} memory{where} while {doing}, more than ONNX "
                              f"Runtime could allocate here; {why}")
    text = SOURCE_LOCATION.sub("", text.split("Status Message:", 1)[-1] if node else text).strip()
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)[:300]
    if "dimension" in text.lower() or "shape" in text.lower() or "rank" in text.lower():
        return ModelLoadError(f"{path}: ONNX Runtime refused the input's shape{where} while {doing} ({text}); the "
                              "model's card may not match its graph: re-export it")
    return ModelLoadError(f"{path}: ONNX Runtime failed{where} while {doing} ({text})")


class GuardedSession:
    """An ``InferenceSession`` whose runs fail with :func:`ort_failure`'s one line, whichever
    path calls them (``infer``, the predict slot, a benchmark's timed call), and that another
    thread can stop (:meth:`stop_runs`: each calling thread's own ``RunOptions.terminate``);
    everything else is the session's own."""

    __slots__ = ("_session", "_path", "_options")

    def __init__(self, session: Any, path: str) -> None:
        self._session, self._path = session, path
        self._options = PerThread()  # every thread's RunOptions, for stop_runs

    def _run_options(self) -> Any:
        import onnxruntime as ort

        return self._options.get(ort.RunOptions)

    def stop_runs(self) -> None:
        for ro in self._options.handles():
            ro.terminate = True

    def _failed(self, ro: Any, exc: BaseException, doing: str) -> BaseException:
        if ro.terminate:
            ro.terminate = False  # this thread's next run starts afresh
            return RunInterrupted(f"{self._path}: the run was stopped while {doing}")
        return ort_failure(self._path, exc, doing)

    def run(self, output_names: Any, feed: Any) -> Any:
        ro = self._run_options()
        try:
            return self._session.run(output_names, feed, ro)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own classes for every failure
            shape = next(iter(getattr(v, "shape", ()) for v in feed.values()), ()) if isinstance(feed, dict) else ()
            raise self._failed(ro, exc, f"running a batch of {shape[0]}" if shape else "running") from None

    def run_with_iobinding(self, binding: Any) -> Any:
        ro = self._run_options()
        try:
            return self._session.run_with_iobinding(binding, ro)
        except Exception as exc:  # noqa: BLE001
            raise self._failed(ro, exc, "running a batch") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
