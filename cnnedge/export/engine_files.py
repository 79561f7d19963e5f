"""The engine step: a TensorRT (or TensorRT-RTX) engine per precision, built from its ONNX file for the asked
GPUs, then checked against the source model; the build settings go into the report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifact.names import ENGINE_NAMES
from .workspace import Checked, Workspace, engine_precisions

if TYPE_CHECKING:
    from .engine import Profile, Toolkit


def engine_profile(ws: Workspace, fixed: int | None) -> "Profile":
    """``--batch``, or the one batch size a fixed-batch graph takes (said when that differs)."""
    from .engine import Profile

    asked: Profile = ws.opts.batch
    if not fixed:
        return asked
    profile = Profile(fixed, fixed, fixed)
    if profile != asked:
        ws.timer.say(f"the model takes batches of {fixed} only: engine profile {fixed},{fixed},{fixed} instead of "
                     f"--batch {asked.min},{asked.opt},{asked.max}")
    return profile


def build_engines(ws: Workspace, data: Checked, files: dict[str, Path], kit: "Toolkit",
                  gpus: tuple[str, ...]) -> None:
    """One engine per precision, each from its ONNX file (the TensorRT-flavoured one for INT8), then checked."""
    import onnx

    from . import onnx_io
    from .engine import build
    from .parity import compare_engine

    opts = ws.opts
    profile = engine_profile(ws, data.source.fixed_batch)
    cache = Path(opts.timing_cache) if opts.timing_cache else ws.out / "tensorrt.timing.cache"
    ws.report.engines = {"flavour": kit.flavour, "version": kit.version, "gpus": list(gpus),
                         "profile": profile.as_dict(), "workspace_mib": opts.workspace_mib,
                         "timing_cache": None if kit.flavour == "tensorrt_rtx" else str(cache)}
    for precision in engine_precisions(opts.fp16, opts.int8):
        source = files.get(f"{precision}-trt", files[precision])
        target = ws.staging / ENGINE_NAMES[precision]
        with ws.timer(f"{kit.flavour} engine {target.name} for {','.join(gpus)}"):
            t0 = time.perf_counter()
            build(source, target, onnx_io.card_from_model(onnx.load(str(source))), kit, gpus, profile,
                  opts.workspace_mib, cache)
            built = round(time.perf_counter() - t0, 3)
        with ws.timer(f"parity {target.name}"):
            r = compare_engine(target, precision, data.verify.images, data.ref, data.verify.labels, opts.thresholds)
            r.path = str(ws.out / target.name)
            if r.passed is None:
                r.note = (f"built for {','.join(gpus)} with {kit.flavour} {kit.version}; {r.note}: it is built "
                          f"from {source.name}, checked above")
            r.seconds = built if r.seconds is None else r.seconds + built
            ws.report.artifacts.append(r)
