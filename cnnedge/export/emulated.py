"""The CPU INT8 file checked on an x86 CPU without VNNI, emulated, besides the CPU that exports it.

ONNX Runtime picks its integer kernels from CPUID (:mod:`cnnedge.runtime.cpu_kernels`), so a file checked on a
VNNI CPU has not been checked on the AVX2 CPUs of many edge boxes, where 16-bit pair sums saturate. Debian's
``qemu-x86_64 -cpu Haswell`` (package ``qemu-user``) runs this very Python and ONNX Runtime as an AVX2 CPU
without AVX-512 or VNNI on any x86-64 host: the file runs there on the prepared pixels of the verification
images, through the runtime's :class:`~cnnedge.runtime.classifier.Classifier` as natively, and is judged by
the same gate. Where the host is itself an x86 CPU without VNNI, the native check is that check, and a VNNI CPU
cannot be emulated (qemu 7 has no AVX-512): the report says which were verified and which not.

The child (``python -m cnnedge.export.emulated MODEL PIXELS OUT``) imports the runtime only: no TensorFlow.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CPU_MODEL = "Haswell"  # AVX2, FMA, no AVX-512, no VNNI
EMULATOR = "qemu-x86_64"
# emulation runs a 224x224 CNN 165 times slower than natively (imagenette-cnn INT8: 4.5 ms -> 753 ms an image), a
# digits CNN ~20 times: the check takes as many verification images as fit in BUDGET_S at SLOWDOWN, within bounds
SLOWDOWN = 200
BUDGET_S = 90.0
MIN_IMAGES, MAX_IMAGES = 64, 1000
TIMEOUT_S = 1800
HINT = "apt-get install qemu-user"


@dataclass
class IsaCheck:
    """Which instruction sets the CPU INT8 file was verified on, and why another was not."""

    native: dict[str, Any]
    verified: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)
    saturation: dict[str, Any] | None = None  # export.saturation.Guarantee.describe()

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def emulator() -> tuple[str | None, str]:
    """The qemu-x86_64 to run the check with, or None and why not."""
    import platform

    from ..runtime.cpu_kernels import int8_kernels

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"not an x86-64 host ({platform.machine()}): its integer kernels do not saturate"
    native = int8_kernels()
    if not native.exact:
        return None, f"this CPU is one ({native.name}): the native check is that check"
    exe = shutil.which(EMULATOR)
    if exe is None:
        return None, f"{EMULATOR} not found ({HINT} to check it here)"
    return exe, ""


def images_for(native_ms_per_image: float | None) -> int:
    """How many verification images the emulated check runs, from the file's native latency at batch 1."""
    if not native_ms_per_image or native_ms_per_image <= 0:
        return MAX_IMAGES
    fit = int(BUDGET_S * 1e3 / (native_ms_per_image * SLOWDOWN))
    return max(MIN_IMAGES, min(MAX_IMAGES, fit))


def run(model: Path, pixels: Sequence[np.ndarray], exe: str, batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Outputs of ``model`` on prepared ``pixels`` (each HxWxC uint8, as :meth:`Classifier.prepare` gives) under
    ``exe -cpu Haswell``, and what the emulated runtime said of its CPU."""
    from ..errors import ExportError

    from .scratch import folder

    with folder("cnnedge-emulated-") as tmp:
        src, dst = tmp / "pixels.npy", tmp / "out.npy"
        np.save(src, np.stack(list(pixels)))
        cmd = [exe, "-cpu", CPU_MODEL, sys.executable, "-m", "cnnedge.export.emulated", str(model), str(src),
               str(dst), str(batch)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ExportError(f"the emulated AVX2 check of {model.name} took over {TIMEOUT_S} s") from None
        said = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not dst.is_file() or not said:
            errors = [ln for ln in done.stderr.splitlines() if ln.strip() and "TCG doesn't support" not in ln]
            raise ExportError(f"the emulated AVX2 check of {model.name} failed ({EMULATOR} -cpu {CPU_MODEL}, "
                              f"exit {done.returncode}): {errors[-1] if errors else 'no output'}")
        return np.load(dst), json.loads(said[-1])


def _child(model: str, pixels: str, out: str, batch: str) -> None:
    from ..runtime.classifier import Classifier
    from ..runtime.cpu_kernels import int8_kernels

    x = np.load(pixels)
    n = max(1, int(batch))
    with Classifier(model, backend="ort-cpu", threads=1) as clf:
        outs = [np.asarray(clf.infer_pixels(x[i:i + n]), dtype=np.float32).reshape(len(x[i:i + n]), -1)
                for i in range(0, len(x), n)]
    np.save(out, np.concatenate(outs))
    print(json.dumps({"kernels": int8_kernels().describe()}))


if __name__ == "__main__":
    _child(*sys.argv[1:5])
