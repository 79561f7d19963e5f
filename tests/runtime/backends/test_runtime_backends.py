"""Backends: choice, checks, third-party ONNX, batch planning, external data, TensorRT guards."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnedge.artifact.card import sha256_file
from cnnedge.errors import BackendUnavailable, ModelLoadError, UsageError
from cnnedge.runtime.backends import load_backend, plan_batches

from test_runtime_models import helper_model, models  # noqa: E402

ort = pytest.importorskip("onnxruntime")


def test_import_runtime_loads_no_heavy_package():
    code = ("import sys, cnnedge, cnnedge.runtime, cnnedge.runtime.backends, cnnedge.runtime.classifier, "
            "cnnedge.runtime.pipeline, cnnedge.runtime.runner, cnnedge.runtime.sinks, cnnedge.runtime.sources, cnnedge.cli.infer\n"
            "from cnnedge import Classifier\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'tensorrt', 'tensorrt_rtx', 'onnx', 'torch', "
            "'openvino') if m in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_plan_batches():
    assert plan_batches(5) == [(0, 5, 5)]
    assert plan_batches(5, fixed=1) == [(i, i + 1, 1) for i in range(5)]
    assert plan_batches(5, fixed=4) == [(0, 4, 4), (4, 5, 4)]  # last chunk padded to the fixed size
    assert plan_batches(10, max_batch=4) == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert plan_batches(3, max_batch=4) == [(0, 3, 3)]
    with pytest.raises(ValueError):
        plan_batches(0)


def test_plan_batches_pads_up_to_a_profile_minimum():
    # a TensorRT profile built with --batch 4,8,16: 1 to 3 rows must be padded to 4
    assert plan_batches(1, max_batch=16, min_batch=4) == [(0, 1, 4)]
    assert plan_batches(6, max_batch=16, min_batch=4) == [(0, 6, 6)]
    assert plan_batches(18, max_batch=16, min_batch=4) == [(0, 16, 16), (16, 18, 4)]  # short last chunk padded
    assert plan_batches(2, min_batch=3) == [(0, 2, 3)]


class _RangeBackend:
    """A tiny Backend whose 'engine' refuses batches outside min..max, like a TensorRT profile."""

    @staticmethod
    def make(lo: int, hi: int):
        from cnnedge.runtime.backends import Backend, TensorSpec

        class B(Backend):
            name = "range"

            def __init__(self) -> None:
                super().__init__()
                self.path = "range.engine"
                self.input_spec = TensorSpec("x", (None, 2), "float32")
                self.output_spec = TensorSpec("y", (None, 2), "float32")
                self.min_batch, self.max_batch = lo, hi
                self.seen: list[int] = []

            def _infer_impl(self, batch):
                if not lo <= batch.shape[0] <= hi:
                    raise RuntimeError(f"profile refuses batch {batch.shape[0]}")
                self.seen.append(batch.shape[0])
                return batch * 2

        return B()


def test_backend_with_profile_minimum_pads_and_returns_real_rows():
    be = _RangeBackend.make(4, 8)
    x = np.arange(2 * 11, dtype=np.float32).reshape(11, 2)
    for n in (1, 3, 4, 8, 11):
        out = be.infer(x[:n])
        assert out.shape == (n, 2)
        np.testing.assert_array_equal(out, x[:n] * 2)
    assert be.seen == [4, 4, 4, 8, 8, 4]


def test_fixed_batch_model_is_fed_its_batch_size(tmp_path):
    path = helper_model(tmp_path / "fixed1.onnx")
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        sess.run(None, {"x": x})  # the bare session refuses a batch of 5
    with load_backend(path) as be:
        assert be.name == "ort-cpu" and be.fixed_batch == 1 and be.card is None
        assert be.input_spec.shape == (1, 1, 8, 8) and be.input_spec.dtype == "float32"
        out = be.infer(x)
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(5)])
    np.testing.assert_array_equal(out, ref)


def test_slot_runs_a_batch_of_one_in_place(tmp_path):
    """A slot's input is filled in place and run() gives what infer() gives on the same batch;
    models that cannot take a batch of one get no slot."""
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), np.uint8)
    with load_backend(models()["onnx"], "ort-cpu") as be:
        slot = be.slot()
        assert slot is not None and slot.input.shape == (1, 32, 32, 3) and slot.input.dtype == np.uint8
        outs = []
        for f in frames:
            slot.input[0] = f
            out = slot.run()
            np.testing.assert_array_equal(out, be.infer(f[None]))
            outs.append(out.copy())
        assert not np.array_equal(outs[0], outs[1])  # each run answers its own frame
        other = be.slot()
        other.input[0] = frames[0]
        np.testing.assert_array_equal(other.run(), be.infer(frames[:1]))  # slots do not share buffers
        np.testing.assert_array_equal(slot.run(), be.infer(frames[2:]))
    with pytest.raises(UsageError, match="closed"):
        slot.run()
    with pytest.raises(UsageError, match="closed"):
        be.slot()
    assert _RangeBackend.make(4, 8).slot() is None  # a profile whose smallest batch is 4
    with load_backend(helper_model(tmp_path / "fixed1.onnx")) as be:  # a fixed batch of one does take a slot
        slot = be.slot()
        x = np.random.default_rng(1).normal(size=(1, 1, 8, 8)).astype(np.float32)
        slot.input[...] = x
        np.testing.assert_array_equal(slot.run(), be.infer(x))


def test_infer_checks_dtype_and_shape():
    with load_backend(models()["onnx"], "ort-cpu") as be:
        assert be.input_spec.shape == (None, 32, 32, 3) and be.input_spec.dtype == "uint8"
        assert be.card is not None and be.card.num_classes == 10
        with pytest.raises(UsageError, match="takes uint8, got float32"):
            be.infer(np.zeros((1, 32, 32, 3), np.float32))
        with pytest.raises(UsageError, match="takes shape Nx32x32x3"):
            be.infer(np.zeros((1, 3, 32, 32), np.uint8))
        assert be.infer(np.zeros((3, 32, 32, 3), np.uint8)).shape == (3, 10)
    with pytest.raises(UsageError, match="closed"):
        be.infer(np.zeros((1, 32, 32, 3), np.uint8))


def test_every_infer_call_times_itself():
    """The base class times each call it runs (as Polygraphy's runners do), for tools that read it."""
    with load_backend(models()["onnx"], "ort-cpu", threads=1) as be:
        assert be.inference_time == 0.0
        x = np.zeros((4,) + tuple(be.input_spec.shape[1:]), dtype=be.input_spec.dtype)
        t0 = time.perf_counter()
        be.infer(x)
        wall = time.perf_counter() - t0
        assert 0.0 < be.inference_time <= wall


def test_timed_infer_times_copies_apart_from_compute():
    """The public timing path cnn-bench uses: ONNX Runtime's IO-binding steps (OrtValue upload, run,
    download) on the CPU provider, the same code the CUDA provider runs with device buffers."""
    from cnnedge.runtime.backends import Timing

    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    with load_backend(models()["onnx"], "ort-cpu", threads=1) as be:
        ref = be.infer(x)
        out, t = be.timed_infer(x)
        np.testing.assert_array_equal(out, ref)
        assert isinstance(t, Timing) and t.h2d_ns > 0 and t.compute_ns > 0 and t.d2h_ns > 0
        assert t.total_ns == t.h2d_ns + t.compute_ns + t.d2h_ns
        for _ in range(2):  # resident: uploaded once, then only the run is timed
            out, t = be.timed_infer(x, resident=True)
            np.testing.assert_array_equal(out, ref)
            assert t.h2d_ns == 0 and t.d2h_ns == 0 and t.compute_ns > 0
        y = x[::-1].copy()  # another array is uploaded, not the resident one reused
        np.testing.assert_array_equal(be.timed_infer(y, resident=True)[0], be.infer(y))
        with pytest.raises(UsageError, match="takes uint8, got float32"):
            be.timed_infer(x.astype(np.float32))
    with pytest.raises(UsageError, match="closed"):
        be.timed_infer(x)
    rng_be = _RangeBackend.make(4, 8)  # no device: the whole call is compute
    z = np.ones((4, 2), np.float32)
    out, t = rng_be.timed_infer(z)
    np.testing.assert_array_equal(out, z * 2)
    assert t.h2d_ns == 0 and t.d2h_ns == 0 and t.compute_ns > 0
    with pytest.raises(UsageError, match="batches 4..8, not 2"):  # would be padded: not one timed call
        rng_be.timed_infer(z[:2])


def test_input_buffer_is_filled_in_place_and_read_as_given():
    """input_buffer(n): the array infer() reads without staging (pinned on a GPU provider; on the CPU a
    plain one). Filled in place it gives infer()'s answers; bad sizes are one-line usage errors."""
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), np.uint8)
    with load_backend(models()["onnx"], "ort-cpu", threads=1) as be:
        buf = be.input_buffer(3)
        assert buf.shape == x.shape and buf.dtype == x.dtype and buf.flags.c_contiguous
        np.copyto(buf, x)
        np.testing.assert_array_equal(be.infer(buf), be.infer(x.copy()))
        np.testing.assert_array_equal(be.timed_infer(buf)[0], be.infer(x))
        with pytest.raises(UsageError, match="at least 1"):
            be.input_buffer(0)


