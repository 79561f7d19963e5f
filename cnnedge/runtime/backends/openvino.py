"""OpenVINO backend: an ONNX file (FP32, FP16, or the INT8 QDQ file, which OpenVINO runs as INT8) on the CPU.

Compiled once with ``openvino.Core().compile_model`` for the CPU plugin: ``INFERENCE_NUM_THREADS`` from
``threads``, FP32 inference precision (the plugin would pick bf16 on CPUs with AMX and change the answers), the
batch dimension left dynamic (one compile serves every batch size; a batch fixed by ``reshape`` took 0.95 of the
dynamic graph's time at batch 1 and 32 on imagenette-cnn's INT8 file, not worth a compile per batch size). The
performance hint follows the batch (``hint=None``): LATENCY for one image, and for larger batches THROUGHPUT, where
the batch is split over the plugin's streams and the parts run together (measured: 0.72-0.76 of LATENCY's time at
batch 32 with 2 threads, benchmarks/openvino_bench.py); ``hint="latency"`` or ``"throughput"`` forces one. With
one thread both hints are the same, and only the LATENCY model is compiled; above, the THROUGHPUT model is compiled
at the first batch above 1.

Runs are ``start_async`` and ``wait_for`` in 50 ms slices, so a signal's Python handler runs during a long batch,
and :meth:`OpenVinoBackend.stop_runs` (registered with :mod:`..interrupt`) cancels the requests in flight: OpenVINO
stops between nodes, so a batch of an ordinary network ends within a node's time. A single node that never ends
(a ``Loop`` of 10^15 trips) is not cancellable in OpenVINO: the call still raises RunInterrupted (or the load
timeout's error), the stuck request is left to spin on its engine thread until the process ends (see
:func:`_abandon`), and the process exits as usual; ONNX Runtime stops such a model outright.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...artifact.card import ModelCard
from ...errors import BackendUnavailable, CnnEdgeError, ModelLoadError, UsageError, arg_name
from ..interrupt import PerThread, RunInterrupted, register
from ..limits import check_threads
from .base import Backend, TensorSpec
from ...artifact.onnxmeta import card_from_metadata, onnx_metadata
from .ort import default_threads
from .ort_session import check_external_data

HINTS = ("latency", "throughput")
_WAIT_MS = 50  # a run is waited for in slices this long: a signal's handler and a stop run between them
_SETTLE_MS = 2000  # after a stop, how long a cancelled request may take to finish its node
# OpenVINO's messages quote its C++ sources: "Exception from src/inference/src/cpp/core.cpp:132:" and
# "Check 'false' failed at src/frontends/...cpp:151:" lines carry no meaning for a user
_SOURCE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:|Caught exception:)\s*", re.M)


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or BackendUnavailable naming the extra."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("backend openvino needs OpenVINO, which is not installed: "
                                 "pip install 'cnnedge[openvino]'") from None
    return openvino


def ov_text(exc: BaseException) -> str:
    """OpenVINO's message on one line, without its source locations (at most 300 characters)."""
    text = _SOURCE.sub("", str(exc))
    text = " ".join(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("Summary"))
    return (text or type(exc).__name__)[:300]


def _abandon(request: Any) -> None:
    """Never free ``request``: it is stuck in a node that never ends, and freeing it (by the garbage collector, or
    when the interpreter exits) waits for that node, so the process would hang at exit; a reference taken through
    the C API outlives every Python reference, and the process exits with its own code (measured with a Loop of
    10^15 trips). Its engine thread spins until the process ends."""
    import ctypes

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(request))


def _dim(d: Any) -> int | None:
    return d.get_length() if d.is_static else None


def _spec(port: Any, p: Path, what: str) -> TensorSpec:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ModelLoadError(f"{p}: its {what} has a dynamic rank, which cnnedge cannot feed")
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except Exception:  # noqa: BLE001 - an element type without a numpy counterpart (string, bf16)
        raise ModelLoadError(f"{p}: its {what} has type {port.get_element_type()}, which cnnedge does not feed"
                             ) from None
    try:
        name = port.get_any_name()
    except RuntimeError:  # an unnamed tensor
        name = what
    return TensorSpec(name, tuple(_dim(d) for d in shape), dtype)


