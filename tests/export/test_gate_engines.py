"""The export gate checks each ONNX file on every CPU engine it will meet (issue 31): ONNX Runtime's CPU provider
and OpenVINO, one report row per file per engine, narrowed with --parity-engines.

A small digits CNN (tests/export/test_export.py's) is trained once and exported with the real tf2onnx, ONNX Runtime and
OpenVINO. The whole file is skipped, with the reason, where openvino is not installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed: pip install 'cnnedge[openvino]'")
pytest.importorskip("onnxruntime")
from test_export import train_digits  # noqa: E402 - after the skips: it needs TensorFlow and ONNX Runtime

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FILES = ("model.onnx", "model.fp16.onnx", "model.int8.onnx")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return train_digits(tmp_path_factory.mktemp("gate-engines") / "run")


@pytest.fixture(scope="module")
def exported(model):
    """The default export: every installed CPU engine, here ONNX Runtime and OpenVINO."""
    from cnnedge.export import export

    out = model.parent.parent / "out"
    return export(model, out, fp16=True, int8=True), out


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return _python("from cnnedge.cli.export import console\nsys.argv[0] = 'cnn-export'\nconsole()\n", *argv)


def _python(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys\n" + code, *argv], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
                          cwd=str(ROOT))


def test_every_file_has_a_row_on_both_engines_by_default(exported):
    report, _ = exported
    assert report.passed, report.failures
    rows = {(Path(a.path).name, a.engine) for a in report.artifacts + report.other_engines}
    assert {(f, e) for f in FILES for e in ("ort-cpu", "openvino")} <= rows
    assert ("model.int8.trt.onnx", "openvino") not in rows  # TensorRT's file meets no other CPU engine
    ov = [a for a in report.other_engines if a.engine == "openvino"]
    assert len(ov) == 3 and all(a.n == report.artifact("model.onnx").n and a.verdict != "not run" for a in ov)
    fp32 = next(a for a in ov if a.precision == "fp32")
    assert fp32.top1_agreement == 1.0 and fp32.max_abs_diff <= 1e-4  # the FP32 bound holds on OpenVINO too
    table = report.table()
    for name in FILES:
        assert f"{name} @ openvino" in table
    assert "verified on: ort-cpu, openvino" in table and "not verified on" not in table


def test_the_json_report_carries_the_per_engine_rows(exported):
    report, out = exported
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["parity_engines"] == {"verified": ["ort-cpu", "openvino"], "not_verified": {}}
    ov = {Path(a["path"]).name: a for a in on_disk["other_engines"]}
    assert set(ov) == set(FILES) and all(a["engine"] == "openvino" for a in ov.values())
    assert all(a["agree"] == a["n"] == report.artifact(name).n for name, a in ov.items() if name != "model.int8.onnx")
    assert all(a["engine"] == "ort-cpu" for a in on_disk["artifacts"])
    assert on_disk["passed"] is True


def test_parity_engines_ort_cpu_gives_only_onnx_runtime_rows_and_says_openvino_was_not_verified(model, tmp_path):
    out = tmp_path / "out"
    r = _cli(str(model), "--out", str(out), "--fp16", "--parity-engines", "ort-cpu", "-q")
    assert r.returncode == 0, r.stderr
    assert "@ openvino" not in r.stdout
    assert "verified on: ort-cpu" in r.stdout
    assert "not verified on openvino: left out" in r.stdout
    rep = json.loads((out / "export_report.json").read_text())
    assert rep["other_engines"] == [] and rep["parity_engines"]["verified"] == ["ort-cpu"]
    assert {Path(a["path"]).name for a in rep["artifacts"]} == {"model.onnx", "model.fp16.onnx"}


@pytest.mark.parametrize("engines, words", [
    ("ort-cpu,openvinoo", ("'openvinoo'", "did you mean 'openvino'")),
    ("ort-cuda", ("'ort-cuda'", "not a CPU engine")),
])
def test_an_unknown_engine_is_a_one_line_usage_error_and_writes_nothing(model, tmp_path, engines, words):
    out = tmp_path / "out"
    before = sorted(p.name for p in model.parent.iterdir())
    r = _cli(str(model), "--out", str(out), "--parity-engines", engines)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("cnn-export: error: --parity-engines"), r
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists() and sorted(p.name for p in model.parent.iterdir()) == before


def test_a_named_engine_that_is_not_installed_is_a_usage_error_naming_the_extra(model, tmp_path):
    out = tmp_path / "out"
    code = ("sys.modules['openvino'] = None  # as where it is not installed\n"
            "from cnnedge.cli.export import console\nsys.argv[0] = 'cnn-export'\nconsole()\n")
    r = _python(code, str(model), "--out", str(out), "--parity-engines", "ort-cpu,openvino")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r
    assert "--parity-engines openvino: not installed" in lines[0] and "pip install 'cnnedge[openvino]'" in lines[0]
    assert not out.exists()
    # left to the default, an engine that is not installed is said, not an error
    code = ("sys.modules['openvino'] = None\nfrom cnnedge.export.parity_engines import plan\n"
            "print(plan(None).describe())\n")
    r = _python(code)
    assert r.returncode == 0 and "'verified': ['ort-cpu']" in r.stdout and "not installed (pip install" in r.stdout, r


def _det_classifier(path: Path) -> Path:
    """A carded 8x8 classifier whose scores are multiplied by Det(I): ONNX Runtime runs it, OpenVINO has no
    conversion rule for Det (the runtime's own test of that refusal: tests/runtime/backends/test_openvino_backend.py)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnedge.artifact.card import ONNX_KEY, InputSpec, ModelCard, Preprocess

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 10)).astype(np.float32), "w"),
             numpy_helper.from_array(np.eye(2, dtype=np.float32), "eye")]
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["xf"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"]), helper.make_node("Det", ["eye"], ["d"]),
             helper.make_node("Mul", ["logits", "d"], ["y"])]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    card = ModelCard(name="det", classes=tuple(str(i) for i in range(10)),
                     input=InputSpec(8, 8, 3, "NHWC", "uint8", "RGB"), preprocess=Preprocess(in_graph=True),
                     output="logits")
    m.metadata_props.add(key=ONNX_KEY, value=card.to_json())
    onnx.save(m, str(path))
    return path


