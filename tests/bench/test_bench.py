"""cnn-bench in-process on a real run folder: the session's digits-cnn, exported to FP32/FP16/INT8 ONNX.

The accuracy of the model does not matter here; its latency figures do. Every
test reads what cnn-bench wrote (JSON, PNG, Markdown, stdout) and checks it
independently: percentiles ordered, throughput consistent with latency,
impossible combinations listed with their reason, bad input refused in one line.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnedge.cli._run import run_cli

ROOT = Path(__file__).resolve().parents[2]
# the CPU engines cnn-bench's default plan measures an .onnx file on here (openvino: where it is installed)
CPU_ENGINES = ("ort-cpu",) + (("openvino",) if importlib.util.find_spec("openvino") else ())


def bench(argv: list[str]) -> tuple[int, str, str]:
    """Run cnn-bench's main in this process; (exit code, stdout, stderr)."""
    from cnnedge.cli.bench import main

    out, err = io.StringIO(), io.StringIO()
    code = run_cli("cnn-bench", lambda a: main(a, out, err), argv, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_dir(demo_trained, tmp_path_factory) -> Path:
    """A real run folder: a copy of the session's digits-cnn run and cnn-export's FP32, FP16 and INT8 ONNX
    models in it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from cnnedge.export import export

    run = Path(shutil.copytree(demo_trained.run, tmp_path_factory.mktemp("bench") / "run"))
    # TensorRT-RTX builds engines without a GPU (they cannot run here: cnn-bench must say so)
    export(run / "model.keras", fp16=True, int8=True, engine=True, gpu="sm89", batch="1,4,8",
           check=False, calib_size=64, verify_size=64)
    return run


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """JPEGs of the digits at 96x96 (real scans, upscaled), for --end-to-end."""
    import cv2

    from cnnedge.datasets import make_spec, split_images

    images, _, _ = split_images(make_spec("digits", size=(96, 96)), "test", limit=40)
    folder = tmp_path_factory.mktemp("photos")
    for i, im in enumerate(images):
        assert cv2.imwrite(str(folder / f"{i:03d}.jpg"), im)
    return folder


def check_row(row: dict) -> None:
    lat = row["latency_ms"]
    assert lat["min"] > 0 and lat["n"] >= 1
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
    assert lat["max"] == pytest.approx(max(row["samples_ms"]), rel=1e-3, abs=1e-4)  # the tail is not clipped
    assert len(row["samples_ms"]) == lat["n"]
    # calls back to back: images/s = batch / mean latency, and the loop's wall time covers every call
    expected = row["batch"] / (lat["mean"] / 1000.0)
    assert row["throughput"] == pytest.approx(expected, rel=0.01)
    assert row["wall_s"] >= sum(row["samples_ms"]) / 1000.0 * 0.999


@pytest.mark.slow
def test_run_folder_every_artifact_json_plot_markdown(run_dir, tmp_path):
    import cv2

    j, png, md = tmp_path / "b.json", tmp_path / "b.png", tmp_path / "b.md"
    code, out, err = bench([str(run_dir), "--batch", "1,4", "--iters", "9", "--warmup", "2", "--threads", "1",
                            "--json", str(j), "--plot", str(png), "--markdown", str(md), "-q"])
    assert code == 0, err
    data = json.loads(j.read_text())
    rows = data["rows"]
    got = {(r["artifact"], r["backend"], r["method"], r["batch"]) for r in rows}
    onnx_files = ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx")
    want = {(a, e, "infer", b) for a in onnx_files for e in CPU_ENGINES for b in (1, 4)}
    want |= {("model.keras", "keras", m, b) for m in ("predict", "call", "tf.function") for b in (1, 4)}
    assert got == want
    for r in rows:
        check_row(r)
        assert r["latency_ms"]["n"] == 9
    assert {r["precision"] for r in rows if r["artifact"] == "model.int8.onnx"} == {"int8"}
    assert {r["precision"] for r in rows if r["artifact"] == "model.fp16.onnx"} == {"fp16"}
    # GPU providers are not installed here: listed with the reason, not dropped
    skipped = {(s["artifact"], s["backend"]): s["reason"] for s in data["skipped"]}
    for a in onnx_files:
        assert "CUDAExecutionProvider" in skipped[(a, "ort-cuda")]
        assert "TensorrtExecutionProvider" in skipped[(a, "ort-trt")]
    assert "cannot run here: ort-cuda (" in out
    for engine in ("model.fp16.engine", "model.int8.engine"):
        assert "GPU" in skipped[(engine, "trt")] or "TensorRT" in skipped[(engine, "trt")]
    m = data["machine"]
    assert m["cores"] >= 1 and m["cpu"] and "onnxruntime" in m["libraries"] and "keras" in m["libraries"]
    assert data["settings"]["threads"] == 1 and data["settings"]["seed"] == 0
    for a in onnx_files:  # what each engine was set to here, in the JSON and under the table
        assert data["engines"][f"{a} on ort-cpu"] == {"threads": 1, "spinning": False}
        assert f"engine: {a} on ort-cpu, 1 thread, spinning off" in out
    # INT8 against FP32 of the same backend and batch, as measured in this run
    p50 = {(r["artifact"], r["batch"]): r["latency_ms"]["p50"] for r in rows if r["backend"] == "ort-cpu"}
    speed = {(s["artifact"], s["batch"]): s for s in data["int8_speedup"] if s["backend"] == "ort-cpu"}
    assert set(speed) == {(a, b) for a in ("model.int8.onnx", "model.int8.trt.onnx") for b in (1, 4)}
    assert {s["backend"] for s in data["int8_speedup"]} == set(CPU_ENGINES)  # INT8 against FP32 on each engine
    for (a, b), sp in speed.items():
        assert sp["fp32_artifact"] == "model.onnx" and sp["backend"] == "ort-cpu"
        assert sp["speedup"] == pytest.approx(p50[("model.onnx", b)] / p50[(a, b)], rel=1e-2)
        assert f"INT8/FP32 speed here: {a} on ort-cpu, batch {b}: {sp['speedup']:.2f}x model.onnx's" in out
        assert f"{a} on ort-cpu, batch {b}: {sp['speedup']:.2f}x" in md.read_text()
    # stdout: sorted by batch-1 p50, the fastest marked
    table = [ln for ln in out.splitlines() if any(f" {e} " in ln for e in CPU_ENGINES + ("keras",))]
    assert len(table) == len(rows)
    p50_b1 = {(r["artifact"], r["label"]): r["latency_ms"]["p50"] for r in rows if r["batch"] == 1}
    order = []
    for r in data["rows"]:  # JSON rows are in table order
        if (r["artifact"], r["label"]) not in order:
            order.append((r["artifact"], r["label"]))
    assert [p50_b1[k] for k in order] == sorted(p50_b1.values())
    fastest = min(p50_b1, key=p50_b1.get)
    assert data["fastest"] == {"artifact": fastest[0], "label": fastest[1]}
    starred = [ln for ln in table if ln.startswith("*")]
    assert len(starred) == 1 and fastest[0] in starred[0] and " 1 " in starred[0]
    # Keras baselines are what exporting improves on: predict() is the slowest way to run one image
    assert p50_b1[("model.keras", "keras model.predict(x)")] > p50_b1[("model.onnx", "ort-cpu")]
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300 and img.std() > 5
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| fastest | artifact | backend | precision | batch | p50 ms")
    body = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert len(body) == len(rows) and sum("**\\***" in ln for ln in body) == 1
    assert any(ln.startswith("- cannot run here: ort-trt") for ln in lines)


@pytest.mark.slow
def test_end_to_end_next_to_its_decode_bound(run_dir, photos, tmp_path):
    j = tmp_path / "e2e.json"
    code, out, err = bench([str(run_dir / "model.onnx"), "--backends", "ort-cpu", "--batch", "1,8", "--iters", "6",
                            "--end-to-end", str(photos), "--workers", "2", "--json", str(j), "-q"])
    assert code == 0, err
    data = json.loads(j.read_text())
    (e,) = data["end_to_end"]
    assert e["images"] == 40 and e["failed"] == 0 and e["batch"] == 8 and e["workers"] == 2
    assert e["throughput"] > 0 and e["bound_throughput"] > 0
    assert set(e["stages_ms"]) == {"read", "decode", "resize", "wait", "inference", "postprocess"}
    assert all(v >= 0 for v in e["stages_ms"].values())
    assert e["stages_ms"]["decode"] > 0 and e["stages_ms"]["inference"] > 0
    lat = e["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert "end-to-end model.onnx ort-cpu batch 8" in out and "decode+resize bound" in out


@pytest.mark.slow
def test_onnx_only_does_not_import_tensorflow(run_dir):
    code = ("import sys\nfrom cnnedge.cli.bench import main\n"
            f"rc = main([{str(run_dir)!r}, '--backends', 'ort-cpu', '--batch', '1', '--iters', '3', '-q'])\n"
            "assert rc == 0\n"
            "bad = [m for m in ('tensorflow', 'keras', 'tensorrt', 'tensorrt_rtx') if m in sys.modules]\n"
            "assert not bad, bad\nprint('clean')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "clean" in res.stdout and "model.int8.onnx" in res.stdout


@pytest.mark.slow
def test_nothing_runnable_lists_reasons_and_fails(run_dir):
    code, out, err = bench([str(run_dir / "model.fp16.engine"), "--iters", "3", "-q"])
    assert code == 1
    assert "cannot run here: trt (model.fp16.engine)" in out
    assert err.strip().splitlines() == ["cnn-bench: error: no combination could run here (reasons above)"]


@pytest.mark.slow
def test_bad_input_is_one_line(run_dir, tmp_path):
    onnx = str(run_dir / "model.onnx")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"\x00not an onnx graph" * 10)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    cases = [
        ([onnx, "--backends", "ort-cp"], 2, "did you mean 'ort-cpu'"),
        ([str(text)], 2, "not a model file"),  # a wrong file is a usage mistake, as in cnn-infer and cnn-export
        ([str(garbage)], 1, "not a valid ONNX model"),
        ([str(tmp_path / "missing.onnx")], 2, "no such file"),
        ([str(empty)], 2, "no model files"),
        ([onnx, "--json", str(a_file / "out.json")], 2, "cannot write there"),
        ([onnx, "--plot", str(tmp_path / "plot.jpg")], 2, "expected a .png"),
        ([onnx, "--json", str(existing)], 2, "--force"),
        ([onnx, "--iters", "5", "--duration", "1"], 2, "not both"),
        ([onnx, "--batch", "1,0"], 2, "at least 1"),
        ([onnx, "--batch", "1,x"], 2, "positive integers"),
        ([onnx, "--backends", "trt"], 2, "runs .engine files"),
    ]
    for argv, want_code, want_text in cases:
        t0 = time.perf_counter()
        code, out, err = bench(argv + ["-q"])
        assert code == want_code, (argv, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnn-bench: error: ") and want_text in lines[0], (argv, err)
        assert out == ""
        assert time.perf_counter() - t0 < 10  # refused before anything is measured
    assert existing.read_text() == "{}"


def test_statistics_keep_the_tail_and_measure_spread():
    from cnnedge.bench.stats import latency, spread

    samples = [1.0] * 990 + [50.0] * 9 + [400.0]
    lat = latency(samples)
    assert lat.max == 400.0 and lat.min == 1.0 and lat.n == 1000
    assert lat.p50 == 1.0 and lat.p90 == 1.0 and 1.0 < lat.p99 <= 50.0
    assert lat.mean == pytest.approx(np.mean(samples))
    assert spread([1.0]) is None
    assert spread([1.0, 1.1, 1.3]) == pytest.approx(0.3 / 1.1)
    with pytest.raises(ValueError):
        latency([])


def test_batches_above_an_engine_profile_use_its_max():
    from cnnedge.bench.plan import effective_batch, parse_backends, parse_batches

    assert effective_batch(32, None, 1, 8) == (8, "batch 32 is above the engine profile's max 8; measured at 8")
    assert effective_batch(4, None, 1, 8) == (4, None)
    assert effective_batch(1, None, 2, 8)[0] == 2
    assert effective_batch(8, 1, 1, 1) == (1, "takes only batch 1; batch 8 measured at 1")
    assert parse_batches("32, 1,8,8") == [1, 8, 32]
    assert parse_backends("ort-cpu,keras,ort-cpu") == ["ort-cpu", "keras"]


def test_a_noisy_run_is_warned_about():
    """Three runs of a real call whose duration changes between runs: the spread is reported and warned."""
    from cnnedge.bench.core import BenchConfig, _row
    from cnnedge.bench.measure import time_calls
    from cnnedge.bench.plan import Artifact
    from cnnedge.bench.report import BenchReport

    calls = {"n": 0}

    def call() -> None:
        calls["n"] += 1
        time.sleep(0.001 if calls["n"] <= 4 else 0.020)  # the machine "gets busy" after the first run (20x:
        # a loaded machine stretches a 1 ms sleep to 2 ms or more, which must not hide the change)

    t = time_calls(call, warmup=0, iters=12, duration=None, repeats=3)
    assert t.calls == 12 and [b - a for a, b in t.runs] == [4, 4, 4]
    assert [b - a for a, b in time_calls(lambda: None, warmup=0, iters=7, duration=None, repeats=3).runs] == [3, 2, 2]
    assert time_calls(lambda: None, warmup=0, iters=2, duration=None, repeats=3).calls == 2
    timed = time_calls(lambda: time.sleep(0.002), warmup=1, iters=None, duration=0.06, repeats=3)
    assert len(timed.runs) == 3 and all(w >= 0.02 for w in timed.wall_s) and timed.calls >= 9
    report = BenchReport()
    row = _row(BenchConfig(models=["x"]), report, Artifact(Path("m.onnx"), "onnx"), "ort-cpu", "infer", "fp32", 1,
               [1], t)
    assert row.spread is not None and row.spread > 0.5
    assert len(report.warnings) == 1
    assert "noisy" in report.warnings[0] and "m.onnx ort-cpu batch 1" in report.warnings[0]
    quiet = BenchReport()
    _row(BenchConfig(models=["x"], max_spread=10.0), quiet, Artifact(Path("m.onnx"), "onnx"), "ort-cpu", "infer",
         "fp32", 1, [1], t)
    assert quiet.warnings == []
    report.rows.append(row)
    line = report.noise_summary(0.25)
    assert line is not None and "on 1 of 1 rows" in line and "m.onnx ort-cpu batch 1" in line
    assert report.noise_summary(10.0) is None


@pytest.mark.slow
def test_a_fixed_batch_model_is_measured_at_its_batch_and_says_so(run_dir, tmp_path):
    import onnx

    m = onnx.load(str(run_dir / "model.onnx"))
    for t in (m.graph.input[0], m.graph.output[0]):
        d = t.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    j = tmp_path / "f.json"
    code, out, err = bench([str(tmp_path / "fixed.onnx"), "--batch", "1,4,8", "--iters", "4", "--json", str(j), "-q"])
    assert code == 0, err
    data = json.loads(j.read_text())
    assert sorted(r["backend"] for r in data["rows"]) == sorted(CPU_ENGINES)
    for row in data["rows"]:
        assert row["batch"] == 1 and row["requested"] == [1, 4, 8]
        check_row(row)
    for engine in CPU_ENGINES:
        assert f"fixed.onnx on {engine}: takes only batch 1; batch 4 measured at 1" in data["notes"]
        assert f"note: fixed.onnx on {engine}: takes only batch 1; batch 8 measured at 1" in out


@pytest.mark.slow
def test_copy_and_compute_are_timed_apart_through_io_binding(run_dir):
    """cnn-bench's GPU path (the backend's own timed_infer: OrtValue upload, IO-binding run, download) run
    on ONNX Runtime's CPU provider: the row gets its stages, --no-copy times the compute alone."""
    from cnnedge.bench import core, measure, plan
    from cnnedge.bench.report import BenchReport
    from cnnedge.runtime.backends import load_backend

    with load_backend(run_dir / "model.onnx", "ort-cpu", threads=1) as be:
        x = measure.make_input(be.input_spec.shape, be.input_spec.dtype, 4, 0)
        copied = measure.time_calls(measure.split_call(be, x, True), warmup=2, iters=6, duration=None, repeats=2)
        resident = measure.time_calls(measure.split_call(be, x, False), warmup=2, iters=6, duration=None,
                                      repeats=2)
        report = BenchReport(started="now", machine={})
        art = plan.Artifact(run_dir / "model.onnx", "onnx")
        for copy in (True, False):  # the branch cnn-bench takes for ort-cuda, fed the CPU provider's backend
            cfg = core.BenchConfig([str(art.path)], iters=4, warmup=1, repeats=2, copy=copy)
            core._measure_artifact(cfg, report, art, "ort-cuda", be, [4], "fp32")
    assert set(copied.stages_ms) == {"h2d", "compute", "d2h"}
    for i, total in enumerate(copied.samples_ms):
        parts = [copied.stages_ms[k][i] for k in ("h2d", "compute", "d2h")]
        assert all(p > 0 for p in parts) and sum(parts) == pytest.approx(total)
    assert all(v == 0 for v in resident.stages_ms["h2d"] + resident.stages_ms["d2h"])
    assert resident.samples_ms == pytest.approx(resident.stages_ms["compute"])
    rows = [r.to_dict() for r in report.rows]
    assert [r["copy"] for r in rows] == [True, False]
    assert all(set(r["stages_ms"]) == {"h2d", "compute", "d2h"} for r in rows)
    assert rows[0]["stages_ms"]["h2d"]["p50"] > 0 and rows[1]["stages_ms"]["h2d"]["p50"] == 0
