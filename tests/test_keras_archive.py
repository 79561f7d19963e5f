"""Hostile .keras files are refused before they allocate: a config.json zip bomb, a layer declaring an absurd
number of parameters, a weights member far larger than the layers. Each is loaded in a subprocess, through
cnn-export, cnn-infer and the Classifier, and the child's peak memory is measured with getrusage."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess, Provenance
from cnnedge.errors import ModelLoadError
from cnnedge.keras_archive import check_keras_archive
from cnnedge.keras_io import check_model_file

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEAK_LIMIT_MB = 700  # a refused file costs the interpreter and its imports; the files below cost gigabytes


def _zip(path: Path, members: list[tuple[str, bytes | tuple[bytes, int, int]]]) -> None:
    """A zip written by hand, so that a member can be given pre-compressed (data, crc, uncompressed size):
    the 2 GB bomb is built from one repeated deflate block instead of deflating 2 GB."""
    out, central = bytearray(), bytearray()
    for name, body in members:
        if isinstance(body, bytes):
            data, method, crc, size = body, 0, zlib.crc32(body), len(body)
        else:
            (data, crc, size), method = body, 8
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size,
                             len(name), 0)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                               len(name), 0, 0, 0, 0, 0, len(out)) + name.encode()
        out += header + name.encode() + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def _bomb_config(size_mb: int) -> tuple[bytes, int, int]:
    head, tail = b'{"class_name": "Sequential", "config": {"name": "s", "layers": []}', b"}"
    chunk = b" " * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert again == block  # after a full flush the compressor holds no history: one block, repeated
    crc = zlib.crc32(head)
    for _ in range(size_mb):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    data = first + block * size_mb + c.compress(tail) + c.flush()
    return data, crc, len(head) + size_mb * len(chunk) + len(tail)


def _card(folder: Path, size: int = 28) -> None:
    ModelCard(name="hostile", classes=("a", "b"),
              input=InputSpec(height=size, width=size, channels=1, dtype="float32", color="GRAY"),
              preprocess=Preprocess(resize="stretch", scale=1 / 255),
              provenance=Provenance(dataset="none", created="2026-11-30T00:00:00+00:00")).save(folder / "card.json")


def _real_model(path: Path) -> None:
    """A small real Keras model (784 -> 10), saved by Keras: the base the hostile files are edited from."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((28, 28, 1), name="pixels"), keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(10, name="dense_small"),
                              keras.layers.Dense(2, activation="softmax", name="probabilities")])
    model.save(path)


def _edited(src: Path, dst: Path, edit) -> None:
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["config.json"] = json.dumps(edit(json.loads(members["config.json"]))).encode()
    _zip(dst, list(members.items()))


def _widen(config: dict) -> dict:
    for layer in config["config"]["layers"]:
        if layer["config"]["name"] == "dense_small":
            layer["config"]["units"] = 300_000
        if layer["config"]["name"] == "probabilities":
            layer["build_config"]["input_shape"] = [None, 300_000]
    return config