def test_infer_device_is_refused_by_a_backend_without_a_device():
    """Device memory goes to GPU backends only (ONNX Runtime's CUDA/TensorRT providers, TensorRT); a CPU
    backend says so in one line instead of reading a pointer it cannot use."""
    with load_backend(models()["onnx"], "ort-cpu", threads=1) as be:
        with pytest.raises(UsageError, match="ort-cpu runs on the CPU; infer_device"):
            be.infer_device(1 << 20, (1, 32, 32, 3), "uint8")


class _HostPointerBackend:
    """A Backend whose 'device' is host memory: ``_infer_device_impl`` reads the batch at ``ptr`` (what a GPU
    backend does with device memory), so the base class's checks and in-flight gate run on a CPU."""

    @staticmethod
    def make(delay: float = 0.0):
        import ctypes
        import threading
        import time

        from cnnedge.runtime.backends import Backend, TensorSpec

        class B(Backend):
            name = "host-device"
            entered = threading.Event()  # set once a device call is inside the implementation

            def __init__(self) -> None:
                super().__init__()
                self.path = "host.engine"
                self.input_spec = TensorSpec("x", (None, 4), "float32")
                self.output_spec = TensorSpec("y", (None, 1), "float32")
                self.max_batch = 8

            def _infer_impl(self, batch):
                return batch.sum(axis=1, keepdims=True)

            def _takes_device_batches(self) -> bool:
                return True

            def _infer_device_impl(self, ptr, shape, dtype):
                self.entered.set()
                time.sleep(delay)
                raw = (ctypes.c_float * int(np.prod(shape))).from_address(ptr)
                return np.frombuffer(raw, np.float32).reshape(shape).sum(axis=1, keepdims=True)

        return B()


