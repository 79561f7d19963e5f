"""``auto``'s CPU engine for an ONNX file, picked by measurement when ONNX Runtime and OpenVINO are both installed.

Neither engine is the faster everywhere: on a 2-core EPYC OpenVINO ran the INT8 QDQ file of a 224x224 CNN in
0.39-0.45 of ONNX Runtime's time at batch 32, and a tiny digits model 1.5-1.9x slower at batch 1 (its per-call
overhead). So both are opened with the threads in use and timed at the batch in use, in interleaved rounds on
random input of the model's spec within about :data:`BUDGET_S` seconds (at least :data:`MIN_ROUNDS` rounds); the
engine whose times have the smaller lower quartile wins, and the other is closed (the lower quartile, not the median: on
a shared machine other processes only ever add time to a call, and a large batch gets few calls in the budget).
OpenVINO must take under :data:`MARGIN` of ONNX Runtime's time to win: a near tie stays with ONNX Runtime, whose
start is cheaper. A model one engine cannot open or run is the other's, with the reason kept. The answer is
kept in :mod:`.engine_cache`, so the next open of the same file on the same machine measures nothing.

``CNNEDGE_AUTO_MEASURE=0`` turns measuring off (``auto`` is ONNX Runtime, as before); naming a backend
(``--backend ort-cpu`` or ``openvino``) never measures.
"""
from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from typing import Any, Callable

import numpy as np

from ...errors import CnnEdgeError, first_line
from .base import Backend

