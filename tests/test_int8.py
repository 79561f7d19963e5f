"""INT8 export: the CPU file runs as integer kernels in ONNX Runtime, the TensorRT file builds an engine.

The `make demo` network (digits-cnn) is trained briefly with the trainer's own
API on the embedded digits and exported once with --int8 --engine (TensorRT-RTX
builds for sm89 on this CPU-only machine). What ONNX Runtime runs is read from
its own optimized graph (``SessionOptions.optimized_model_filepath``), not from
the export report; speed is measured in benchmarks/int8_bench.py, not here.
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

INTEGER = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm")
FLOAT_CONV = ("Conv", "FusedConv")


def ort_ops(path: Path, tmp: Path) -> collections.Counter:
    """Op types of the graph ONNX Runtime's CPU provider runs after its fusions."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp / (path.name + ".optimized.onnx"))
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def source_ops(path: Path) -> collections.Counter:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from cnnedge.export import export
    from cnnedge.trainer.loop import TrainConfig, train

    run = tmp_path_factory.mktemp("int8") / "demo"
    result = train(TrainConfig(preset="digits-cnn", data="digits", out=str(run), epochs=8, verbose=0),
                   log=lambda s: None)
    report = export(run / "model.keras", int8=True, engine=True, gpu="sm89", batch="1,4,8")
    return run, report, result


def test_cpu_file_runs_every_conv_as_an_integer_kernel(demo, tmp_path):
    run, report, _ = demo
    convs = source_ops(run / "model.onnx")["Conv"]
    assert convs >= 2
    ops = ort_ops(run / "model.int8.onnx", tmp_path)
    assert ops["QLinearConv"] + ops["ConvInteger"] == convs, ops
    assert not any(ops[o] for o in FLOAT_CONV), ops
    # the head: an integer kernel, unless the export measured that it must stay float (and says so)
    gemms = source_ops(run / "model.onnx")["Gemm"] + source_ops(run / "model.onnx")["MatMul"]
    kept = sum(m["kept_float"] for m in report.calibration["measured_layers"])
    assert ops["QGemm"] + ops["QLinearMatMul"] + ops["MatMulInteger"] == gemms - kept, (ops, kept)
    assert report.calibration["ort_cpu_ops"]["QLinearConv"] == ops["QLinearConv"]


def test_the_check_fails_on_inputs_only_qdq(demo, tmp_path):
    """The TensorRT file keeps the former design (Q/DQ only in front of Conv/Gemm): ONNX Runtime runs it as
    float Convs, which is what the check above must catch."""
    run, _, _ = demo
    ops = ort_ops(run / "model.int8.trt.onnx", tmp_path)
    assert not any(ops[o] for o in INTEGER), ops
    assert sum(ops[o] for o in FLOAT_CONV) == source_ops(run / "model.onnx")["Conv"]


def test_demo_export_keeps_int8_accuracy(demo):
    _, report, result = demo
    assert report.passed, report.failures
    for name in ("model.int8.onnx", "model.int8.trt.onnx"):
        a = report.artifact(name)
        assert a.keras_accuracy == pytest.approx(result.test_accuracy, abs=1e-6)
        assert a.top1_agreement >= 0.99 and a.accuracy_drop <= 0.01, (name, a)


def test_head_layer_choice_is_measured_and_recorded(demo):
    from cnnedge.export import read_card

    run, report, _ = demo
    measured = report.calibration["measured_layers"]
    assert len(measured) == 1 and measured[0]["op"] in ("Gemm", "MatMul")
    m = measured[0]
    assert 0.0 <= m["agreement_quantized"] <= 1.0 and 0.0 <= m["agreement_float"] <= 1.0
    assert m["kept_float"] == (m["agreement_float"] - m["agreement_quantized"] > 0.005)
    assert (m["node"] in report.calibration["float_layers"]) == m["kept_float"]
    for name, flavour in (("model.int8.onnx", "onnxruntime-cpu"), ("model.int8.trt.onnx", "tensorrt")):
        cal = read_card(run / name).provenance.calibration
        assert cal["flavour"] == flavour and cal["float_layers"] == report.calibration["float_layers"]


def test_int8_engine_is_built_from_the_tensorrt_file(demo):
    from cnnedge.card import sha256_file
    from cnnedge.sidecar import EngineSidecar

    run, report, _ = demo
    side = EngineSidecar.load(run / "model.int8.engine")
    assert side.source_onnx_sha256 == sha256_file(run / "model.int8.trt.onnx")
    assert side.card.precision == "int8" and side.compute_capabilities == ("sm89",)
    eng = report.artifact("model.int8.engine")
    if eng.passed is None:  # no GPU here: built, not run; the note names its source
        assert "built from model.int8.trt.onnx" in eng.note


def test_cpu_file_is_refused_by_tensorrt_rtx(demo, tmp_path):
    """Why there are two files: TensorRT-RTX refuses the CPU file's int32 bias and asymmetric activations."""
    from cnnedge.errors import ExportError
    from cnnedge.export import read_card
    from cnnedge.export.engine import Profile, build, toolkit

    run, _, _ = demo
    with pytest.raises(ExportError, match="model.int8.onnx|could not build"):
        build(run / "model.int8.onnx", tmp_path / "cpu.engine", read_card(run / "model.int8.onnx"), toolkit(),
              ("sm89",), Profile(1, 4, 8), 256, None)