def test_infer_device_is_checked_and_counted_in_flight_by_the_base_class():
    """The base class refuses a device batch the artifact cannot take in one call, runs the subclass's
    ``_infer_device_impl`` counted in flight (close() waits for it) and refuses calls after close()."""
    import threading
    import time

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    be = _HostPointerBackend.make(delay=0.2)
    np.testing.assert_array_equal(be.infer_device(x.ctypes.data, x.shape, "float32"), be.infer(x))
    with pytest.raises(UsageError, match=r"takes float32 \(None, 4\) in batches of 1..8, got float32 \(3, 5\)"):
        be.infer_device(x.ctypes.data, (3, 5), "float32")
    with pytest.raises(UsageError, match="in batches of 1..8, got uint8"):
        be.infer_device(x.ctypes.data, (3, 4), "uint8")
    with pytest.raises(UsageError, match=r"got float32 \(9, 4\)"):  # over max_batch: one call's worth only
        be.infer_device(x.ctypes.data, (9, 4), "float32")
    done: dict[str, float] = {}

    def work() -> None:
        be.infer_device(x.ctypes.data, x.shape, "float32")
        done["end"] = time.perf_counter()

    be.entered.clear()
    t = threading.Thread(target=work)
    t.start()
    assert be.entered.wait(10)
    be.close()
    closed_at = time.perf_counter()
    t.join(10)
    assert closed_at >= done["end"], "close() returned while infer_device() was still running"
    with pytest.raises(UsageError, match="closed"):
        be.infer_device(x.ctypes.data, x.shape, "float32")


