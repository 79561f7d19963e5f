"""--backend openvino (issue 31): the real OpenVINO from PyPI against the real ONNX Runtime on the same files.

A small digits CNN is trained and exported once per session (conftest.py's small_cnn_export: model.onnx,
model.fp16.onnx, model.int8.onnx); hostile and slow graphs are built with onnx.helper. The whole file is skipped, with the reason, where openvino is not installed.
"""
from __future__ import annotations

import importlib.util
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("openvino") is None:  # found, not imported: the tests load it when they run
    pytest.skip("openvino is not installed: pip install 'cnnedge[openvino]'", allow_module_level=True)
pytest.importorskip("onnxruntime")
from test_hostile_reads import _classifier_onnx, _patch, _plain_onnx, assert_quick_and_small, run  # noqa: E402

from cnnedge.errors import BackendUnavailable, CnnEdgeError, ModelLoadError, UsageError  # noqa: E402
from cnnedge.runtime.backends import load_backend  # noqa: E402
from cnnedge.runtime.interrupt import RunInterrupted  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def exported(small_cnn_export) -> Path:
    """model.onnx, model.fp16.onnx and model.int8.onnx of a trained digits CNN, with its card embedded."""
    return small_cnn_export.out


@pytest.fixture(scope="module")
def digits(exported) -> np.ndarray:
    """The digits test split, prepared as the card says (the model's own uint8 tensor)."""
    from cnnedge.datasets import split_images
    from cnnedge.runtime import Classifier

    with Classifier(exported / "model.onnx", "ort-cpu") as clf:
        images, _, _ = split_images(clf.card.provenance.dataset_spec, "test")
        return np.stack([clf.prepare(im) for im in images])


def both(path: Path, x: np.ndarray, **opts) -> tuple[np.ndarray, np.ndarray]:
    with load_backend(path, "ort-cpu", threads=1) as o, load_backend(path, "openvino", **opts) as v:
        return o.infer(x), v.infer(x)


def test_fp32_matches_onnx_runtime_at_every_batch_and_hint(exported, digits):
    path = exported / "model.onnx"
    with load_backend(path, "ort-cpu", threads=1) as o:
        ref = o.infer(digits)
    hints = ({"threads": 1}, {"threads": 2}, {"threads": 2, "hint": "latency"}, {"threads": 2, "hint": "throughput"})
    for opts in hints:
        with load_backend(path, "openvino", **opts) as be:
            assert be.name == "openvino"
            np.testing.assert_allclose(be.infer(digits), ref, rtol=1e-4, atol=1e-5, err_msg=str(opts))
            one = np.concatenate([be.infer(digits[i:i + 1]) for i in range(8)])
            np.testing.assert_allclose(one, ref[:8], rtol=1e-4, atol=1e-5)
    assert len(set(ref.argmax(1))) == 10  # a trained model whose outputs vary: the comparison means something


def test_fp16_file_agrees_with_onnx_runtime(exported, digits):
    ref, got = both(exported / "model.fp16.onnx", digits)
    assert (ref.argmax(1) == got.argmax(1)).all()
    np.testing.assert_allclose(got, ref, atol=2e-2)


def binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def test_int8_file_runs_as_int8_and_agrees_with_onnx_runtime(exported, digits):
    """OpenVINO runs the QDQ file's convolutions as integer kernels; its top-1 agrees with ONNX Runtime's INT8 on
    the same file. Bound: an agreement rate of 97% or more, rejected only when the observed count would be below
    the 0.1% tail of Binomial(n, 0.97), so a CPU whose kernels round differently passes and a broken run fails."""
    path = exported / "model.int8.onnx"
    with load_backend(path, "openvino", threads=1) as be:
        assert be.card is not None and be.card.precision == "int8"
        ran = be.executed_precisions()
    import onnx

    convs = sum(n.op_type == "Conv" for n in onnx.load(str(exported / "model.onnx")).graph.node)
    assert convs >= 2 and ran.get("Convolution:u8", 0) + ran.get("Convolution:i8", 0) == convs, ran
    ref, got = both(path, digits, threads=2)
    n, agree = len(digits), int((ref.argmax(1) == got.argmax(1)).sum())
    assert binom_cdf(agree, n, 0.97) > 1e-3, (agree, n)
    with load_backend(exported / "model.onnx", "ort-cpu") as fp32:
        assert binom_cdf(int((fp32.infer(digits).argmax(1) == got.argmax(1)).sum()), n, 0.97) > 1e-3


