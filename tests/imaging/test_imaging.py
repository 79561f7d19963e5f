"""cnnedge.imaging is a layer below the runtime, the trainer and export: importing it loads none of them,
nor OpenCV or TensorFlow, and sets no process state; OpenCV's pixel limit is set on the first use of OpenCV,
before it loads (OpenCV reads it once, when it loads). Each check runs in a fresh interpreter."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

from test_runtime_models import helper_model  # noqa: E402

MODULES = ("color", "decode", "errors", "files", "headers", "normalize", "opencv", "prepare", "resize")
VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if k != VARIABLE}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**base, **(env or {})}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def _bmp_bomb(path: Path, side: int = 10_000) -> Path:
    """A 70-byte BMP whose header claims side x side pixels: neither JPEG nor PNG, so only OpenCV's limit
    stands between its header and the allocation."""
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + info + b"\0" * 16)
    return path


def test_importing_imaging_loads_nothing_above_it_and_sets_nothing():
    code = ("import os, sys\n"
            + "".join(f"import cnnedge.imaging.{m}\n" for m in MODULES)
            + "above = sorted(m for m in sys.modules if m.split('.')[:2] in (['cnnedge', 'runtime'], "
              "['cnnedge', 'trainer'], ['cnnedge', 'export'], ['cnnedge', 'datasets'], ['cnnedge', 'cli']))\n"
              "heavy = [m for m in ('cv2', 'tensorflow', 'keras', 'tensorrt', 'onnxruntime') if m in sys.modules]\n"
              f"print(above, heavy, os.environ.get({VARIABLE!r}))")
    assert _python(code) == "[] [] None"


def test_first_decode_sets_the_pixel_limit_before_opencv_loads(tmp_path):
    code = ("import os, sys\nfrom cnnedge.imaging.decode import read_image\n"
            "from cnnedge.imaging.errors import ImageError\n"
            "try:\n    read_image(sys.argv[1])\n    print('DECODED')\nexcept ImageError as e:\n    print(e.reason)\n"
            f"print(os.environ[{VARIABLE!r}])")
    assert _python(code, str(_bmp_bomb(tmp_path / "bomb.bmp"))).splitlines() == [
        "cannot decode (too many pixels)", "64000000"]


def test_a_pixel_limit_the_user_set_is_kept(tmp_path):
    code = ("import os, sys\nfrom cnnedge.imaging.decode import read_image\n"
            "from cnnedge.imaging.errors import ImageError\n"
            "try:\n    read_image(sys.argv[1])\nexcept ImageError as e:\n    print(e.reason)\n"
            f"print(os.environ[{VARIABLE!r}])")
    lines = _python(code, str(_bmp_bomb(tmp_path / "bomb.bmp")), env={VARIABLE: "1000000000"}).splitlines()
    assert lines == ["not a readable image", "1000000000"]  # under the user's limit: OpenCV reads on, finds no data


def test_a_classifier_sets_the_limit_that_its_decode_workers_inherit(tmp_path):
    """The Classifier loads OpenCV when it opens; the limit must be in the environment by then, and stays
    there for the worker processes a folder run starts."""
    code = ("import os, sys\nfrom cnnedge.runtime.classifier import Classifier\n"
            f"before = os.environ.get({VARIABLE!r}), 'cv2' in sys.modules\n"
            "with Classifier(sys.argv[1], 'ort-cpu', warmup=False):\n"
            f"    print(before, os.environ.get({VARIABLE!r}), 'cv2' in sys.modules)")
    assert _python(code, str(helper_model(tmp_path / "m.onnx"))) == "(None, False) 64000000 True"
