"""Step 5 (``--engine``): a TensorRT plan from an ONNX file, with its ``<engine>.json`` sidecar.

The same code drives ``tensorrt`` (Jetson, data-centre GPUs) and
``tensorrt_rtx`` (RTX PCs); ``tensorrt`` wins when both import. Networks are
strongly typed, so precision comes from the ONNX types (FP16 weights, Q/DQ
nodes); TensorRT-RTX has no precision flags at all. One optimization profile
covers ``--batch MIN,OPT,MAX``. TensorRT-RTX builds for named GPU generations on
a machine without a GPU; full TensorRT builds for the GPU present. The plan is
written as TensorRT serialized it (no header), so ``trtexec`` and Triton read it.

Builder errors arrive only through the logger (:func:`cnnedge.host.trt_logger`),
whose messages are collected per build.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from ..artifact.card import ModelCard, sha256_file
from ..errors import ExportError, MissingDependency, OptionError
from ..host import gpu_sm, tensorrt, trt_logger
from ..artifact.sidecar import EngineSidecar

INSTALL_HINT = ("pip install 'cnnedge[trt-rtx]' (TensorRT for RTX) or 'cnnedge[tensorrt]' (TensorRT, "
                "on Jetson use JetPack's)")


@dataclass(frozen=True)
class Profile:
    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        for k in ("min", "opt", "max"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise OptionError("batch", f"{k} must be a positive integer, found {v!r}")
        if not self.min <= self.opt <= self.max:
            raise OptionError("batch", f"{self.min},{self.opt},{self.max}: values must be in order MIN <= OPT <= MAX "
                              "(e.g. 1,8,32)")

    @classmethod
    def parse(cls, text: str) -> "Profile":
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise OptionError("batch", f"{text!r}: expected three positive integers MIN,OPT,MAX (e.g. 1,8,32)")
        return cls(*(int(p) for p in parts))

    def as_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class Toolkit:
    module: ModuleType
    flavour: str
    version: str


def toolkit() -> Toolkit:
    """``tensorrt`` if it imports, else ``tensorrt_rtx``, else a MissingDependency naming the install."""
    m = tensorrt()
    if m is not None:
        return Toolkit(m, m.__name__, str(m.__version__))
    raise MissingDependency(f"--engine needs TensorRT, and neither tensorrt nor tensorrt_rtx imports; {INSTALL_HINT}")


def parse_gpus(text: str | None, flavour: str) -> tuple[str, ...]:
    """``sm86,sm89`` -> ("sm86", "sm89"); None -> the GPU present, or a UsageError naming --gpu."""
    if text:
        gpus = tuple(dict.fromkeys(g.strip().lower() for g in text.split(",") if g.strip()))
        bad = [g for g in gpus if not re.fullmatch(r"sm\d{2,3}", g)]
        if bad or not gpus:
            raise OptionError("gpu", f"{text!r}: expected compute capabilities like sm86,sm89")
        return gpus
    present = gpu_sm()
    if present is None:
        choices = "sm80, sm86, sm89, sm120" if flavour == "tensorrt_rtx" else "the GPU the engine will run on"
        raise OptionError("engine", f": no GPU found to build for; name the target with {{gpu}} (e.g. {{gpu}} sm89; "
                                    f"{choices})")
    return (present,)


def _errors(logger: Any) -> str:
    errs = logger.errors
    return errs[-1].strip()[:400] if errs else "no error message from the builder"


def build(onnx_path: Path, engine_path: Path, card: ModelCard, kit: Toolkit, gpus: Sequence[str], profile: Profile,
          workspace_mib: int, timing_cache: Path | None) -> EngineSidecar:
    """Build ``engine_path`` (plan) from ``onnx_path`` and write its sidecar beside it."""
    from ..staging import write_bytes

    trt = kit.module
    logger = trt_logger(trt)
    logger.messages.clear()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors)) or _errors(logger)
        raise ExportError(f"{kit.flavour} cannot parse {onnx_path.name}: {errs[:400]}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise ExportError(f"{onnx_path.name}: expected one input and one output, found {network.num_inputs} and "
                          f"{network.num_outputs}")
    inp, out = network.get_input(0), network.get_output(0)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    _set_targets(trt, kit, config, gpus)
    cache = None
    if kit.flavour == "tensorrt" and timing_cache is not None:  # a no-op (deprecated) in TensorRT-RTX
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    shape = tuple(inp.shape)[1:]
    if any(d < 0 for d in shape):
        raise ExportError(f"{onnx_path.name}: input {inp.name} has dynamic dims besides the batch: {tuple(inp.shape)}")
    prof = builder.create_optimization_profile()
    prof.set_shape(inp.name, (profile.min, *shape), (profile.opt, *shape), (profile.max, *shape))
    config.add_optimization_profile(prof)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{kit.flavour} {kit.version} could not build {engine_path.name} for "
                          f"{','.join(gpus)}: {_errors(logger)}")
    write_bytes(engine_path, bytes(memoryview(plan)))
    if cache is not None and timing_cache is not None:
        write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    side = EngineSidecar(card=card, plan_sha256=sha256_file(engine_path), flavour=kit.flavour,
                         trt_version=kit.version, compute_capabilities=tuple(gpus), input_name=inp.name,
                         output_name=out.name, profile=profile.as_dict(), source_onnx_sha256=sha256_file(onnx_path))
    side.save(engine_path)
    return side


def _set_targets(trt: ModuleType, kit: Toolkit, config: Any, gpus: Sequence[str]) -> None:
    if kit.flavour == "tensorrt_rtx":
        caps = []
        for g in gpus:
            cap = getattr(trt.ComputeCapability, g.upper(), None)
            if cap is None:
                known = [c.lower() for c in dir(trt.ComputeCapability) if re.fullmatch(r"SM\d+", c)]
                raise OptionError("gpu", f"{g}: {kit.flavour} {kit.version} cannot target it; choose from "
                                                 f"{', '.join(known)}")
            caps.append(cap)
        config.num_compute_capabilities = len(caps)
        for i, cap in enumerate(caps):
            config.set_compute_capability(cap, i)
        return
    present = gpu_sm()
    if present is None:
        raise OptionError("engine", f"with {kit.flavour}: it builds for the GPU present, and none was found; build on "
                         "the target machine (TensorRT-RTX can build for named GPUs without one)")
    if list(gpus) != [present]:
        raise OptionError("gpu", f"{','.join(gpus)}: {kit.flavour} builds only for the GPU present ({present})")
