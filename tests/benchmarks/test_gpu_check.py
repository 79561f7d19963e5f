"""The GPU acceptance tools on a machine without a GPU: benchmarks/gpu_check.py runs its CPU steps for real, lists
the GPU steps as skipped with the reason and exits 0; benchmarks/gpu_site.py cuts a real CUDA library (nvJPEG,
from its PyPI wheel) down to one GPU generation without touching anything else in it."""
from __future__ import annotations

import ctypes
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import model_wheels

ROOT = Path(__file__).resolve().parents[2]
import gpu_site  # noqa: E402
from runtime_bench import photos, write_jpegs  # noqa: E402  (the 640x480 views gpu_prepare.sh writes)

CHECK = ROOT / "benchmarks" / "gpu_check.py"
GPU_STEPS = ("parity", "h2d", "decode_gpu", "tensorrt", "preload")
CPU_STEPS = ("environment", "auto_backend", "predict_overhead", "threads", "bench", "folder")
NVJPEG = "nvidia-nvjpeg==13.3.2.43"


@pytest.fixture(scope="module")
def check_folder(small_cnn, small_cnn_export, tmp_path_factory) -> Path:
    """The layout gpu_prepare.sh builds, with the session's small digits CNN and its exports (no 224x224 model:
    the digits exports stand in, as the check says)."""
    root = tmp_path_factory.mktemp("gpucheck")
    digits = root / "check" / "models" / "digits"
    digits.mkdir(parents=True)
    for f in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx"):
        shutil.copy(small_cnn_export.out / f, digits / f)
    shutil.copy(small_cnn.parent / "card.json", digits / "card.json")
    photo = photos()
    write_jpegs(photo, digits / "images", 4)
    write_jpegs(photo, root / "check" / "photos", 8)
    return root / "check"


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gpu_check_without_a_gpu_runs_the_cpu_steps_and_exits_0(check_folder, tmp_path):
    out = tmp_path / "gpu_check.json"
    p = run_check(str(check_folder), "--images", "24", "--quick", "--json", str(out))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert list(res) == ["environment", "auto_backend", "parity", "predict_overhead", "h2d", "threads", "bench",
                         "folder", "decode_gpu", "tensorrt", "preload"]
    for step in GPU_STEPS:
        assert res[step]["status"] == "skipped"
        assert "GPU" in res[step]["why"] or "CUDA" in res[step]["why"], res[step]
    for step in CPU_STEPS:
        assert res[step]["status"] == "ok", res[step]
    # what the CPU steps measured, checked against what this machine is
    assert res["environment"]["gpus"] == [] and "CPUExecutionProvider" in res["environment"]["providers"]
    assert {v[0] for v in res["auto_backend"]["picked"].values()} == {"ort-cpu"}
    assert res["auto_backend"]["printed"] == []  # quiet providers: opening and running a model prints nothing
    assert "ort-trt" in res["auto_backend"]["ort_trt"] or "TensorRT" in res["auto_backend"]["ort_trt"]
    over = res["predict_overhead"]["models"]["digits/model.onnx"]
    assert over["bare_run_us"] > 0 and over["predict_us"] > over["bare_run_us"] * 0.5
    assert res["threads"]["targets"][0]["verdict"] == "pass"
    assert sorted((r["artifact"], r["batch"]) for r in res["bench"]["rows"]["copy"]) == [
        ("model.fp16.onnx", 64), ("model.fp16.onnx", 256), ("model.onnx", 64), ("model.onnx", 256)]
    assert all(r["images_s"] > 0 for r in res["bench"]["rows"]["copy"])
    folder = res["folder"]
    assert folder["runs"]["default"]["rc"] == 0 and folder["runs"]["default"]["rows"] == 24
    assert folder["runs"]["default"]["images_s"] > 0 and folder["bound_img_s"]["full"] > 0
    assert {t["verdict"] for t in folder["targets"]} == {"n/a"}  # GPU targets are not judged on a CPU
    table = p.stdout[p.stdout.index("step "):]
    for step in res:
        assert step in table
    assert "skipped" in table and "no NVIDIA GPU" in table


@pytest.mark.slow
def test_gpu_check_refuses_usage_mistakes_in_one_line(check_folder, tmp_path):
    p = run_check(str(tmp_path / "nowhere"))
    assert p.returncode == 2 and "gpu_prepare.sh" in p.stderr and "Traceback" not in p.stderr
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    p = run_check(str(check_folder), "--json", str(taken))
    assert p.returncode == 2 and "--force" in p.stderr.splitlines()[-1]
    assert taken.read_text() == "{}"
    p = run_check(str(check_folder), "--ort", str(tmp_path))
    assert p.returncode == 2 and "onnxruntime" in p.stderr.splitlines()[-1]