def test_float_layers_option_keeps_the_named_layer_float(demo, tmp_path):
    from cnnedge.export import export
    from cnnedge.export.int8 import Int8Options

    run, report, _ = demo
    head = report.calibration["measured_layers"][0]["node"]
    rep = export(run / "model.keras", tmp_path / "out", int8=True, int8_options=Int8Options(float_layers=(head,)))
    assert head in rep.calibration["float_layers"] and rep.calibration["measured_layers"] == []
    ops = ort_ops(tmp_path / "out" / "model.int8.onnx", tmp_path)
    gemms = source_ops(run / "model.onnx")["Gemm"] + source_ops(run / "model.onnx")["MatMul"]
    assert ops["QGemm"] + ops["QLinearMatMul"] == gemms - 1, ops  # the head's output is not quantized
    assert ops["Gemm"] + ops["FusedGemm"] + ops["MatMul"] + ops["MatMulIntegerToFloat"] == 1, ops
    assert ops["QLinearConv"] == source_ops(run / "model.onnx")["Conv"]
    assert rep.artifact("model.int8.onnx").top1_agreement >= 0.99


def test_bad_int8_options_write_no_model(demo, tmp_path):
    from cnnedge.errors import UsageError
    from cnnedge.export import export
    from cnnedge.export.int8 import Int8Options

    with pytest.raises(UsageError, match="activations"):
        Int8Options(activations="u8")
    with pytest.raises(UsageError, match="float_layers"):
        Int8Options(float_layers="Gemm_3")
    with pytest.raises(UsageError, match="int8_options"):
        export(demo[0] / "model.keras", tmp_path / "x", int8=True, int8_options={"activations": "uint8"})
    assert not (tmp_path / "x").exists()  # refused when the options are built, before any work
    with pytest.raises(UsageError, match="no node named Nope"):
        export(demo[0] / "model.keras", tmp_path / "y", int8=True, int8_options=Int8Options(float_layers=("Nope",)))
    assert not (tmp_path / "y" / "model.int8.onnx").exists()


def test_s8s8_cpu_file_also_runs_as_integer_kernels(demo, tmp_path):
    from cnnedge.export import export
    from cnnedge.export.int8 import Int8Options

    run, _, _ = demo
    rep = export(run / "model.keras", tmp_path / "s8", int8=True, int8_options=Int8Options(activations="int8"))
    assert rep.calibration["cpu_activations"] == "int8"
    ops = ort_ops(tmp_path / "s8" / "model.int8.onnx", tmp_path)
    assert ops["QLinearConv"] == source_ops(run / "model.onnx")["Conv"] and not ops["Conv"], ops
    assert rep.artifact("model.int8.onnx").top1_agreement >= 0.99


def test_calibration_fingerprint_is_of_the_pixels_the_model_takes(demo):
    import hashlib

    from cnnedge.card import ModelCard
    from cnnedge.export.data import load_images, pixel_spec
    from cnnedge.export.int8 import fingerprint

    run, report, _ = demo
    card = ModelCard.load(run / "card.json")
    cset = load_images(None, card, "train", 300, "--calib")
    pixels = cset.inputs(pixel_spec(card, "uint8"), card)
    h = hashlib.sha256()
    for i in range(0, len(pixels), 7):  # hashing in pieces gives the same digest
        h.update(np.ascontiguousarray(pixels[i:i + 7]).tobytes())
    assert fingerprint(pixels) == h.hexdigest() == report.calibration["data_sha256"]


def test_auto_opens_the_int8_file_made_for_the_provider(demo, tmp_path):
    import shutil

    from cnnedge.runtime.backends import int8_file_for, load_backend

    run, _, _ = demo
    cpu, gpu = run / "model.int8.onnx", run / "model.int8.trt.onnx"
    assert int8_file_for(cpu, "ort-cuda") == int8_file_for(cpu, "ort-trt") == gpu
    assert int8_file_for(cpu, "ort-cpu") == cpu and int8_file_for(run / "model.onnx", "ort-trt") == run / "model.onnx"
    alone = tmp_path / "model.int8.onnx"
    shutil.copy(cpu, alone)
    assert int8_file_for(alone, "ort-trt") == alone  # no TensorRT file beside it: the file given
    with load_backend(cpu, threads=1) as be:  # no GPU provider here: the CPU file, as given
        if be.name == "ort-cpu":
            assert Path(be.path) == cpu
        else:
            assert Path(be.path) == gpu


MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason=f"real MNIST test digits not found in {MNIST_DIR}")
def test_real_mnist_int8_keeps_accuracy(tmp_path):
    """mnist-cnn on 4,000 real MNIST scans (a class folder of PNGs), exported with --int8 and checked on the
    held-out scans of the same folder."""
    import cv2

    from cnnedge.export import export
    from cnnedge.trainer.data import read_idx
    from cnnedge.trainer.loop import TrainConfig, train

    x, y = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz"), read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    data = tmp_path / "mnist"
    for c in range(10):
        (data / str(c)).mkdir(parents=True)
    for i in range(4000):
        assert cv2.imwrite(str(data / str(int(y[i])) / f"{i:05d}.png"), x[i])
    run = tmp_path / "run"
    result = train(TrainConfig(preset="mnist-cnn", data=str(data), out=str(run), epochs=3, verbose=0),
                   log=lambda s: None)
    assert result.test_accuracy > 0.9
    report = export(run / "model.keras", int8=True)
    assert report.verify["images"] >= 300 and report.passed, report.failures
    for name in ("model.int8.onnx", "model.int8.trt.onnx"):
        a = report.artifact(name)
        print(f"real MNIST {name}: agreement {a.top1_agreement:.4f}, accuracy {a.accuracy:.4f} vs Keras "
              f"{a.keras_accuracy:.4f} on {report.verify['images']} scans")
        assert a.top1_agreement >= 0.98 and a.accuracy_drop <= 0.01, (name, a)
    ops = ort_ops(run / "model.int8.onnx", tmp_path)
    assert ops["QLinearConv"] == source_ops(run / "model.onnx")["Conv"] and not ops["Conv"], ops
