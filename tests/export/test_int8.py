"""INT8 export: the CPU file runs as integer kernels in ONNX Runtime, the TensorRT file builds an engine.

The `make demo` network (digits-cnn) is trained briefly with the trainer's own
API on the embedded digits and exported once per session with --int8 --engine
(conftest.py's demo_int8; TensorRT-RTX builds for sm89 on this CPU-only machine).
What ONNX Runtime runs is read from its own optimized graph
(``SessionOptions.optimized_model_filepath``), not from the export report; speed
is measured in benchmarks/int8_bench.py, not here.
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
def demo(demo_int8):
    """The session's digits-cnn, exported with --int8 --engine --gpu sm89 --batch 1,4,8 into its run folder."""
    return demo_int8.run, demo_int8.report, demo_int8.result


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
    from cnnedge.artifact.card import sha256_file
    from cnnedge.artifact.sidecar import EngineSidecar

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

    from cnnedge.artifact.card import ModelCard
    from cnnedge.export.data import load_images, pixel_spec
    from cnnedge.export.calibration import fingerprint

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


MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason=f"real MNIST test digits not found in {MNIST_DIR}")
def test_real_mnist_int8_keeps_accuracy(tmp_path):
    """mnist-cnn on 4,000 real MNIST scans (a class folder of PNGs), exported with --int8 and checked on the
    held-out scans of the same folder."""
    import cv2

    from cnnedge.export import export
    from cnnedge.datasets import read_idx
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


def test_fingerprint_batches_is_the_fingerprint_of_the_concatenation():
    from cnnedge.export.calibration import fingerprint, fingerprint_batches

    x = np.random.default_rng(0).integers(0, 256, (23, 5, 4, 3), dtype=np.uint8)
    chunks = [x[:7], x[7:8], x[8:], x[:0]]
    assert fingerprint_batches(chunks) == fingerprint(x)
    assert fingerprint_batches([x[:, :, ::-1][:9], x[:, :, ::-1][9:]]) == fingerprint(x[:, :, ::-1])  # strided
    assert fingerprint_batches([x[:22]]) != fingerprint(x)


def _pre_processed(demo, tmp: Path) -> tuple[Path, np.ndarray]:
    """The demo's FP32 graph prepared as quantize() prepares it, and 77 of its calibration images."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cnnedge.artifact.card import ModelCard
    from cnnedge.export.data import load_images, pixel_spec

    run = demo[0]
    card = ModelCard.load(run / "card.json")
    pixels = load_images(None, card, "train", 77, "--calib").inputs(pixel_spec(card, "uint8"), card)
    pre = tmp / "pre.onnx"
    quant_pre_process(str(run / "model.onnx"), str(pre), skip_symbolic_shape=True)
    return pre, pixels


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_chunked_calibration_gives_the_one_shot_ranges(demo, tmp_path, method):
    """One quantize_static over every image (the former calibration) and one collect_data per batch agree
    (entropy: ONNX Runtime widens a histogram's bins chunk by chunk, so a second pass over the whole range)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, load_tensors_data, quantize_static

    from cnnedge.export.calibration import calibrate
    from cnnedge.export.onnx_io import io_names

    pre, pixels = _pre_processed(demo, tmp_path)
    feeds = iter([{io_names(onnx.load(str(pre)))[0]: pixels}])

    class OneShot:
        def get_next(self):
            return next(feeds, None)

    cache = tmp_path / "one-shot.json"
    quantize_static(str(pre), str(tmp_path / "q.onnx"), OneShot(), quant_format=QuantFormat.QDQ,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}[method],
                    calibration_cache_path=str(cache))
    one_shot = load_tensors_data(cache)
    chunked, n = calibrate(pre, lambda: (pixels[i:i + 5] for i in range(0, len(pixels), 5)), method, tmp_path)
    assert n == len(pixels) and set(chunked.keys()) == set(one_shot.keys()) and len(one_shot.keys()) > 5
    for k in one_shot.keys():
        np.testing.assert_allclose(chunked[k].range_value, one_shot[k].range_value, rtol=1e-6, atol=1e-7)