def _peak(cmd: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run ``cmd`` as the only child of a fresh interpreter; its exit code, stderr and peak RSS in MB."""
    driver = ("import json, resource, subprocess, sys\n"
              "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "print(json.dumps([r.returncode, r.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", driver, *cmd], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=600)
    code, err, kb = json.loads(out.stdout.strip().splitlines()[-1])
    return code, err, kb / 1024


def _loaders(model: Path, image: Path) -> dict[str, list[str]]:
    clf = ("import sys\nfrom cnnedge.runtime import Classifier\nfrom cnnedge.errors import CnnEdgeError\n"
           "try:\n    Classifier(sys.argv[1], 'keras')\nexcept CnnEdgeError as e:\n"
           "    print(f'Classifier: {e}', file=sys.stderr); sys.exit(1)\n")
    return {"cnn-export": [str(BIN / "cnn-export"), str(model), "--out", str(model.parent / "exported")],
            "cnn-infer": [str(BIN / "cnn-infer"), str(model), "--source", str(image), "--backend", "keras"],
            "Classifier": [sys.executable, "-c", clf, str(model)]}


def _assert_refused(model: Path, *needles: str) -> None:
    import cv2

    image = model.parent / "digit.png"
    cv2.imwrite(str(image), np.full((28, 28), 200, np.uint8))
    for name, cmd in _loaders(model, image).items():
        code, err, peak = _peak(cmd, model.parent)
        print(f"{name}: exit {code}, peak {peak:.0f} MB: {err.strip()}")
        assert code == 1, (name, err)
        # cnn-export's progress lines ("cnn-export: read model card ...") may precede its one error line
        lines = [ln for ln in err.strip().splitlines() if not (ln.startswith("cnn-export: ") and ": error: " not in ln)]
        assert len(lines) == 1 and "Traceback" not in err, (name, err)
        for n in needles:
            assert n in lines[0], (name, err)
        assert peak < PEAK_LIMIT_MB, (name, peak)
    assert not (model.parent / "exported").exists()


@pytest.mark.slow
def test_a_2mb_keras_whose_config_inflates_to_2gb_is_refused_with_low_memory(tmp_path: Path) -> None:
    model = tmp_path / "bomb" / "model.keras"
    model.parent.mkdir()
    _zip(model, [("metadata.json", b'{"keras_version": "3.13.0"}'), ("config.json", _bomb_config(2048)),
                 ("model.weights.h5", b"\x89HDF\r\n\x1a\n")])
    assert model.stat().st_size < 3 << 20
    with zipfile.ZipFile(model) as zf:
        assert zf.getinfo("config.json").file_size > (2 << 30)
    _card(model.parent)
    _assert_refused(model, str(model), "config.json inflates to 2,147,483,")


@pytest.mark.slow
def test_a_config_declaring_a_300000_unit_dense_layer_is_refused_naming_it(tmp_path: Path) -> None:
    base = tmp_path / "base.keras"
    _real_model(base)
    model = tmp_path / "huge" / "model.keras"
    model.parent.mkdir()
    _edited(base, model, _widen)
    assert model.stat().st_size < 200_000
    _card(model.parent)
    _assert_refused(model, str(model), "layer 'dense_small' (Dense) declares 235,500,000 parameters")
    # the control: with the limit raised, Keras builds the layer before it fails, and the measure shows it
    os.environ["CNNEDGE_MAX_LAYER_PARAMS"] = "1e9"
    try:
        code, err, peak = _peak(_loaders(model, model)["Classifier"], model.parent)
    finally:
        del os.environ["CNNEDGE_MAX_LAYER_PARAMS"]
    print(f"unchecked: exit {code}, peak {peak:.0f} MB")
    assert code == 1 and peak > 900, (peak, err)


def test_parameter_counts_match_keras_and_the_real_model_loads(tmp_path: Path) -> None:
    base = tmp_path / "base.keras"
    _real_model(base)
    count = check_keras_archive(base)
    assert count.total == 784 * 10 + 10 + 10 * 2 + 2 and not count.unknown
    assert check_model_file(base) == ".keras"


@pytest.mark.parametrize("case, needle", [
    ("weights", "model.weights.h5 holds"), ("ratio", "zip bomb"), ("no-build", "records no input shape"),
    ("bad-units", "has a config Keras could not build"), ("not-json", "not valid JSON"),
    ("deep", "not valid JSON"), ("total", "over the 1,000 limit"),
])
def test_each_bound_refuses_with_one_line(tmp_path: Path, case: str, needle: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.keras"
    _real_model(base)
    with zipfile.ZipFile(base) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(members["config.json"])
    dense = next(la for la in config["config"]["layers"] if la["config"]["name"] == "dense_small")
    if case == "weights":  # 20 MB of weights for 7,882 parameters
        members["model.weights.h5"] += b"\0" * (20 << 20)
    elif case == "ratio":
        data = b"\0" * (4 << 20)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        members["assets/x"] = (c.compress(data) + c.flush(), zlib.crc32(data), len(data))
    elif case == "no-build":
        del dense["build_config"]
    elif case == "bad-units":
        dense["config"]["units"] = "many"
    elif case == "total":
        monkeypatch.setenv("CNNEDGE_MAX_MODEL_PARAMS", "1000")
    if case in ("no-build", "bad-units"):
        members["config.json"] = json.dumps(config).encode()
    if case == "not-json":
        members["config.json"] = b"{not json"
    if case == "deep":
        members["config.json"] = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "bad.keras"
    _zip(path, list(members.items()))
    with pytest.raises(ModelLoadError, match=needle) as info:
        check_model_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