def test_set_input_spec_fixes_dynamic_dims_and_the_checks_follow():
    """A dynamic height and width fixed by set_input_spec (what sizing does) is what infer() checks
    from then on; a fixed dimension, the dtype or the name cannot change."""
    from cnnedge.runtime.backends import Backend, TensorSpec

    class Dyn(Backend):
        name = "dyn"

        def __init__(self) -> None:
            super().__init__()
            self.path = "dyn.onnx"
            self.input_spec = TensorSpec("x", (None, None, None, 3), "uint8")
            self.output_spec = TensorSpec("y", (None, 1), "float32")

        def _infer_impl(self, batch):
            return batch.reshape(batch.shape[0], -1).sum(axis=1, keepdims=True).astype(np.float32)

    with Dyn() as be:
        be.infer(np.zeros((1, 16, 16, 3), np.uint8))  # any size while dynamic (and the hot path's checks cached)
        be.set_input_spec(TensorSpec("x", (None, 8, 8, 3), "uint8"))
        assert be.input_spec.shape == (None, 8, 8, 3)
        assert be.infer(np.ones((2, 8, 8, 3), np.uint8)).tolist() == [[192.0], [192.0]]
        with pytest.raises(UsageError, match="takes shape Nx8x8x3, got 1x16x16x3"):
            be.infer(np.zeros((1, 16, 16, 3), np.uint8))
        for bad in (TensorSpec("x", (None, 4, 4, 3), "uint8"), TensorSpec("x", (None, 8, 8, 3), "float32"),
                    TensorSpec("z", (None, 8, 8, 3), "uint8"), TensorSpec("x", (2, 8, 8, 3), "uint8")):
            with pytest.raises(ValueError, match="fixes dynamic dimensions only"):
                be.set_input_spec(bad)
        assert be.input_spec.shape == (None, 8, 8, 3)


def test_replay_backend_answers_with_its_stored_output_through_the_classifier():
    """benchmarks/runtime_bench.py measures the Classifier's own cost on a ReplayBackend (public API, no
    patched privates): the Classifier runs on it like on the real backend and returns the stored answer."""
    from cnnedge.runtime import Classifier
    from cnnedge.runtime.backends.replay import ReplayBackend

    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
    real = load_backend(models()["onnx"], "ort-cpu", threads=1)
    stored = real.infer(frames[:1, ..., ::-1].copy())
    with Classifier(ReplayBackend(real, stored)) as clf:
        assert clf.backend_name == "replay:ort-cpu" and clf.card == real.card
        want = int(stored.argmax())
        assert [clf.predict(f).index for f in frames] == [want, want]  # through the per-thread slot
        assert clf.infer(frames).shape == (2, stored.shape[1])
        with pytest.raises(UsageError, match="takes uint8"):
            clf.infer(frames.astype(np.float32))  # the checks still run
    with pytest.raises(UsageError, match="closed"):
        real.infer(frames)  # closing the Classifier closed the backend it was composed around
    with pytest.raises(UsageError, match="no backend name"):
        Classifier(load_backend(models()["onnx"]), "ort-cpu")


