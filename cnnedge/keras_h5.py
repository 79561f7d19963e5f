"""What a legacy HDF5 Keras file holds, read from its root attributes before Keras is imported.

Keras writes ``keras_version``, ``backend`` and ``model_config`` on the file's root. Keras 3 loads its own
legacy ``.h5`` files, but a Keras 2 one (tf.keras of TensorFlow <= 2.15, standalone Keras 2) fails deep in
deserialization after seconds and hundreds of MB, with a message cut off mid-config and no word of the
format. Reading three attributes costs milliseconds, so the file is told for what it is first.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
from pathlib import Path

from .errors import UnsupportedModelFile


def root_attrs(path: str | os.PathLike) -> dict[str, str] | None:
    """``keras_version``, ``backend`` and whether a ``model_config`` is there; None when h5py cannot read the
    file (not HDF5, truncated) or is not installed: Keras' own load then says why."""
    try:
        import h5py
    except ImportError:
        return None
    try:
        with h5py.File(str(path), "r") as f:
            attrs = f.attrs
            out = {k: _text(attrs[k]) for k in ("keras_version", "backend") if k in attrs}
            if "model_config" in attrs:
                out["model_config"] = "yes"
            return out
    except Exception:  # noqa: BLE001 - h5py raises OSError and friends for anything that is not HDF5
        return None


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_hdf5_model(path: str | os.PathLike) -> None:
    """Refuse, in one line saying how to convert it, an HDF5 file saved by Keras 2 (or earlier) and one that
    holds weights only; a Keras 3 ``.h5`` and a file h5py cannot read pass (the load says what is wrong)."""
    attrs = root_attrs(path)
    if attrs is None:
        return
    version = attrs.get("keras_version")
    major = version.split(".")[0] if version else ""
    if "model_config" not in attrs:
        if version is None:
            return  # no Keras attributes at all: Keras' load says what the file is
        raise UnsupportedModelFile(f"{path}: holds weights only (no model_config; saved with save_weights by Keras "
                                   f"{version}); give the whole model, saved with model.save")
    if major.isdigit() and int(major) >= 3:
        return
    stem = str(Path(path).with_suffix(""))
    saved, onnx = f"{stem}_savedmodel", f"{stem}.onnx"
    load = f"import tf_keras as k; k.models.load_model({json.dumps(str(path))}).export({json.dumps(saved)})"
    raise UnsupportedModelFile(
        f"{path}: a Keras 2 HDF5 file (keras_version {version or 'absent'}), which the Keras 3 here does not load "
        f"reliably; convert it with Keras 2 in another environment ({_tf_keras()} or TensorFlow <= 2.15): "
        f"python -c {shlex.quote(load)}, then python -m tf2onnx.convert --saved-model {shlex.quote(saved)} --output "
        f"{shlex.quote(onnx)}, and export that: cnn-export {shlex.quote(onnx)} with the model flags")


def _tf_keras() -> str:
    """The tf_keras that matches the TensorFlow installed here (tf_keras pins TensorFlow's minor version)."""
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            major_minor = ".".join(importlib.metadata.version(dist).split(".")[:2])
        except importlib.metadata.PackageNotFoundError:
            continue
        return f"pip install 'tf_keras=={major_minor}.*'"
    return "pip install tf_keras"
