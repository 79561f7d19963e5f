"""Import heavy optional packages only when a feature needs them."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependency
from .tfquiet import TF_ROOTS, import_quietly

_EXTRA_FOR = {
    "tensorflow": "train",
    "keras": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "tf2onnx": "export",
    "onnx": "export",
    "onnxslim": "export",
    "onnxconverter_common": "export",
    "onnxruntime": "cpu",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
    "tensorrt_rtx": "trt-rtx",
    "cuda": "gpu",
    "tritonclient": "triton",
    "ray": "ray",
}


def require(module: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise a MissingDependency that names the install extra (TensorFlow's
    start-up noise kept off stderr, see :mod:`cnnedge.tfquiet`)."""
    try:
        if module.split(".")[0] in TF_ROOTS:
            return import_quietly(module)
        return importlib.import_module(module)
    except ImportError as exc:
        root = module.split(".")[0]
        extra = _EXTRA_FOR.get(root)
        hint = f"pip install 'cnnedge[{extra}]'" if extra else f"pip install {root}"
        what = f" (needed for {feature})" if feature else ""
        raise MissingDependency(f"{module} is not installed{what}: {hint}") from exc
