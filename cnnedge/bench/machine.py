"""Facts about the machine a benchmark ran on: CPU, cores, load, GPU, library versions."""
from __future__ import annotations

import os
import platform
from typing import Any

from ..host import gpus, versions
from ..runtime.backends.ort import available_providers
from ..runtime.cpu_kernels import int8_kernels

LIBRARIES = ("cnnedge", "numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "onnxruntime-gpu",
             "openvino", "onnx", "tensorflow", "tensorflow-cpu", "keras", "tensorrt", "tensorrt-rtx", "cuda-python",
             "matplotlib")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def facts() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cpu_int8_kernels": int8_kernels().describe(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus(),
        "onnxruntime_providers": available_providers(),
        "libraries": versions(LIBRARIES),
    }