def test_card_and_metadata_are_read_as_on_onnx_runtime(exported, tmp_path):
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        with load_backend(exported / name, "ort-cpu") as o, load_backend(exported / name, "openvino") as v:
            assert v.card == o.card and v.card is not None
            assert v.input_spec == o.input_spec and v.output_spec.dtype == o.output_spec.dtype
            assert v.metadata == o.metadata
    third = _plain_onnx(tmp_path / "third.onnx", metadata={"names": "{0: 'a', 1: 'b'}"})
    with load_backend(third, "openvino") as v:
        assert v.card is None and v.metadata == {"names": "{0: 'a', 1: 'b'}"}


def test_classifier_on_openvino_labels_as_on_onnx_runtime(exported, digits):
    from cnnedge.runtime import Classifier

    with Classifier(exported / "model.int8.onnx", "openvino", threads=1) as v, \
            Classifier(exported / "model.int8.onnx", "ort-cpu", threads=1) as o:
        assert v.backend_name == "openvino"
        x = digits[:16]
        assert [p.label for p in v.postprocess(v.infer(x))] == [p.label for p in o.postprocess(o.infer(x))]


def test_cnn_infer_on_openvino_labels_every_file_as_onnx_runtime(exported, tmp_path):
    import json

    import cv2

    from cnnedge.datasets import split_images

    with load_backend(exported / "model.onnx") as be:
        card = be.card
    images, _, _ = split_images(card.provenance.dataset_spec, "test", limit=30)
    for i, im in enumerate(images):
        assert cv2.imwrite(str(tmp_path / f"{i:03d}.png"), im)
    got = {}
    for engine in ("openvino", "ort-cpu"):
        r = _cli("infer", str(exported / "model.onnx"), "--source", str(tmp_path), "--backend", engine,
                 "--batch", "8", "--threads", "2", "--json", "-")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
        got[engine] = {row["path"]: row["label"] for row in rows}
    assert len(got["openvino"]) == 30 and got["openvino"] == got["ort-cpu"]


def test_auto_with_measuring_off_stays_onnx_runtime_and_options_are_checked(exported, monkeypatch):
    monkeypatch.setenv("CNNEDGE_AUTO_MEASURE", "0")  # measuring on: tests/runtime/backends/test_engine_choice.py
    with load_backend(exported / "model.onnx") as be:
        assert be.name == "ort-cpu"
    with pytest.raises(UsageError, match="hint must be latency or throughput"):
        load_backend(exported / "model.onnx", "openvino", hint="fast")
    with pytest.raises(UsageError, match="takes no option fp16"):
        load_backend(exported / "model.onnx", "openvino", fp16=True)
    with pytest.raises(UsageError, match="threads must be a whole number"):
        load_backend(exported / "model.onnx", "openvino", threads=0)