def nvjpeg(tmp_path: Path) -> bytes:
    if model_wheels.wheel(NVJPEG) is None:
        pytest.skip(f"{NVJPEG} wheel not downloaded (make models-for-tests; needs the package registry)")
    return model_wheels.extract(NVJPEG, model_wheels.WHEELS[NVJPEG][2], tmp_path).read_bytes()


def cubins(data: bytes) -> list[list[tuple[int, bytes]]]:
    """Per fat binary, its (sm, entry bytes) cubins, with the header's own payload size checked against them."""
    out = []
    for pos, header, fat in gpu_site.binaries(data):
        found = gpu_site.entries(data, pos + header, fat)
        assert sum(n for _, n, _, _ in found) == fat == struct.unpack_from("<Q", data, pos + 8)[0]
        out.append([(sm, bytes(data[o:o + n])) for o, n, kind, sm in found if kind == gpu_site.CUBIN])
    return out


def test_prune_keeps_one_generation_of_a_real_cuda_library_and_nothing_else_changes(tmp_path):
    original = nvjpeg(tmp_path)
    before = cubins(original)
    assert len(before) == 10 and all(len({sm for sm, _ in b}) >= 5 for b in before)
    data = bytearray(original)
    done = gpu_site.prune(data, 90)
    assert len(data) == len(original) and done.binaries == 10
    off, size = gpu_site.sections(original)[".nv_fatbin"]
    assert data[:off] == original[:off] and data[off + size:] == original[off + size:]
    after = cubins(bytes(data))
    for old, new in zip(before, after):
        assert [sm for sm, _ in new] == [90]
        assert new == [e for e in old if e[0] == 90]  # the kept kernels, byte for byte
    assert done.kept == sum(len(e) for b in after for _, e in b)
    assert done.dropped > 8 * done.kept
    assert bytes(data[off:off + size]).count(0) > done.dropped  # the freed space is zeros: packs to nothing
    cut = tmp_path / "cut" / "libnvjpeg.so.13"
    cut.parent.mkdir()
    cut.write_bytes(data)
    ctypes.CDLL(str(cut))  # the dynamic linker loads it and runs its constructors (its kernels need a GPU)


def test_prune_refuses_a_generation_a_library_has_no_kernels_for(tmp_path):
    data = bytearray(nvjpeg(tmp_path))
    kept = bytes(data)
    with pytest.raises(gpu_site.TrimError, match=r"no sm_61 kernels \(it has .*sm_90"):
        gpu_site.prune(data, 61)
    assert bytes(data) == kept  # refused before the first binary was cut
    with pytest.raises(gpu_site.TrimError, match="not a 64-bit"):
        gpu_site.prune(bytearray(b"#!/bin/sh\n" * 10), 90)


def test_trim_packs_a_wheel_for_one_python_and_generation(tmp_path):
    nvjpeg(tmp_path)
    wheel = model_wheels.wheel(NVJPEG)
    fake = tmp_path / "demo-1.0-py3-none-any.whl"  # other Pythons' modules and unused plug-ins are left out
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("demo/_ext.cpython-312-x86_64-linux-gnu.so", b"kept")
        z.writestr("demo/_ext.cpython-311-x86_64-linux-gnu.so", b"other python")
        z.writestr("nvidia/nvimgcodec/extensions/libopencv_ext.so.0.9.0", b"unused plug-in")
    out = tmp_path / "site.tar.xz"
    report = gpu_site.trim([wheel, fake], out, 90, "312")
    assert sorted(report["left_out"]) == ["demo/_ext.cpython-311-x86_64-linux-gnu.so",
                                          "nvidia/nvimgcodec/extensions/libopencv_ext.so.0.9.0"]
    assert report["pruned"]["nvidia/cu13/lib/libnvjpeg.so.13"]["binaries"] == 10
    with tarfile.open(out) as tar:
        names = tar.getnames()
        lib = tar.extractfile("nvidia/cu13/lib/libnvjpeg.so.13").read()
        assert json.loads(tar.extractfile("cnnedge-trim.json").read())["sm"] == 90
    assert "demo/_ext.cpython-312-x86_64-linux-gnu.so" in names
    assert [[sm for sm, _ in b] for b in cubins(lib)] == [[90]] * 10
    assert out.stat().st_size < 0.5 * wheel.stat().st_size
    assert not (tmp_path / "site.tar.xz.partial").exists()