def test_histogram_ranges_do_not_depend_on_how_the_caller_chunks(demo, tmp_path):
    """The cache key holds the data, not its chunking: calibration re-batches to its own size."""
    from cnnedge.export.calibration import calibrate

    pre, pixels = _pre_processed(demo, tmp_path)
    a, na = calibrate(pre, lambda: (pixels[i:i + 3] for i in range(0, len(pixels), 3)), "entropy", tmp_path)
    b, nb = calibrate(pre, lambda: iter([pixels[:40], pixels[40:]]), "entropy", tmp_path)
    assert na == nb == len(pixels) and set(a.keys()) == set(b.keys())
    for k in a.keys():
        assert np.array_equal(a[k].range_value, b[k].range_value), k


def test_rebatch_keeps_order_and_drops_the_tail_only_when_asked():
    from cnnedge.export.calibration import rebatch

    x = np.arange(23)
    chunks = [x[:7], x[7:8], x[8:], x[:0]]
    assert [len(b) for b in rebatch(chunks, 5)] == [5, 5, 5, 5, 3]
    assert np.array_equal(np.concatenate(list(rebatch(chunks, 5))), x)
    assert [len(b) for b in rebatch(chunks, 5, tail=False)] == [5, 5, 5, 5]


PEAK_SCRIPT = """
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from cnnedge.export.calibration import calibrate

tmp, n = Path(sys.argv[1]), int(sys.argv[2])
w = np.random.default_rng(0).normal(size=(16, 3, 3, 3)).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
     helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])], "big-activations",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 112, 112])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 112, 112])],
    [onnx.numpy_helper.from_array(w, "w"),
     onnx.numpy_helper.from_array(np.ones((16, 16, 3, 3), np.float32) / 144, "w2")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnx.save(model, str(tmp / "m.onnx"))


def batches():
    for i in range(0, n, 24):
        yield np.random.default_rng(i).normal(size=(min(24, n - i), 3, 112, 112)).astype(np.float32)


tensors, used = calibrate(tmp / "m.onnx", batches, "entropy", tmp)
assert used == n
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc/self/status (VmHWM)")
def test_calibration_peak_memory_does_not_grow_with_the_images(tmp_path):
    """Entropy calibration of a graph with 2.4 MB of activations per image: the former one-reader calibration
    held every image's (measured: peak 203 MB with 24 images, 1122 MB with 240); streamed: 171 and 182 MB."""
    import subprocess
    import sys

    peaks = []
    for n in (24, 240):
        work = tmp_path / str(n)
        work.mkdir()
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(work), str(n)], capture_output=True, text=True,
                             timeout=300, cwd=Path(__file__).resolve().parents[2])
        assert out.returncode == 0, out.stderr[-2000:]
        peaks.append(int(out.stdout.split()[-1]))
    assert peaks[1] - peaks[0] < 60, f"peak RSS {peaks[0]} MB with 24 images, {peaks[1]} MB with 240"


def test_the_demo_model_with_its_card_saying_in_graph_false_fails_on_its_269_test_images(demo, tmp_path):
    """The card check, the other way round from a right card on few images: the demo's digits-cnn normalises
    inside its graph, and a card that says otherwise is convicted on the card's own test split."""
    import shutil

    from cnnedge.artifact.card import ModelCard
    from cnnedge.export import ParityFailure, export

    run, _, _ = demo
    edited = tmp_path / "edited"
    edited.mkdir()
    shutil.copy(run / "model.keras", edited / "model.keras")
    ModelCard.load(run / "card.json").replace(preprocess={"in_graph": False}).save(edited / "card.json")
    with pytest.raises(ParityFailure) as info:
        export(edited / "model.keras", edited / "out")
    check = info.value.report.card_check
    assert check["n"] == 269 and check["failures"], check
    assert "preprocess.in_graph" in str(info.value) and "269 labelled images" in str(info.value)