def test_backend_choice_and_errors(tmp_path):
    onnx_path = models()["onnx"]
    with load_backend(onnx_path) as be:
        assert be.name == "ort-cpu"  # the only provider on this machine
    with pytest.raises(UsageError, match="did you mean 'ort-cpu'"):
        load_backend(onnx_path, "ort-cpux")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
            load_backend(onnx_path, "ort-cuda")
    with pytest.raises(UsageError, match="cannot run a .onnx"):
        load_backend(onnx_path, "trt")
    with pytest.raises(UsageError, match="no option"):
        load_backend(onnx_path, "ort-cpu", trust=True)
    with pytest.raises(UsageError, match="fp16 applies to .*ort-trt"):
        load_backend(onnx_path, "ort-cpu", fp16=True)
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(ModelLoadError, match="not a"):
        load_backend(fake)
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError, match="not a model file"):
        load_backend(other)
    with pytest.raises(UsageError, match="no such file"):
        load_backend(tmp_path / "absent.onnx")


def test_external_data_outside_model_folder_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    inside = tmp_path / "ok"
    inside.mkdir()
    onnx.save(m, str(inside / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    with load_backend(inside / "m.onnx") as be:  # external data beside the model: fine
        assert be.infer(np.ones((2, 1, 8, 8), np.float32))[0, 0] == 64.0

    evil = tmp_path / "evil"
    evil.mkdir()
    (tmp_path / "secret.data").write_bytes((inside / "m.data").read_bytes())
    m2 = onnx.load(str(inside / "m.onnx"), load_external_data=False)
    for t in m2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.data"
    onnx.save(m2, str(evil / "m.onnx"))
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_backend(evil / "m.onnx")
    with pytest.raises(Exception):  # and ONNX Runtime refuses it by itself as well
        ort.InferenceSession(str(evil / "m.onnx"), providers=["CPUExecutionProvider"])


# --- TensorRT: everything around execution, which needs a GPU ---------------------------------------------
def _engine_with_sidecar(tmp_path: Path, **changes):
    from cnnedge.runtime.backends.trt import import_tensorrt
    from cnnedge.runtime.classifier import Classifier
    from cnnedge.artifact.sidecar import EngineSidecar

    trt, flavour = import_tensorrt()
    eng = tmp_path / "model.engine"
    eng.write_bytes(b"not really a plan; never deserialized without passing the checks")
    card = Classifier(models()["onnx"]).card
    fields = dict(card=card, plan_sha256=sha256_file(eng), flavour=flavour, trt_version=trt.__version__,
                  compute_capabilities=("sm89",), input_name="image", output_name="output",
                  profile={"min": 1, "opt": 8, "max": 32})
    fields.update(changes)
    EngineSidecar(**fields).save(eng)
    return eng


def test_trt_engine_checks_before_deserializing(tmp_path):
    pytest.importorskip("tensorrt_rtx" if not _has("tensorrt") else "tensorrt")
    eng = _engine_with_sidecar(tmp_path)
    # hash, flavour and version match: the next check is the GPU, which this machine lacks
    with pytest.raises((BackendUnavailable, ModelLoadError)) as info:
        load_backend(eng)
    assert "GPU" in str(info.value) or "cuda-python" in str(info.value)
    eng.write_bytes(eng.read_bytes() + b"tampered")
    with pytest.raises(ModelLoadError, match="altered or replaced.*rebuild"):
        load_backend(eng)
    (tmp_path / "v").mkdir()
    eng2 = _engine_with_sidecar(tmp_path / "v", trt_version="0.0.1")
    with pytest.raises(ModelLoadError, match="0.0.1.*rebuild"):
        load_backend(eng2)
    (tmp_path / "f").mkdir()
    other = "tensorrt" if _has("tensorrt_rtx") and not _has("tensorrt") else "tensorrt_rtx"
    with pytest.raises(ModelLoadError, match=f"built with {other}.*rebuild"):
        load_backend(_engine_with_sidecar(tmp_path / "f", flavour=other))
    (tmp_path / "n").mkdir()
    eng3 = tmp_path / "n" / "model.engine"
    eng3.write_bytes(b"plan")
    with pytest.raises(ModelLoadError, match="no sidecar"):
        load_backend(eng3)
    with pytest.raises(UsageError, match="cannot run a .engine"):
        load_backend(eng, "ort-cpu")


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_trt_profile_handling():
    from cnnedge.runtime.backends.trt import check_profile_against_sidecar, profile_batch_range
    from cnnedge.artifact.sidecar import EngineSidecar

    assert profile_batch_range((1, 32, 32, 3), (8, 32, 32, 3), (32, 32, 32, 3), -1) == (1, 8, 32)
    assert profile_batch_range((4, 32, 32, 3), (4, 32, 32, 3), (4, 32, 32, 3), 4) == (4, 4, 4)
    with pytest.raises(ModelLoadError, match="invalid batch range"):
        profile_batch_range((8,), (4,), (2,), -1)
    card = load_backend(models()["onnx"]).card
    side = EngineSidecar(card, "0" * 64, "tensorrt", "10.0", ("sm87",), "image", "out",
                         {"min": 1, "opt": 8, "max": 32})
    check_profile_against_sidecar(side, (1, 8, 32))
    with pytest.raises(ModelLoadError, match="does not match its sidecar"):
        check_profile_against_sidecar(side, (1, 8, 16))
    # a batch larger than the profile's maximum is split (what TrtBackend.infer does through plan_batches)
    assert [c[2] for c in plan_batches(70, max_batch=32)] == [32, 32, 6]


def test_trt_logger_keeps_errors():
    from cnnedge.host import trt_logger
    from cnnedge.runtime.backends.trt import import_tensorrt

    try:
        trt, _ = import_tensorrt()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    log = trt_logger(trt)
    log.messages.clear()
    log.log(trt.ILogger.Severity.WARNING, "just a warning")
    log.log(trt.ILogger.Severity.ERROR, "engine plan is from another version")
    assert log.errors == ["engine plan is from another version"]


def _gpu_trt_reason() -> str | None:
    if not _has("tensorrt"):
        return "needs `tensorrt` (TensorRT-RTX cannot execute on this machine's GPUs, and there is no GPU here)"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "needs cuda-python"
    err, n = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and n else "needs an NVIDIA GPU"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(_gpu_trt_reason() is not None, reason=str(_gpu_trt_reason()))
def test_trt_engine_matches_onnx_runtime(tmp_path):  # pragma: no cover - runs where TensorRT and a GPU exist
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    from cnnedge.runtime.classifier import Classifier
    from cnnedge.artifact.sidecar import EngineSidecar

    onnx_path = models()["onnx"]
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, logger)
    assert parser.parse(onnx_path.read_bytes())
    cfg = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    name = net.get_input(0).name
    prof.set_shape(name, (1, 32, 32, 3), (8, 32, 32, 3), (16, 32, 32, 3))
    cfg.add_optimization_profile(prof)
    plan = builder.build_serialized_network(net, cfg)
    eng = tmp_path / "model.engine"
    eng.write_bytes(bytes(plan))
    major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, 0)[1]
    minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, 0)[1]
    ref = Classifier(onnx_path)
    EngineSidecar(ref.card, sha256_file(eng), "tensorrt", trt.__version__, (f"sm{major}{minor}",), name,
                  net.get_output(0).name, {"min": 1, "opt": 8, "max": 16}).save(eng)
    x = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), np.uint8)  # 40 > 16: split
    with Classifier(eng) as clf:
        assert clf.backend_name == "trt"
        np.testing.assert_allclose(clf.infer(x), ref.infer(x), atol=1e-3)
        slot = clf.backend.slot()  # predict's batch of one through the pinned buffers
        for i in range(3):
            slot.input[0] = x[i]
            np.testing.assert_allclose(slot.run(), ref.infer(x[i:i + 1]), atol=1e-3)
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in x[:8]]
        assert [clf.predict(im).index for im in bgr] == [ref.predict(im).index for im in bgr]
        out, t = clf.backend.timed_infer(x[:8])  # cnn-bench's path: pinned copy, execute, download, each timed
        np.testing.assert_allclose(out, ref.infer(x[:8]), atol=1e-3)
        assert t.h2d_ns > 0 and t.compute_ns > 0 and t.d2h_ns > 0
        for _ in range(2):
            out, t = clf.backend.timed_infer(x[:8], resident=True)
            np.testing.assert_allclose(out, ref.infer(x[:8]), atol=1e-3)
            assert t.h2d_ns == 0 and t.d2h_ns == 0 and t.compute_ns > 0
        err, dev = cudart.cudaMalloc(x[:8].nbytes)  # a batch already on the device, as GPU decode leaves it
        assert int(err) == 0
        try:
            cudart.cudaMemcpy(dev, x[:8].ctypes.data, x[:8].nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
            np.testing.assert_allclose(clf.backend.infer_device(int(dev), (8, 32, 32, 3), "uint8"), ref.infer(x[:8]),
                                       atol=1e-3)
            with pytest.raises(UsageError, match="in batches of 1..16"):
                clf.backend.infer_device(int(dev), (8, 32, 32, 1), "uint8")
        finally:
            cudart.cudaFree(dev)


def _slow_model(path: Path, depth: int = 24, width: int = 512) -> Path:
    """An onnx.helper graph that takes a noticeable time per call: ``depth`` chained MatMuls."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.eye(width, dtype=np.float32) * 0.5 + 0.5 / width)
    nodes, prev = [], "x"
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_close_waits_for_an_inflight_infer(tmp_path):
    import threading
    import time

    be = load_backend(_slow_model(tmp_path / "slow.onnx"), "ort-cpu", threads=1)
    x = np.ones((256, 512), np.float32)
    t0 = time.perf_counter()
    be.infer(x)
    once = time.perf_counter() - t0
    done: dict[str, object] = {}
    started = threading.Event()

    def work() -> None:
        started.set()
        try:
            done["out"] = be.infer(x)
        except BaseException as exc:  # noqa: BLE001 - reported below
            done["err"] = exc
        done["end"] = time.perf_counter()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    time.sleep(min(0.02, once / 4))  # the call is running in ONNX Runtime now
    be.close()
    closed_at = time.perf_counter()
    t.join(10)
    assert "err" not in done, done.get("err")
    assert done["out"].shape == (256, 512)  # type: ignore[union-attr]
    assert closed_at >= done["end"], "close() returned while infer() was still running"
    with pytest.raises(UsageError, match="closed"):
        be.infer(x)


def test_onnx_runtime_spins_only_with_free_cores_and_says_so(tmp_path):
    """Spinning intra-op threads took the cores of the caller and the decode workers on 2 cores (spinning off
    took 0.51-0.67 of the time at 2 threads, batch 1; benchmarks/ort_spin_bench.py): it is on only when each
    intra-op thread leaves a free core beside it, and the backend says which it chose."""
    from cnnedge.runtime.backends.base import settings_text
    from cnnedge.runtime.backends.ort import spinning

    assert [spinning(t, cores=c) for t, c in ((1, 16), (2, 2), (2, 4), (2, 5), (3, 8), (4, 8))] == \
        [False, False, False, True, True, False]
    path = helper_model(tmp_path / "m.onnx")
    for threads in (1, 2):
        with load_backend(path, "ort-cpu", threads=threads) as be:
            assert be.settings == {"threads": threads, "spinning": spinning(threads)}
            said = be.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
            assert said == ("1" if spinning(threads) else "0")
            assert settings_text(be.settings) == f", {threads} thread{'s' * (threads > 1)}, spinning " + \
                ("on" if spinning(threads) else "off")