def test_a_file_openvino_cannot_compile_fails_its_row_with_the_reason(tmp_path):
    from cnnedge.export.parity import Thresholds, compare_onnx
    from cnnedge.export.report import ExportReport
    from cnnedge.runtime import Classifier

    path = _det_classifier(tmp_path / "model.onnx")
    rng = np.random.default_rng(1)
    images = [np.full((8, 8, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(20)]  # plain colours
    with Classifier(path, backend="ort-cpu") as clf:
        ref = clf.infer_pixels(np.stack([clf.prepare(im) for im in images]))
    assert len(set(ref.argmax(1))) > 1
    ort = compare_onnx(path, "fp32", images, ref, None, Thresholds(), "ort-cpu")
    ov = compare_onnx(path, "fp32", images, ref, None, Thresholds(), "openvino")
    assert ort.passed and ort.engine == "ort-cpu"
    assert ov.passed is False and ov.verdict == "fail" and ov.engine == "openvino"
    assert len(ov.failures) == 1 and ov.failures[0].startswith("openvino cannot run it:")
    assert "OpenVINO cannot compile" in ov.failures[0] and "\n" not in ov.failures[0]
    report = ExportReport(model="m", out_dir=str(tmp_path), artifacts=[ort], other_engines=[ov],
                          parity_engines={"verified": ["ort-cpu", "openvino"], "not_verified": {}})
    assert not report.passed and report.failures == [f"model.onnx @ openvino: {ov.failures[0]}"]
    assert any(ln.startswith("model.onnx @ openvino") and ln.rstrip().endswith("FAIL")
               for ln in report.table().splitlines())