# --- the CPU file on every x86 CPU: 7-bit weights, checked, and run on an emulated AVX2 CPU without VNNI ----------

QEMU = __import__("shutil").which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not found (apt-get install qemu-user; `make test` "
                                                     "installs it): no emulated AVX2 CPU to run the INT8 files on")


def test_cpu_file_has_weights_that_cannot_saturate_and_records_it(demo):
    from cnnedge.export import read_card
    from cnnedge.export.saturation import INT16_MAX, check

    run, report, _ = demo
    sat = report.calibration["saturation"]
    weighted = sum(source_ops(run / "model.onnx")[o] for o in ("Conv", "Gemm", "MatMul"))
    assert sat["holds"] and sat["layers"] >= weighted and 0 < sat["worst_pair_sum"] <= INT16_MAX, sat
    assert report.calibration["cpu_weight_bits"] == 7
    assert read_card(run / "model.int8.onnx").provenance.calibration["saturation"] == sat
    # the check can fail: the TensorRT file's 8-bit weights (for TensorRT, whose sums are 32-bit) overflow it
    trt = check(run / "model.int8.trt.onnx")
    assert not trt.holds and trt.worst_pair_sum > INT16_MAX and trt.offenders


def test_the_report_says_which_cpus_the_cpu_file_was_verified_on(demo):
    from cnnedge.runtime.cpu_kernels import int8_kernels

    _, report, _ = demo
    said, here = report.cpu_int8, int8_kernels()
    assert said["native"] == here.describe() and said["verified"][0] == f"{here.name} (native)"
    assert report.to_dict()["cpu_int8"] == said
    if here.exact and QEMU:
        (emu,) = report.emulated
        assert emu.cpu.startswith("AVX2 without VNNI (emulated") and emu.passed and emu.n == report.verify["images"]
        assert emu.agree == report.artifact("model.int8.onnx").agree and said["verified"][1] == emu.cpu
        assert "@ emulated AVX2" in report.table()
    elif here.exact:
        assert not report.emulated and "qemu-x86_64 not found" in said["not_verified"][0]
    else:  # this CPU is the one that saturates: the native check is that check
        assert not report.emulated and "cannot be emulated" in said["not_verified"][-1]


def _digit_pixels(run: Path, n: int) -> np.ndarray:
    from cnnedge.datasets import split_images
    from cnnedge.keras_io import load_card_for
    from cnnedge.runtime.classifier import Classifier

    images, _, _ = split_images(load_card_for(run / "model.keras").provenance.dataset_spec, "test")
    with Classifier(run / "model.onnx", backend="ort-cpu", threads=1) as clf:
        return np.stack([clf.prepare(im) for im in images[:n]])


