"""The benchmark: every (artifact, backend, batch) that can run here, timed the same way."""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..artifact.kinds import TABLE, is_gpu
from ..errors import BackendUnavailable, MissingDependency, ModelLoadError, UsageError
from ..runtime.backends.sizing import check_batch_pixels, dynamic_size_error
from ..runtime.interrupt import DEFAULT_LOAD_TIMEOUT_S, Deadline, RunInterrupted, exit_code_for, load_timeout_error
from ..runtime.limits import MAX_SEED, check_threads
from . import machine, measure, plan
from .report import BenchReport, Row, Skipped
from .stats import MAX_SAMPLES_KEPT, latency, spread

DEFAULT_DURATION_S = 2.0
DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 3
MAX_SPREAD = 0.25
KERAS_METHODS = ("tf.function", "predict", "call")


@dataclass
class BenchConfig:
    """What to measure and how; the CLI fills it from flags (see ``cnn-bench --help``)."""

    models: list[str]
    backends: list[str] = field(default_factory=lambda: ["auto"])
    batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    iters: int | None = None                # timed calls per combination; None: use duration
    duration: float | None = None           # seconds per combination; DEFAULT_DURATION_S when iters is None too
    warmup: int = DEFAULT_WARMUP
    repeats: int = DEFAULT_REPEATS
    threads: int | None = None              # ONNX Runtime intra-op threads (and TensorFlow's, for .keras)
    seed: int = 0
    copy: bool = True                       # GPU: time host<->device copies (False: device-resident buffers)
    end_to_end: str | None = None
    e2e_batch: int | None = None
    workers: int | None = None
    trust: bool = False
    input_size: tuple[int, int] | None = None  # for graphs of dynamic height and width (--input-size)
    max_spread: float = MAX_SPREAD
    keep_samples: bool = True
    load_timeout_s: float | None = DEFAULT_LOAD_TIMEOUT_S  # the first call may take this long (a model that never ends)

    def check(self) -> None:
        if self.iters is not None and self.duration is not None:
            raise UsageError("give --iters or --duration, not both")
        if self.iters is not None and self.iters < 1:
            raise UsageError(f"--iters must be at least 1, got {self.iters}")
        if self.duration is not None and not self.duration > 0:
            raise UsageError(f"--duration must be positive, got {self.duration}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.repeats < 1:
            raise UsageError(f"--repeats must be at least 1, got {self.repeats}")
        check_threads(self.threads, "--threads")  # 100,000 intra-op threads crashed ONNX Runtime
        check_threads(self.workers, "--workers")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")
        if self.iters is None and self.duration is None:
            self.duration = DEFAULT_DURATION_S


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP during :func:`run_bench`: ``report`` holds the rows measured before it (the one in
    progress is dropped), ``exit_code`` is 128 + the signal. A KeyboardInterrupt, so a caller that does not look
    for it stops as before."""

    def __init__(self, report: BenchReport, exit_code: int) -> None:
        super().__init__()
        self.report, self.exit_code = report, exit_code


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> BenchReport:
    """Measure every combination of ``cfg`` that can run here; return the report (nothing is written).
    Interrupted, it raises :class:`BenchInterrupted` with what was measured."""
    say = log or (lambda _m: None)
    cfg.check()
    backends = plan.parse_backends(",".join(cfg.backends))
    batches = plan.parse_batches(cfg.batches)
    artifacts = plan.find_artifacts(cfg.models)
    plan.preflight(artifacts, cfg.trust)
    pairs = plan.expand(artifacts, backends)
    files = None
    if cfg.end_to_end is not None:
        from .e2e import list_images

        files = list_images(cfg.end_to_end)

    from ..runtime.backends.ort import default_threads

    threads = cfg.threads or default_threads()
    report = BenchReport(started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine.facts())
    report.settings = {**{k: v for k, v in asdict(cfg).items() if k not in ("keep_samples",)},
                       "backends": backends, "batches": batches, "threads": threads,
                       "load_before": machine.load_average()}
    t_all = time.perf_counter()
    try:
        _measure_all(cfg, report, pairs, batches, files, threads, say)
    except KeyboardInterrupt as exc:
        report.seconds = time.perf_counter() - t_all
        raise BenchInterrupted(report, exit_code_for(exc)) from None
    report.seconds = time.perf_counter() - t_all
    report.settings["load_after"] = machine.load_average()
    if not report.rows and not report.skipped:
        raise UsageError("nothing to measure")
    return report


def _measure_all(cfg: BenchConfig, report: BenchReport, pairs: list[Any], batches: list[int],
                 files: list[str] | None, threads: int, say: Callable[[str], None]) -> None:
    bounds: dict[Any, Any] = {}
    for art, backend in pairs:
        say(f"{art.name} on {backend} ...")
        opts: dict[str, Any] = {}
        if "threads" in TABLE[backend].options:  # ONNX Runtime's intra-op threads, OpenVINO's
            opts["threads"] = threads
        if backend == "keras":
            _tensorflow_threads(cfg.threads, report)
            if cfg.trust:
                opts["trust"] = True
        try:
            from ..runtime.backends import load_backend

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                be = load_backend(art.path, backend, input_size=cfg.input_size, **opts)
        except (BackendUnavailable, MissingDependency) as exc:
            report.skipped.append(Skipped(art.name, backend, str(exc)))
            continue
        try:
            precision = be.card.precision if be.card is not None else art.precision
            _measure_artifact(cfg, report, art, backend, be, batches, precision)
            report.engines[f"{art.name} on {backend}"] = dict(be.settings)  # once measured: a stop lists no more
            if files is not None:
                _end_to_end(cfg, report, art, backend, be, files, batches, threads, bounds, say)
        finally:
            be.close()
    _auto_lines(report, pairs, batches, threads)


def _auto_lines(report: BenchReport, pairs: list[Any], batches: list[int], threads: int) -> None:
    """An engine line per ONNX file and batch for which ``auto`` already picked a CPU engine here (its cache: what
    cnn-infer and the Classifier run it on, and why); nothing is measured for it."""
    from ..runtime.backends.engine_choice import ENGINES, cached_choice

    for art in dict.fromkeys(a for a, b in pairs if b in ENGINES):
        for batch in batches:
            try:
                choice = cached_choice(art.path, batch, threads)
            except OSError:  # the file went away after it was measured
                choice = None
            if choice is not None:
                report.engines[f"{art.name} on auto at batch {batch}"] = {"auto": str(choice)}


def _tensorflow_threads(threads: int | None, report: BenchReport) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from .._lazy import require

    tf = require("tensorflow", "benchmarking .keras models")
    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow already started in this process; its own setting stays and is recorded below
    report.settings["tensorflow_threads"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or
                                             "TensorFlow default (all cores)",
                                             "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or
                                             "TensorFlow default"}


def _measure_artifact(cfg: BenchConfig, report: BenchReport, art: plan.Artifact, backend: str, be: Any,
                      batches: list[int], precision: str) -> None:
    methods = KERAS_METHODS if backend == "keras" else ("infer",)
    done: dict[int, list[int]] = {}
    for b in batches:
        eff, note = plan.effective_batch(b, be.fixed_batch, getattr(be, "min_batch", 1) or 1, be.max_batch)
        if note:
            report.notes.append(f"{art.name} on {backend}: {note}")
        done.setdefault(eff, []).append(b)
    for eff, requested in sorted(done.items()):
        if None in be.input_spec.shape[1:]:
            raise dynamic_size_error(be.path, be.input_spec)
        check_batch_pixels(be, eff)
        try:
            x = measure.make_input(be.input_spec.shape, be.input_spec.dtype, eff, cfg.seed)
        except MemoryError:
            dims = "x".join(str(d) for d in be.input_spec.shape[1:])
            raise ModelLoadError(f"{art.path}: a batch of {eff} inputs of {dims} (the input its graph and card "
                                 "declare) does not fit in memory") from None
        for method in methods:
            call: measure.Call
            if method == "predict":
                call = measure.keras_predict_call(be.model, x)
            elif method == "call":
                call = measure.keras_direct_call(be.model, x)
            elif is_gpu(backend):
                call = measure.split_call(be, x, cfg.copy)
            else:
                call = measure.plain_call(be, x)
            _first_call(call, be, art.path, cfg.load_timeout_s)
            t = measure.time_calls(call, warmup=cfg.warmup, iters=cfg.iters, duration=cfg.duration,
                                   repeats=cfg.repeats)
            report.rows.append(_row(cfg, report, art, backend, method, precision, eff, requested, t))


def _first_call(call: measure.Call, be: Any, path: Any, seconds: float | None) -> None:
    """One untimed call under the load timeout: a model that never finishes is refused, naming the file."""
    with Deadline(seconds, be.stop_runs) as deadline:
        try:
            call()
        except RunInterrupted:
            if not deadline.expired:
                raise
            raise load_timeout_error(str(path), seconds or 0) from None


def _row(cfg: BenchConfig, report: BenchReport, art: plan.Artifact, backend: str, method: str, precision: str,
         batch: int, requested: list[int], t: measure.Samples) -> Row:
    lat = latency(t.samples_ms)
    run_p50 = [float(np.median(t.samples_ms[a:b])) for a, b in t.runs]
    sp = spread(run_p50)
    # back-to-back calls: images/s = batch / mean call latency (the tail included); the loop's wall time,
    # which also counts the harness between calls, is kept in the JSON as wall_s
    throughput = batch * t.calls / (sum(t.samples_ms) / 1000.0)
    stages = None
    if t.stages_ms:
        stages = {k: {"p50": round(float(np.median(v)), 6), "mean": round(float(np.mean(v)), 6)}
                  for k, v in t.stages_ms.items()}
    row = Row(art.name, str(art.path), backend, method, precision, batch, requested, lat, throughput, run_p50, sp,
              stages, cfg.copy if stages else None,
              t.samples_ms if cfg.keep_samples and t.calls <= MAX_SAMPLES_KEPT else None, sum(t.wall_s))
    if sp is not None and sp > cfg.max_spread:
        load = machine.load_average()
        report.warnings.append(
            f"{art.name} {row.label} batch {batch}: p50 varied {sp:.0%} between {len(run_p50)} runs "
            f"({min(run_p50):.3g}-{max(run_p50):.3g} ms); the machine is noisy (load average "
            f"{load[0] if load else '?'}): measure again with --duration, fewer --threads or when it is quieter")
    return row


def _end_to_end(cfg: BenchConfig, report: BenchReport, art: plan.Artifact, backend: str, be: Any,
                files: list[str], batches: list[int], threads: int, bounds: dict, say: Callable[[str], None]) -> None:
    """The pipeline through the Classifier, on the same artifact and backend (a second session)."""
    from ..runtime.classifier import Classifier
    from ..runtime.pipeline import default_workers
    from .e2e import bound, run_end_to_end

    want = cfg.e2e_batch or max(batches)
    eff, note = plan.effective_batch(want, be.fixed_batch, getattr(be, "min_batch", 1) or 1, be.max_batch)
    check_batch_pixels(be, eff, "--e2e-batch" if cfg.e2e_batch else "--batch")
    if note:
        report.notes.append(f"{art.name} on {backend} end-to-end: {note}")
    workers = cfg.workers or default_workers()
    opts: dict[str, Any] = {"threads": threads} if "threads" in TABLE[backend].options else {}
    if backend == "keras" and cfg.trust:
        opts["trust"] = True
    say(f"{art.name} on {backend}: end-to-end on {len(files)} images, batch {eff}, {workers} workers ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = Classifier(art.path, backend, topk=1, input_size=cfg.input_size, **opts)
    with clf:
        key = (clf.card.input, clf.card.preprocess.resize, clf.reduce_decode, workers)
        if key not in bounds:
            bounds[key] = bound(clf, files, workers)
        report.end_to_end.append(run_end_to_end(clf, art.name, files, str(cfg.end_to_end), eff, workers,
                                                bounds[key]))
