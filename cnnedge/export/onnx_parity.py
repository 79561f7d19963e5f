"""The ONNX files checked against the source model on the verification images, on every CPU engine they will
meet (:mod:`.parity_engines`), and the CPU INT8 file also on the CPUs it will meet; each result goes into the
report."""
from __future__ import annotations

from pathlib import Path

from .parity import ArtifactResult
from .workspace import Checked, Workspace


def check_onnx(ws: Workspace, data: Checked, files: dict[str, Path]) -> None:
    """Each ONNX file (keyed by precision) run by ONNX Runtime and compared with the source model's outputs, then
    by each other CPU engine of the plan on the same images against the same outputs. ``model.int8.trt.onnx`` is
    TensorRT's and meets no other CPU engine: ONNX Runtime only, as before."""
    from .parity import compare_onnx
    from .parity_engines import REFERENCE, plan

    engines = plan(ws.opts.parity_engines)
    ws.report.parity_engines = engines.describe()
    for key, p in files.items():
        for engine in engines.run if key != "int8-trt" else (REFERENCE,):
            where = "" if engine == REFERENCE else f" on {engine}"
            with ws.timer(f"parity {p.name}{where}"):
                r = compare_onnx(p, key.split("-")[0], data.verify.images, data.ref, data.verify.labels,
                                 ws.opts.thresholds, engine)
                r.path = str(ws.out / p.name)
                (ws.report.artifacts if engine == REFERENCE else ws.report.other_engines).append(r)
            if key == "int8" and engine == REFERENCE:
                check_int8_cpus(ws, data, p, r)


def check_int8_cpus(ws: Workspace, data: Checked, path: Path, native: ArtifactResult) -> None:
    """The CPU INT8 file on the CPUs it will meet: its weights' no-saturation guarantee, the native run above,
    and an emulated AVX2 CPU without VNNI where this one has VNNI (see :mod:`.emulated`)."""
    from . import emulated
    from .parity import compare_emulated
    from ..runtime.cpu_kernels import int8_kernels

    check = emulated.IsaCheck(int8_kernels().describe(), [f"{native.cpu} (native)"],
                              saturation=(ws.report.calibration or {}).get("saturation"))
    exe, why = emulated.emulator()
    if exe is None:
        check.not_verified.append(f"x86 without VNNI, emulated: {why}")
    else:
        with ws.timer(f"parity {path.name} on an emulated AVX2 CPU ({emulated.EMULATOR} -cpu {emulated.CPU_MODEL})"):
            r = compare_emulated(path, "int8", data.verify.images, data.ref, data.verify.labels, ws.opts.thresholds,
                                 exe, emulated.images_for(native.latency_ms_b1))
            r.path = str(ws.out / path.name)
            ws.report.emulated.append(r)
            check.verified.append(r.cpu or "")
    if not int8_kernels().exact:
        check.not_verified.append("x86 with VNNI: cannot be emulated here (qemu 7 has no AVX-512); its 32-bit sums "
                                  "are exact")
    ws.report.cpu_int8 = check.describe()