@needs_qemu
def test_8bit_weights_saturate_on_the_emulated_avx2_cpu_and_the_cpu_file_does_not(demo, tmp_path):
    """ONNX Runtime's own quantize_static with 8-bit weights (what cnnedge's CPU file was before) gives other
    answers on an AVX2 CPU without VNNI than here; the exported CPU file gives the same, bit for bit."""
    import onnxruntime.quantization as q

    from cnnedge.export import emulated
    from cnnedge.runtime.classifier import Classifier
    from cnnedge.runtime.cpu_kernels import int8_kernels

    if not int8_kernels().exact:
        pytest.skip(f"this CPU's kernels ({int8_kernels().name}) are the emulated ones: nothing to compare")
    run, _, _ = demo
    pixels = _digit_pixels(run, 200)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": pixels[i:i + 50]} for i in range(0, 200, 50)])

        def get_next(self):
            return next(self.batches, None)

    import onnx

    assert onnx.load(str(run / "model.onnx")).graph.input[0].name == "images"
    eight = tmp_path / "int8-8bit.onnx"
    q.quantize_static(str(run / "model.onnx"), str(eight), Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    for path, saturates in ((eight, True), (run / "model.int8.onnx", False)):
        with Classifier(path, backend="ort-cpu", threads=1) as clf:
            native = np.concatenate([clf.infer_pixels(pixels[i:i + 64]) for i in range(0, 200, 64)])
        there, said = emulated.run(path, pixels, QEMU, 64)
        assert said["kernels"]["name"] == "AVX2 without VNNI" and not said["kernels"]["exact"]
        diff = float(np.max(np.abs(there - native.reshape(there.shape))))
        assert (diff > 1e-3) == saturates, (path.name, diff)


@needs_qemu
def test_an_old_int8_file_warns_on_a_cpu_whose_sums_saturate(demo, tmp_path):
    """cnn-infer under the emulated AVX2 CPU: a CPU INT8 file whose card records no no-saturation guarantee (as
    files exported before it) is warned about in one line; the exported file is not."""
    import subprocess
    import sys

    import onnx

    from cnnedge.export import onnx_io, read_card

    run, _, _ = demo
    old = tmp_path / "old" / "model.int8.onnx"
    old.parent.mkdir()
    card = read_card(run / "model.int8.onnx")
    cal = dict(card.provenance.calibration)
    del cal["saturation"]
    model = onnx.load(str(run / "model.int8.onnx"))
    onnx_io.embed_card(model, card.replace(provenance={"calibration": cal}))
    onnx_io.save(model, old)
    folder = tmp_path / "one"
    folder.mkdir()
    import cv2

    assert cv2.imwrite(str(folder / "a.png"), _digit_pixels(run, 1)[0])
    for path, warned in ((old, True), (run / "model.int8.onnx", False)):
        done = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, str(Path(sys.executable).parent / "cnn-infer"),
                               str(path),
                               "--source", str(folder), "--quiet"], capture_output=True, text=True, timeout=600)
        lines = [ln for ln in done.stderr.splitlines() if "TCG doesn't support" not in ln]
        assert done.returncode == 0, lines
        said = [ln for ln in lines if "saturate" in ln]
        assert len(said) == (1 if warned else 0), lines
        if warned:
            assert "AVX2 without VNNI" in said[0] and "cnn-export --int8" in said[0]