class _Runner:
    """One thread's infer requests: one on the LATENCY model, one per stream on the THROUGHPUT model (made
    when first needed). ``stop`` is set by :meth:`OpenVinoBackend.stop_runs` while ``busy`` (the requests
    running) is not empty: the run in flight sees it between its waits."""

    __slots__ = ("latency", "streams", "stop", "busy", "generation")

    def __init__(self, latency: Any, generation: int) -> None:
        self.latency = latency
        self.generation = generation  # of the compiled models its requests belong to
        self.streams: list[Any] = []
        self.stop = False
        self.busy: list[Any] = []  # the requests now running, for stop_runs

    def cancel(self) -> None:
        for req in list(self.busy):
            try:
                req.cancel()
            except Exception:  # noqa: BLE001 - finished at this moment
                pass


class OpenVinoBackend(Backend):
    """An ONNX file compiled by OpenVINO for the CPU.

    Options: ``threads`` (``INFERENCE_NUM_THREADS``; default as ONNX Runtime's, half the cores, 1 to 4),
    ``hint`` (``"latency"`` or ``"throughput"``; default: latency for batch 1, throughput above).
    """

    name = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None, hint: str | None = None) -> None:
        super().__init__()
        ov = import_openvino()
        p = Path(path)
        self.path = str(p)
        if hint is not None and hint not in HINTS:
            raise UsageError(f"{arg_name('hint')} must be latency or throughput (or left out: chosen from the "
                             f"batch), got {hint!r}")
        self.threads = check_threads(threads, "threads") or default_threads()
        self.hint = hint
        chosen = "latency" if self.threads == 1 else hint or "latency at batch 1, throughput above"
        self.settings = {"threads": self.threads, "hint": chosen}  # cnn-infer's start line, cnn-bench's engines
        check_external_data(p)
        self._core = ov.Core()
        try:
            model = self._core.read_model(str(p))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for every failure
            text = ov_text(exc)
            if "conversion" in text.lower():  # ops its ONNX front end has no rule for
                raise ModelLoadError(f"{p}: OpenVINO cannot compile this model ({text}); run it with ONNX Runtime "
                                     "(backend ort-cpu)") from None
            raise ModelLoadError(f"{p}: not a model OpenVINO can read ({text})") from None
        inputs, outputs = model.inputs, model.outputs
        if len(inputs) != 1:
            raise ModelLoadError(f"{p}: a classifier has one input, this model has {len(inputs)}")
        if len(outputs) != 1:
            raise ModelLoadError(f"{p}: a classifier has one output, this model has {len(outputs)}, and nothing "
                                 "says which holds the class scores; export the graph with that output alone")
        self.input_spec = _spec(inputs[0], p, "input")
        self.output_spec = _spec(outputs[0], p, "output")
        self.fixed_batch = self.input_spec.batch
        self._model = model
        self._compiled: dict[str, Any] = {}
        self._generation = 0  # bumped when a cancel retires the compiled models (see _retire_compiled)
        self._compile_lock = threading.Lock()
        self._compile("latency")  # a model OpenVINO cannot compile is refused here, naming the file
        self.card = self._read_card(p)
        self._runners = PerThread()  # every thread's, for stop_runs
        register(self)

    # loading --------------------------------------------------------------------------------------
    def _config(self, hint: str) -> dict[str, Any]:
        return {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": hint.upper(),
                "INFERENCE_PRECISION_HINT": "f32"}

    def _compile(self, hint: str) -> Any:
        """The model compiled with ``hint`` (once; later calls reuse it)."""
        with self._compile_lock:
            got = self._compiled.get(hint)
            if got is None:
                try:
                    got = self._core.compile_model(self._model, "CPU", self._config(hint))
                except Exception as exc:  # noqa: BLE001
                    text = ov_text(exc)
                    if isinstance(exc, MemoryError) or "alloc" in text.lower():  # a ConstantOfShape of 400 GB
                        raise ModelLoadError(f"{self.path}: the model asks for more memory while compiling than "
                                             "OpenVINO could allocate here; a broken or hostile model, not one to "
                                             "run") from None
                    raise ModelLoadError(f"{self.path}: OpenVINO cannot compile this model ({text}); run it with "
                                         "ONNX Runtime (backend ort-cpu)") from None
                self._compiled[hint] = got
            return got

    def _read_card(self, p: Path) -> ModelCard | None:
        card, self.metadata = card_from_metadata(p, onnx_metadata(p))  # read_model drops metadata_props
        return card

    def executed_precisions(self) -> dict[str, int]:
        """``{"Convolution:u8": 8, ...}``: the layers of the graph OpenVINO runs at batch 1 (after its fusions) by
        type and runtime precision, which say whether the QDQ file runs as INT8 kernels here."""
        counts: dict[str, int] = {}
        for op in self._compile("latency").get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            counts[f"{kind}:{prec}"] = counts.get(f"{kind}:{prec}", 0) + 1
        return counts

    @property
    def streams(self) -> int:
        """How many parts a batch above 1 is split into: the THROUGHPUT model's streams (1 with one thread)."""
        if self.threads == 1 or self.hint == "latency":
            return 1
        return max(1, int(self._compile("throughput").get_property("NUM_STREAMS")))

    # running --------------------------------------------------------------------------------------
    def _runner(self) -> _Runner:
        generation = self._generation
        return self._runners.get(lambda: _Runner(self._compile("latency").create_infer_request(), generation),
                                 lambda runner: runner.generation == generation)

    def stop_runs(self) -> None:
        """Cancel every thread's runs in flight; each raises RunInterrupted (see the module's note on a node
        that never ends)."""
        for runner in self._runners.handles():
            if runner.busy:  # an idle thread's next run is not stopped
                runner.stop = True
                runner.cancel()

    def _requests_for(self, runner: _Runner, n: int) -> list[Any]:
        """The requests a batch of ``n`` runs on: the LATENCY one, or one per THROUGHPUT stream."""
        want = 1 if self.hint == "latency" or (self.hint is None and n == 1) else min(n, self.streams)
        if want == 1 and self.hint != "throughput":
            return [runner.latency]
        compiled = self._compile("throughput")
        while len(runner.streams) < want:
            runner.streams.append(compiled.create_infer_request())
        return runner.streams[:want]

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        runner = self._runner()
        n = batch.shape[0]
        doing = f"running a batch of {n}"
        reqs = self._requests_for(runner, n)
        runner.stop = False  # a stop that came as the previous run ended was for that one
        parts = np.array_split(batch, len(reqs)) if len(reqs) > 1 else [batch]
        runner.busy = reqs
        done = False
        try:
            for req, part in zip(reqs, parts):
                req.start_async({0: part}, share_inputs=True)
            for req in reqs:
                while not req.wait_for(_WAIT_MS):
                    if runner.stop:
                        raise RunInterrupted(f"{self.path}: the run was stopped while {doing}")
            outs = [req.get_output_tensor(0).data.copy() for req in reqs]
            done = True
        except RunInterrupted:
            runner.stop = False
            raise
        except Exception as exc:  # noqa: BLE001 - a cancelled or failed request raises RuntimeError
            if runner.stop:
                runner.stop = False
                raise RunInterrupted(f"{self.path}: the run was stopped while {doing}") from None
            raise self._failure(exc, doing) from None
        finally:
            runner.busy = []
            if not done:  # a stop, a failure or Ctrl-C in this thread: no request may go on running
                self._settle(runner, reqs)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _settle(self, runner: _Runner, reqs: list[Any]) -> None:
        """After a run left early (a stop, Ctrl-C in this thread): cancel its requests and let them finish, so
        they can run again; a request still busy after :data:`_SETTLE_MS` (a node that never ends) is left to
        its engine thread and this thread gets new requests next time."""
        stuck = False
        for req in reqs:
            try:
                req.cancel()
                stuck |= not req.wait_for(_SETTLE_MS)
            except Exception:  # noqa: BLE001 - cancelled: it has finished
                pass
        if stuck:
            for req in reqs:
                _abandon(req)
        self._retire_compiled()

    def _retire_compiled(self) -> None:
        """Compile afresh after a cancel. OpenVINO 2026.4's CPU plugin leaves a cancelled run's shapes in the graph
        its requests share: another request whose next batch has the size of its last one then runs at the
        cancelled batch's size (measured: a batch of 3 after a cancelled 64 ran 16 times as long, read past its
        input and returned 64 rows). Every thread's requests are replaced at their next run."""
        with self._compile_lock:
            self._compiled = {}
            self._generation += 1

    def _failure(self, exc: BaseException, doing: str) -> CnnEdgeError:
        text = ov_text(exc)
        if "shape" in text.lower() or "dimension" in text.lower():
            return ModelLoadError(f"{self.path}: OpenVINO refused the input's shape while {doing} ({text}); the "
                                  "model's card may not match its graph: re-export it")
        if isinstance(exc, MemoryError) or "alloc" in text.lower():
            return ModelLoadError(f"{self.path}: the model asks for more memory while {doing} than OpenVINO could "
                                  f"allocate here; a smaller {arg_name('batch')} may fit; if batch 1 fails too, a "
                                  "broken or hostile model")
        return ModelLoadError(f"{self.path}: OpenVINO failed while {doing} ({text})")

    def _close_impl(self) -> None:
        self._runners.clear()
        self._compiled = {}
        self._model = None