MEASURE_ENV = "CNNEDGE_AUTO_MEASURE"
ENGINES = ("ort-cpu", "openvino")
BUDGET_S = 1.5
MIN_ROUNDS, MAX_ROUNDS = 5, 400
MARGIN = 0.95
_PACKAGES = {"ort-cpu": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class EngineChoice:
    """What ``auto`` picked and why: ``engine``; ``ratio``, the winner's time over the other's (None when
    the other could not run it); ``reason`` (the other engine's failure, or the comparison); ``batch`` and
    ``threads`` measured at; ``source``: ``"measured now"`` or ``"cached YYYY-MM-DD"``."""

    engine: str
    ratio: float | None
    reason: str
    batch: int
    threads: int
    source: str

    def __str__(self) -> str:
        return f"{self.engine} ({self.reason}; {self.source})"


def measuring_on(opts: dict[str, Any]) -> bool:
    """Whether ``auto`` measures the CPU engines: both installed, measuring not turned off, and no option only
    ONNX Runtime takes (``fp16``, ``cache_dir``, ``device_id``: those keep ONNX Runtime, as before)."""
    if os.environ.get(MEASURE_ENV, "1").strip().lower() in ("0", "no", "off", "false"):
        return False
    if set(opts) - {"threads"}:
        return False
    return all(find_spec(p) is not None for p in _PACKAGES.values())


def _versions() -> dict[str, str]:
    """The engines' versions, without importing OpenVINO (0.2 s) when the cache names ONNX Runtime; ONNX Runtime's
    from the module, whichever wheel brought it (onnxruntime, onnxruntime-gpu ...)."""
    import onnxruntime

    try:
        ov = metadata.version("openvino")
    except metadata.PackageNotFoundError:
        ov = "?"
    return {"onnxruntime": str(onnxruntime.__version__), "openvino": ov}


def _measure_batch(be: Backend, batch: int) -> int:
    """A fixed-batch model runs (and is timed) at its own batch whatever the caller's; a graph of dynamic size at
    most at the batch its pixel limit allows."""
    from .sizing import most_batch

    most = most_batch(be)
    return be.fixed_batch or (batch if most is None else max(1, min(batch, most)))


def _sample(be: Backend, batch: int) -> np.ndarray:
    spec = be.input_spec
    shape = (batch,) + tuple(d or 1 for d in spec.shape[1:])
    rng = np.random.default_rng(0)
    if np.dtype(spec.dtype).kind in "ui":
        return rng.integers(0, 256 if spec.dtype == "uint8" else 128, shape).astype(spec.dtype)
    return rng.random(shape, dtype=np.float32).astype(spec.dtype)


def time_engines(engines: dict[str, Backend], x: np.ndarray, budget_s: float = BUDGET_S) -> dict[str, float]:
    """The lower quartile of each engine's seconds per call on ``x``: interleaved rounds (one call each, the order
    turned every round) after two warm-up calls, until ``budget_s`` is spent (at least :data:`MIN_ROUNDS`)."""
    names = list(engines)
    for name in names:
        for _ in range(2):
            engines[name].infer(x)
    times: dict[str, list[float]] = {n: [] for n in names}
    end = time.perf_counter() + budget_s
    for r in range(MAX_ROUNDS):
        if r >= MIN_ROUNDS and time.perf_counter() > end:
            break
        for name in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            engines[name].infer(x)
            times[name].append(time.perf_counter() - t0)
    return {n: float(np.percentile(t, 25)) for n, t in times.items()}


def choose_cpu_engine(path: str | os.PathLike, batch: int | None, threads: int,
                      open_engine: Callable[[str], Backend]) -> Backend:
    """The faster CPU engine for ``path`` at ``batch`` and ``threads``, opened by ``open_engine(name)``, from the
    cache or measured now; ``choice`` and ``settings["auto"]`` say which and why. Both engines failing to open
    raises ONNX Runtime's error, as ``auto`` did before. A file whose export report says the gate did not run it
    on OpenVINO stays on ONNX Runtime, unmeasured."""
    from ...artifact.verified import unverified_engines
    from . import engine_cache

    batch = batch or 1
    held_back = (unverified_engines(path) or {}).get("openvino")
    if held_back is not None:  # the gate never ran the file there: its answers there are unchecked
        return _mark(open_engine("ort-cpu"), EngineChoice(
            "ort-cpu", None, f"openvino not measured: the export's gate did not run this file on it ({held_back}); "
            "re-export with OpenVINO installed to let auto weigh it", batch, threads, "from the export report"))
    key = engine_cache.cache_key(engine_cache.file_sha256(path), _versions(), threads, batch)
    hit = engine_cache.lookup(key)
    if hit is not None:
        be = _open_cached(hit, threads, open_engine)
        if be is not None:
            return be
    opened: dict[str, Backend] = {}
    failed: dict[str, CnnEdgeError] = {}
    try:
        for name in ENGINES:
            try:
                opened[name] = open_engine(name)
            except CnnEdgeError as exc:
                failed[name] = exc
        choice, winner = _decide(opened, failed, batch, threads)
    except BaseException:
        for be in opened.values():
            be.close()
        raise
    for name, be in opened.items():
        if name != winner:
            be.close()
    be = opened[winner]
    engine_cache.store(key, {"engine": choice.engine, "ratio": choice.ratio, "reason": choice.reason,
                             "batch": choice.batch, "date": datetime.date.today().isoformat()})
    return _mark(be, choice)


def _decide(opened: dict[str, Backend], failed: dict[str, CnnEdgeError], batch: int,
            threads: int) -> tuple[EngineChoice, str]:
    if not opened:
        raise failed["ort-cpu"]
    first = next(iter(opened.values()))
    n = _measure_batch(first, batch)
    if len(opened) == 1:
        (name,) = opened
        other = next(iter(failed))
        return EngineChoice(name, None, f"{other} cannot open it: {first_line(failed[other], 160)}", n, threads,
                            "measured now"), name
    x = _sample(first, n)
    for name, be in opened.items():  # one that fails on the sample loses, with its reason
        try:
            be.infer(x)
        except CnnEdgeError as exc:
            failed[name] = exc
    ok = {k: v for k, v in opened.items() if k not in failed}
    if len(ok) < 2:
        if not ok:
            raise failed["ort-cpu"]
        (name,) = ok
        other = next(k for k in opened if k != name)
        return EngineChoice(name, None, f"{other} cannot run it: {first_line(failed[other], 160)}", n, threads,
                            "measured now"), name
    took = time_engines(ok, x)
    ratio = took["openvino"] / took["ort-cpu"]
    settings = f"at batch {n}, {threads} thread{'s' if threads != 1 else ''}"
    if ratio < MARGIN:
        return EngineChoice("openvino", round(ratio, 2), f"{ratio:.2f}x ort-cpu's time {settings}", n, threads,
                            "measured now"), "openvino"
    return EngineChoice("ort-cpu", round(1 / ratio, 2), f"openvino took {ratio:.2f}x its time {settings}", n,
                        threads, "measured now"), "ort-cpu"


def cached_choice(path: str | os.PathLike, batch: int, threads: int) -> EngineChoice | None:
    """What ``auto`` picked for ``path`` at ``batch`` and ``threads`` on this machine, from the cache (nothing is
    opened or measured; cnn-bench's engine lines), or None: not measured yet, or measuring is off."""
    from . import engine_cache

    if not measuring_on({}):
        return None
    key = engine_cache.cache_key(engine_cache.file_sha256(path), _versions(), threads, batch)
    hit = engine_cache.lookup(key)
    return None if hit is None else _from_entry(hit, threads)


def _from_entry(hit: dict[str, Any], threads: int) -> EngineChoice | None:
    name, ratio, batch = hit["engine"], hit.get("ratio"), hit.get("batch")
    if name not in ENGINES:
        return None
    return EngineChoice(name, ratio if isinstance(ratio, (int, float)) else None, str(hit.get("reason", "")),
                        batch if isinstance(batch, int) else 0, threads, f"cached {hit.get('date', '?')}")


def _open_cached(hit: dict[str, Any], threads: int, open_engine: Callable[[str], Backend]) -> Backend | None:
    """The cached winner opened, or None (measure again) when it no longer opens."""
    choice = _from_entry(hit, threads)
    if choice is None:
        return None
    try:
        return _mark(open_engine(choice.engine), choice)
    except CnnEdgeError:
        return None


def _mark(be: Backend, choice: EngineChoice) -> Backend:
    be.choice = choice
    be.settings = {**be.settings, "auto": str(choice)}
    return be