def test_hostile_inputs_get_onnx_runtimes_one_line_errors(exported, tmp_path):
    path = exported / "model.onnx"
    with load_backend(path, "ort-cpu") as o, load_backend(path, "openvino") as v:
        spec = v.input_spec
        good = np.zeros((2,) + tuple(spec.shape[1:]), spec.dtype)
        for bad in (good.astype(np.float32), good[:, :-1], good[0], np.zeros((0,) + good.shape[1:], good.dtype),
                    good.tolist()):
            with pytest.raises(UsageError) as want:
                o.infer(bad)
            with pytest.raises(UsageError) as got:
                v.infer(bad)
            assert str(got.value) == str(want.value) and "\n" not in str(got.value)
    for key in ("names", "cnnedge.card"):  # metadata that is not UTF-8, patched into the file
        model = _plain_onnx(tmp_path / f"{key}.onnx", metadata={key: "QQQQ"})
        _patch(model, b"QQQQ", b"\xff\xfe\xc0\x80")
        with pytest.raises(ModelLoadError) as want:
            load_backend(model, "ort-cpu")
        with pytest.raises(ModelLoadError) as got:
            load_backend(model, "openvino")
        assert str(got.value) == str(want.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(ModelLoadError, match="junk.onnx: not a"):
        load_backend(junk, "openvino")


def test_a_memory_bomb_is_one_line_not_a_crash(tmp_path):
    """A ConstantOfShape of 400 GB: OpenVINO folds constants while compiling, so the load fails, in one line, under
    the address-space limit of the hostile-file tests."""
    model = _classifier_onnx(tmp_path / "bomb.onnx", bomb=(100_000, 100_000, 10))
    r = run("import sys\nfrom cnnedge.runtime.backends import load_backend\nfrom cnnedge.errors import CnnEdgeError\n"
            "try:\n    load_backend(sys.argv[1], 'openvino')\nexcept CnnEdgeError as e:\n"
            "    print(type(e).__name__, '|', e)\n", str(model))
    assert_quick_and_small(r)
    assert r.rc == 0 and r.out.count("\n") == 1 and "ModelLoadError | " in r.out, r
    assert "bomb.onnx" in r.out and "memory" in r.out and "ort-cpu" not in r.out, r


def _det_model(path: Path) -> Path:
    """A graph with a Det node: ONNX Runtime runs it, OpenVINO's ONNX front end has no rule for it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])
    m = helper.make_model(helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_a_model_openvino_cannot_compile_is_one_line_naming_the_file(tmp_path):
    model = _det_model(tmp_path / "det.onnx")
    with load_backend(model, "ort-cpu") as o:  # a valid model: ONNX Runtime runs it
        assert o.infer(np.eye(4, dtype=np.float32)[None]).shape == (1,)
    with pytest.raises(ModelLoadError) as got:
        load_backend(model, "openvino")
    msg = str(got.value)
    assert "\n" not in msg and "det.onnx" in msg and "OpenVINO cannot compile" in msg and "Det" in msg, msg
    assert "src/" not in msg and "ort-cpu" in msg
    r = _cli("bench", str(model), "--backend", "openvino", "--batch", "1", "--iters", "2", "--warmup", "1")
    errors = [ln for ln in r.stderr.splitlines() if ": error:" in ln]
    assert r.returncode == 1 and len(errors) == 1 and "det.onnx" in errors[0], r
    assert "Traceback" not in r.stderr


def _cli(tool: str, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    code = f"import sys\nfrom cnnedge.cli.{tool} import console\nsys.argv[0] = 'cnn-{tool}'\nconsole()\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(ROOT))


def test_cnn_bench_measures_the_int8_file_on_both_engines(exported, tmp_path):
    import json

    out = tmp_path / "b.json"
    r = _cli("bench", str(exported / "model.int8.onnx"), "--backend", "openvino,ort-cpu", "--batch", "1,4",
             "--iters", "5", "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(x["backend"], x["batch"], x["precision"]) for x in rows} == {
        (b, n, "int8") for b in ("openvino", "ort-cpu") for n in (1, 4)}
    assert sum(" openvino " in ln for ln in r.stdout.splitlines()) == 2


def test_without_openvino_the_backend_is_unavailable_and_the_runtime_never_imports_it(exported):
    code = ("import sys\nsys.modules['openvino'] = None  # as where it is not installed\n"
            "import cnnedge.runtime, cnnedge.runtime.backends, cnnedge.cli.infer, cnnedge.bench\n"
            "from cnnedge.runtime.backends import load_backend\n"
            "from cnnedge.errors import BackendUnavailable\n"
            "try:\n    load_backend(sys.argv[1], 'openvino')\n"
            "except BackendUnavailable as e:\n    print('unavailable |', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(exported / "model.onnx")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0 and "unavailable | " in r.stdout and "pip install 'cnnedge[openvino]'" in r.stdout, r
    r = subprocess.run([sys.executable, "-c", "import sys, cnnedge.runtime, cnnedge.runtime.backends, "
                        "cnnedge.runtime.classifier, cnnedge.cli.infer, cnnedge.cli.bench\n"
                        "print('openvino' in sys.modules)"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.strip() == "False", r
    assert issubclass(BackendUnavailable, CnnEdgeError)


# --- stopping a long run -------------------------------------------------------------------------------------

def _slow_model(path: Path, nodes: int = 200) -> Path:
    """``nodes`` MatMuls in a chain on a float [N, 256, 512] input, 10 scores out: about 0.13 GFLOP a node and
    image, so a batch of 64 runs for tens of seconds here. OpenVINO cancels between nodes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes_ = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", "w"], [f"h{i}"]) for i in range(nodes)]
    nodes_ += [helper.make_node("ReduceMean", [f"h{nodes - 1}"], ["m"], axes=[1], keepdims=0),
               helper.make_node("Slice", ["m", "s0", "s1", "ax"], ["y"])]
    inits = [numpy_helper.from_array((np.eye(512) * 0.999).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(np.array([v], np.int64), k) for k, v in (("s0", 0), ("s1", 10), ("ax", 1))]
    g = helper.make_graph(nodes_, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256, 512])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time a process has used (this one when ``pid`` is None): it grows only while the model computes, so
    waiting for it is waiting for an event, however loaded the machine is."""
    if pid is None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_stop_runs_cancels_a_run_in_flight_and_the_backend_runs_again(tmp_path):
    model = _slow_model(tmp_path / "slow.onnx")
    with load_backend(model, "openvino", threads=1) as be:
        small = np.ones((1, 256, 512), np.float32)
        first = be.infer(small)
        x = np.ones((64, 256, 512), np.float32)
        got: list[BaseException] = []
        started = threading.Event()

        def run() -> None:
            started.set()
            try:
                be.infer(x)
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                got.append(exc)

        t = threading.Thread(target=run)
        base = _cpu_seconds()
        t.start()
        assert started.wait(30)
        while _cpu_seconds() < base + 1.0 and t.is_alive():  # the run is computing
            time.sleep(0.02)
        assert t.is_alive(), "the batch of 64 finished within 1 s of CPU: make the slow model slower"
        t0 = time.monotonic()
        be.stop_runs()
        t.join(30)
        assert not t.is_alive() and time.monotonic() - t0 < 5
        assert len(got) == 1 and isinstance(got[0], RunInterrupted) and "slow.onnx" in str(got[0]), got
        np.testing.assert_array_equal(be.infer(small), first)  # the cancelled request runs again


def _spinner(path: Path) -> Path:
    """A Loop of 10^15 trips: one node that never ends, which OpenVINO cannot cancel."""
    return _plain_onnx(path, loop_trips=10 ** 15)


def test_a_model_that_never_ends_is_refused_by_the_load_timeout_and_the_process_exits(tmp_path):
    """The warm-up spins in one Loop node; the load timeout refuses it in one line and cnn-infer exits 1 (freeing
    the stuck request would wait for the Loop: the backend leaves it to its thread)."""
    from test_runtime_models import write_images

    model = _spinner(tmp_path / "spin.onnx")
    write_images(tmp_path / "imgs", 1)
    r = _cli("infer", str(model), "--source", str(tmp_path / "imgs"), "--assume-preprocessing", "--backend",
             "openvino", "--load-timeout-s", "2", timeout=120)
    errors = [ln for ln in r.stderr.splitlines() if ": error:" in ln]
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r
    assert "spin.onnx" in errors[0] and "--load-timeout-s" in errors[0], errors


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("kind", ["slow", "spin"])
def test_sigterm_and_ctrl_c_end_a_long_cnn_bench_run_within_seconds(tmp_path, sig, code, kind):
    """``slow``: a batch of 64 through 200 MatMuls, cancelled between two of them; ``spin``: a Loop that never
    ends, which the run leaves after the stop (its request keeps spinning until the process exits)."""
    model = _slow_model(tmp_path / "slow.onnx") if kind == "slow" else _spinner(tmp_path / "spin.onnx")
    batch = "64" if kind == "slow" else "1"
    argv = [str(model), "--backend", "openvino", "--batch", batch, "--iters", "3", "--warmup", "1", "--repeats", "1",
            "--threads", "1", "--load-timeout-s", "3600"]
    prog = "import sys\nfrom cnnedge.cli.bench import console\nsys.argv[0] = 'cnn-bench'\nconsole()\n"

    def defaults() -> None:  # as a terminal's foreground job starts
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    p = subprocess.Popen([sys.executable, "-c", prog, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}, cwd=str(ROOT),
                         preexec_fn=defaults)
    err: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        for line in p.stderr:
            err.append(line.decode(errors="replace"))
            if "on openvino" in err[-1]:
                seen.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert seen.wait(120), "".join(err)
        base = _cpu_seconds(p.pid)
        while p.poll() is None and _cpu_seconds(p.pid) < base + 4.0:  # compiled and computing (or spinning)
            time.sleep(0.05)
        assert p.poll() is None, "".join(err)
        t0 = time.monotonic()
        p.send_signal(sig)
        rc = p.wait(60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(10)
    text = "".join(err)
    assert rc == code and took < 8, (rc, took, text)  # a node of this batch takes well under a second
    assert "Traceback" not in text and "interrupted" in text.lower(), text