def _outlier_model(run: Path, tmp_path: Path) -> tuple[Path, str]:
    """The demo's model.onnx with its first Conv's output channel 0 scaled by 1000 and the second Conv's matching
    input weights by 1/1000 (ReLU and MaxPool commute with the scale: the same function); the second Conv's name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(run / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    first, second = [n for n in model.graph.node if n.op_type == "Conv"][:2]
    w1, b1, w2 = (numpy_helper.to_array(inits[n]).copy() for n in (first.input[1], first.input[2], second.input[1]))
    w1[0] *= 1000
    b1[0] *= 1000
    w2[:, 0] /= 1000
    for name, arr in ((first.input[1], w1), (first.input[2], b1), (second.input[1], w2)):
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    src = tmp_path / "outlier.onnx"
    onnx.save(model, str(src))
    return src, second.name


def test_fallback_keeps_the_layers_that_lose_most_float_until_the_files_agree(demo, tmp_path):
    """An outlier channel (one Conv's output channel scaled by 1000 and the next Conv's matching input weights by
    1/1000: the same function, as real networks often have) ruins per-tensor int8 activations. The fallback finds
    and keeps float what it must, records each kept layer with its cost, and both files then pass the gate."""
    from cnnedge.export import Int8Options, export

    run, _, _ = demo
    src, second = _outlier_model(run, tmp_path)
    off = export(src, tmp_path / "off", int8=True, check=False, int8_options=Int8Options(target_agreement=0.0))
    assert not off.passed and off.calibration["fallback"] == {}
    rep = export(src, tmp_path / "on", int8=True)
    assert rep.passed, rep.failures
    for flavour, name in (("onnxruntime-cpu", "model.int8.onnx"), ("tensorrt", "model.int8.trt.onnx")):
        fb = rep.calibration["fallback"][flavour]
        assert fb["agreement_before"] < 0.99 <= fb["agreement_after"] and fb["reached"], fb
        assert fb["kept"] and all(0 < k["mac_share"] <= 1 for k in fb["kept"])
        assert fb["float_mac_share"] == pytest.approx(sum(k["mac_share"] for k in fb["kept"]), abs=1e-3)
        assert fb["kept"][-1]["agreement"] == fb["agreement_after"]
        assert off.artifact(name).top1_agreement < rep.artifact(name).top1_agreement
    # the TensorRT file needs only the Conv after the outlier float: its input is what int8 ruins
    assert [k["node"] for k in rep.calibration["fallback"]["tensorrt"]["kept"]] == [second]


def test_cnn_infer_and_cnn_bench_say_which_int8_kernels_this_cpu_runs(demo, tmp_path):
    import io
    import json

    import cv2

    from cnnedge.cli.bench import main as bench
    from cnnedge.cli.infer import main as infer
    from cnnedge.runtime.cpu_kernels import int8_kernels

    run, _, _ = demo
    folder = tmp_path / "one"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.png"), _digit_pixels(run, 1)[0])
    name = int8_kernels().name
    out, err = io.StringIO(), io.StringIO()
    assert infer([str(run / "model.int8.onnx"), "--source", str(folder), "--backend", "ort-cpu", "--quiet"],
                 out, err) == 0
    assert f"on ort-cpu ({name} int8 kernels)" in err.getvalue()
    err = io.StringIO()
    assert infer([str(run / "model.onnx"), "--source", str(folder), "--backend", "ort-cpu", "--quiet"],
                 io.StringIO(), err) == 0
    assert "int8 kernels" not in err.getvalue()  # an FP32 file runs no integer kernel
    out = io.StringIO()
    assert bench([str(run / "model.onnx"), str(run / "model.int8.onnx"), "--backends", "ort-cpu", "--batch", "1",
                  "--iters", "5", "--warmup", "1", "--repeats", "1", "--json", str(tmp_path / "b.json"), "--quiet"],
                 out, io.StringIO()) == 0
    assert f"CPU int8 kernels: {name}" in out.getvalue()
    assert json.loads((tmp_path / "b.json").read_text())["machine"]["cpu_int8_kernels"]["name"] == name


def test_a_failed_export_with_force_replaces_nothing_and_a_smaller_one_leaves_no_stale_sibling(demo, tmp_path):
    """All or nothing under --force (issue 33): an export that fails its gate replaces none of the folder's
    files and writes no Triton entry; its files go to an export-failed-* folder. An export with fewer
    artifacts removes the earlier ones it does not replace, in the same commit."""
    from cnnedge.artifact.card import sha256_file
    from cnnedge.export import Int8Options, ParityFailure, export

    run, _, _ = demo
    src, _ = _outlier_model(run, tmp_path)
    out, repo = tmp_path / "out", tmp_path / "triton"
    export(run / "model.onnx", out, int8=True)
    before = {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()}
    with pytest.raises(ParityFailure) as info:
        export(src, out, int8=True, force=True, triton=str(repo), int8_options=Int8Options(target_agreement=0.0))
    assert f"nothing in {out} was replaced" in str(info.value)
    assert {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()} == before
    (failed,) = out.glob("export-failed-*")
    assert (failed / "model.int8.onnx").is_file() and (failed / "export_report.json").is_file()
    assert str(failed) in str(info.value) and not repo.exists()
    assert not list(out.glob(".cnn-export-*"))
    export(run / "model.onnx", out, force=True)  # FP32 only, over the INT8 export
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    assert not (out / "model.int8.trt.onnx").exists()
