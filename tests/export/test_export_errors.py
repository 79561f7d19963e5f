"""cnn-export refuses bad input with one line, a non-zero exit code and no partial files.

Models come from strangers: a Lambda layer, a legacy .h5, something that is not
a Keras file, a truncated archive, a model that does not take images. Bad flags
are refused before anything is loaded.
"""
from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SIZE = 16


def _card(**kw):
    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess, Provenance

    base = dict(name="tiny", classes=tuple(str(i) for i in range(10)), input=InputSpec(SIZE, SIZE, 3),
                preprocess=Preprocess(scale=1 / 255),
                provenance=Provenance(dataset="digits", dataset_spec={"source": "digits", "size": [SIZE, SIZE],
                                                                      "seed": 0, "val_split": 0.15,
                                                                      "test_split": 0.15}))
    base.update(kw)
    return ModelCard(**base)


def _save(model, folder: Path, card=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (card or _card()).save(folder / "card.json")
    return folder / "model.keras"


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


@pytest.fixture(scope="module")
def tiny(keras, tmp_path_factory) -> Path:
    """An untrained image classifier with a card: enough for every check that happens before conversion."""
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    return _save(model, tmp_path_factory.mktemp("tiny") / "run")


def cli(argv: list[str]) -> tuple[int, str]:
    from cnnedge.cli._run import run_cli
    from cnnedge.cli.export import main

    err = io.StringIO()
    code = run_cli("cnn-export", lambda a: main(a, stdout=io.StringIO(), stderr=io.StringIO()), argv, stderr=err)
    return code, err.getvalue()


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnn-export: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow  # Keras
def test_lambda_layer_is_refused_by_safe_mode(keras, tmp_path):
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Lambda(lambda x: x / 255.0),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = _save(model, tmp_path / "run")
    code, err = cli([str(path)])
    assert_one_line_error(code, err, "safe mode", "Lambda")
    assert code == 1
    assert listing(tmp_path / "run") == ["card.json", "model.keras"]


def test_legacy_h5_needs_trust(tmp_path):
    """A missing flag: a usage mistake (exit 2)."""
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    code, err = cli([str(tmp_path / "model.h5")])
    assert_one_line_error(code, err, "--trust", "safe mode")
    assert code == 2
    assert listing(tmp_path) == ["model.h5"]


def test_not_a_keras_file(tmp_path):
    """A file of a kind cnn-export does not take is a usage mistake (exit 2), named with every suffix it takes
    (the one list in cnnedge.artifact.kinds); an ONNX file that does not parse is a failure (exit 1)."""
    (tmp_path / "model.pt").write_bytes(b"not really")
    code, err = cli([str(tmp_path / "model.pt")])
    assert_one_line_error(code, err, "not a model file cnn-export knows", ".keras/.h5/.hdf5", ".onnx")
    assert code == 2
    (tmp_path / "model.onnx").write_bytes(b"not really")  # ONNX is an input now: a broken one is named as such
    code, err = cli([str(tmp_path / "model.onnx"), "--out", str(tmp_path / "out")])
    assert_one_line_error(code, err, "not a readable ONNX model")
    assert code == 1


@pytest.mark.slow  # Keras
def test_truncated_keras_archive(tiny, tmp_path):
    data = tiny.read_bytes()
    (tmp_path / "model.keras").write_bytes(data[: len(data) // 2])
    shutil.copy(tiny.parent / "card.json", tmp_path / "card.json")
    code, err = cli([str(tmp_path / "model.keras")])
    assert_one_line_error(code, err, "truncated or corrupt")
    assert listing(tmp_path) == ["card.json", "model.keras"]


@pytest.mark.slow  # Keras
def test_corrupt_keras_archive(tiny, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as z:
        z.writestr("config.json", "{ this is not json")
        z.writestr("model.weights.h5", b"junk")
    shutil.copy(tiny.parent / "card.json", tmp_path / "card.json")
    code, err = cli([str(tmp_path / "model.keras")])
    assert_one_line_error(code, err, "model.keras")
    assert listing(tmp_path) == ["card.json", "model.keras"]


@pytest.mark.slow  # Keras
def test_custom_layer_keras_cannot_load(keras, tmp_path):
    @keras.saving.register_keras_serializable(package="cnnedge_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), Doubler(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = _save(model, tmp_path / "run")
    keras.saving.get_custom_objects().pop("cnnedge_test>Doubler")  # as on a machine without that code
    code, err = cli([str(path)])
    assert_one_line_error(code, err, "custom layer", "Doubler")
    assert listing(tmp_path / "run") == ["card.json", "model.keras"]


@pytest.mark.slow  # Keras
def test_op_tf2onnx_cannot_convert_is_named(keras, tmp_path):
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Resizing(8, 8, interpolation="lanczos3"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = _save(model, tmp_path / "run")
    code, err = cli([str(path), "--verify", "digits", "--verify-size", "10"])
    assert_one_line_error(code, err, "ScaleAndTranslate")
    assert code == 1
    assert listing(tmp_path / "run") == ["card.json", "model.keras"]


@pytest.mark.slow  # Keras
def test_model_that_does_not_take_images(keras, tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    path = _save(model, tmp_path / "run")
    code, err = cli([str(path), "--verify", "digits"])
    assert_one_line_error(code, err, "is not an image batch")
    assert listing(tmp_path / "run") == ["card.json", "model.keras"]


@pytest.mark.parametrize("batch", ["8,1,32", "1,32,8", "1,8", "0,1,2", "a,b,c"])
def test_bad_batch_is_refused_before_loading(tmp_path, batch):
    (tmp_path / "model.keras").write_bytes(b"never read")
    tiny = tmp_path / "model.keras"
    code, err = cli([str(tiny), "--engine", "--gpu", "sm89", "--batch", batch])
    assert_one_line_error(code, err, "--batch")
    assert code == 2
    assert listing(tmp_path) == ["model.keras"]


@pytest.mark.slow  # Keras
def test_calibration_folder_without_readable_images(tiny, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage IEND")
    (calib / "b.jpg").write_bytes(b"")
    (calib / "readme.txt").write_text("hello")
    code, err = cli([str(tiny), "--int8", "--calib", str(calib), "--out", str(tmp_path / "out")])
    assert_one_line_error(code, err, "--calib", "no readable images", "3 file(s) skipped")
    assert code == 2
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


@pytest.mark.slow  # Keras
def test_int8_without_any_calibration_source(keras, tiny, tmp_path):
    import cv2
    import numpy as np

    from cnnedge.artifact.card import Provenance

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny, run / "model.keras")
    _card(provenance=Provenance()).save(run / "card.json")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "x.png"), np.zeros((20, 20, 3), np.uint8))
    code, err = cli([str(run / "model.keras"), "--int8", "--verify", str(photos)])
    assert_one_line_error(code, err, "--int8 needs calibration images", "--calib")
    assert listing(run) == ["card.json", "model.keras"]


@pytest.mark.slow  # Keras
def test_bad_option_values(tiny):
    code, err = cli([str(tiny), "--int8", "--calib-method", "entropi"])
    assert_one_line_error(code, err, "did you mean 'entropy'")
    code, err = cli([str(tiny), "--gpu", "sm89"])
    assert_one_line_error(code, err, "--gpu applies to --engine")
    code, err = cli([str(tiny), "--engine", "--gpu", "volta"])
    assert_one_line_error(code, err, "--gpu 'volta'")
    code, err = cli([str(tiny), "--calib", "digitz", "--int8"])
    assert_one_line_error(code, err, "did you mean 'digits'")
    assert listing(tiny.parent) == ["card.json", "model.keras"]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present: the default target exists")
@pytest.mark.slow  # Keras
def test_engine_without_gpu_names_the_flag(tiny):
    code, err = cli([str(tiny), "--engine"])
    assert_one_line_error(code, err, "no GPU found", "--gpu sm89")


@pytest.mark.slow  # Keras
def test_sm75_fp32_refusal_is_reported_and_leaves_nothing(tiny, tmp_path):
    """TensorRT-RTX refuses FP32 GEMMs for sm75: the builder's own message reaches the user, no files stay."""
    out = tmp_path / "out"
    code, err = cli([str(tiny), "--engine", "--gpu", "sm75", "--out", str(out), "--verify", "digits",
                     "--verify-size", "20"])
    assert_one_line_error(code, err, "could not build model.engine for sm75")
    assert listing(out) == []


def test_importing_the_exporter_loads_no_heavy_library():
    code = ("import sys, cnnedge.export, cnnedge.cli.export; "
            "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'onnxruntime', 'tensorrt_rtx') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_engine_without_any_tensorrt_names_the_install(tmp_path):
    """A machine where neither TensorRT imports (the modules are blocked from importing in a fresh interpreter)."""
    (tmp_path / "model.keras").write_bytes(b"never read")
    code = ("import sys; sys.modules['tensorrt'] = None; sys.modules['tensorrt_rtx'] = None\n"
            "from cnnedge.cli._run import run_cli; from cnnedge.cli.export import main\n"
            f"sys.exit(run_cli('cnn-export', main, [{str(tmp_path / 'model.keras')!r}, '--engine', '--gpu', 'sm89']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert_one_line_error(res.returncode, res.stderr, "neither tensorrt nor tensorrt_rtx",
                          "pip install 'cnnedge[trt-rtx]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


@pytest.mark.parametrize("flag, value", [("--min-agreement-fp32", "5"), ("--min-agreement-int8", "-0.1"),
                                         ("--max-drop-int8", "-1"), ("--max-diff-fp32", "x")])
def test_thresholds_out_of_range_are_usage_errors(tmp_path, flag, value, capsys):
    (tmp_path / "model.keras").write_bytes(b"never read")
    with pytest.raises(SystemExit) as exc:
        cli([str(tmp_path / "model.keras"), flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert listing(tmp_path) == ["model.keras"]


@pytest.mark.slow  # Keras
def test_missing_calibration_source_names_calib(tiny, tmp_path):
    code, err = cli([str(tiny), "--int8", "--calib", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    assert_one_line_error(code, err, "--calib")
    assert "--verify" not in err and not (tmp_path / "out").exists()


def test_staging_left_by_a_killed_export_is_swept(tmp_path):
    import os
    import subprocess
    import sys

    from cnnedge.artifact.staged import EXPORT
    from cnnedge.staging import sweep

    STAGING_PREFIX = EXPORT.staging
    sweep_stale_staging = functools.partial(sweep, layout=EXPORT)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    killed = tmp_path / f"{STAGING_PREFIX}{dead.stdout.strip()}-abc"  # that process has exited
    running = tmp_path / f"{STAGING_PREFIX}{os.getppid()}-def"  # a live process: maybe exporting now
    other = tmp_path / f"{STAGING_PREFIX}notapid"
    for d in (killed, running, other):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"half")
    assert sweep_stale_staging(tmp_path) == [killed]
    assert not killed.exists() and running.exists() and other.exists()


@pytest.mark.slow  # Keras
def test_card_nested_900_deep_is_one_line_and_leaves_nothing(tiny, tmp_path):
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny.parent, run)
    card = json.loads((run / "card.json").read_text())
    deep: dict = {}
    for _ in range(900):
        deep = {"a": deep}
    card["provenance"]["dataset_spec"] = {"source": "digits", "x": deep}
    (run / "card.json").write_text(json.dumps(card))
    before = listing(run)
    code, err = cli([str(run / "model.keras"), "--verify", "digits", "--verify-size", "20"])
    assert code == 1
    assert_one_line_error(code, err, str(run / "card.json"), "nested deeper than 32 levels")
    assert listing(run) == before


@pytest.mark.slow  # Keras
def test_unexpected_failure_in_a_step_is_one_line_naming_the_step(tiny, tmp_path):
    """Anything that is not a CnnEdgeError inside a step (here the caller's progress callback failing when the
    conversion starts) comes out as one ExportError naming the step, the model and the message; the original
    is chained for --traceback, and no file is left behind."""
    from cnnedge.errors import ExportError
    from cnnedge.export import export

    def progress(msg: str) -> None:
        if msg.startswith("Keras -> ONNX") and msg.endswith("..."):
            raise ValueError("terminal gone")

    out = tmp_path / "out"
    with pytest.raises(ExportError) as info:
        export(tiny, out, verify="digits", verify_size=20, progress=progress)
    msg = str(info.value)
    assert msg.startswith("Keras -> ONNX (tf2onnx) failed for ") and str(tiny) in msg, msg
    assert "ValueError: terminal gone" in msg and "--traceback" in msg and "\n" not in msg
    assert isinstance(info.value.__cause__, ValueError)
    assert listing(out) == []


def test_library_errors_name_the_argument_and_the_cli_the_flag():
    from cnnedge.errors import OptionError
    from cnnedge.export import ExportOptions

    with pytest.raises(OptionError, match=r"^input_dtype 'x'; expected one of uint8, float32$") as info:
        ExportOptions(input_dtype="x")
    assert info.value.option == "input_dtype"
    with pytest.raises(OptionError, match=r"^gpu applies to engine builds; add engine or drop gpu$"):
        ExportOptions(gpu="sm89")
    with pytest.raises(OptionError, match=r"^calib_size must be a positive integer, found 0$"):
        ExportOptions(calib_size=0)
    from cnnedge.cli.export import flag

    assert info.value.render(flag) == "--input 'x'; expected one of uint8, float32"
    assert flag("calib_size") == "--calib-size" and flag("workspace_mib") == "--workspace"


def test_export_killed_during_its_final_renames_is_completed_by_the_next(tmp_path):
    """The state a kill -9 between two renames leaves (a dead pid's commit record, half the new files in place)
    is reported by pending() and completed, all new, by the next export's first step."""
    import json
    import subprocess

    from cnnedge.artifact.staged import EXPORT, half_replaced as pending
    from cnnedge.staging import StagedFolder, roll_forward as roll

    RECORD = EXPORT.record
    roll_forward = lambda folder: roll(folder, EXPORT).moved  # noqa: E731
    commit = lambda staging, folder: StagedFolder(folder, EXPORT, staging).commit()  # noqa: E731

    out = tmp_path / "out"
    out.mkdir()
    names = ["export_report.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    for n in names:
        (out / n).write_text("old")
    staging = out / ".cnn-export-999999-x"
    staging.mkdir()
    for n in names:
        (staging / n).write_text("new")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / RECORD).write_text(json.dumps({"pid": int(dead.stdout), "staging": staging.name, "files": names}))
    for n in names[:2]:  # killed after two renames
        os.replace(staging / n, out / n)
    assert {(out / n).read_text() for n in names} == {"old", "new"}
    assert "interrupted" in (pending(out) or "")
    from cnnedge.errors import ModelLoadError
    from cnnedge.runtime.backends import load_backend

    with pytest.raises(ModelLoadError, match="interrupted while putting its files in place"):
        load_backend(out / "model.onnx", "ort-cpu")  # the runtime refuses the mixed set
    assert roll_forward(out) == names[2:]
    assert [(out / n).read_text() for n in names] == ["new"] * 4
    assert pending(out) is None and listing(out) == sorted(names)

    staging.mkdir()  # and an uninterrupted commit leaves no record
    (staging / "model.onnx").write_text("newer")
    assert commit(staging, out) == ["model.onnx"]
    assert (out / "model.onnx").read_text() == "newer" and not (out / RECORD).exists()


def scan_opset8_classifier(path: Path) -> Path:
    """An image classifier at opset 8 whose Scan (batch axis first, as opset 8 had it) onnx's version converter
    turns into an invalid graph: ONNX Runtime runs the file as it is, the converted one fails shape inference."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vec = [16]
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "row"], ["s_out"]), helper.make_node("Identity", ["row"], ["row_out"])],
        "body", [helper.make_tensor_value_info(n, TensorProto.FLOAT, vec) for n in ("s_in", "row")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, vec) for n in ("s_out", "row_out")])
    weights = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (16, 10)).astype(np.float32), "G")
    rows = numpy_helper.from_array(np.array([0, 48, 16], np.int64), "rows_shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "rows_shape"], ["rows"]),
         helper.make_node("ReduceMean", ["rows"], ["init"], axes=[1], keepdims=0),
         helper.make_node("Scan", ["", "init", "rows"], ["final", "seq"], body=body, num_scan_inputs=1),
         helper.make_node("MatMul", ["final", "G"], ["y"])], "scan8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [weights, rows])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 4
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.slow  # the digits and ONNX Runtime, twice
def test_opset_converter_breaking_the_graph_is_blamed_on_the_conversion(tmp_path):
    """The converter's invalid graph was reported as onnxslim's failure, naming a deleted temporary file; now one
    line names the conversion, the user's file and what to do, and nothing is written."""
    import numpy as np
    import onnxruntime as ort

    src = scan_opset8_classifier(tmp_path / "scan8.onnx")
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])  # the source itself runs
    assert sess.run(None, {"x": np.zeros((2, 3, SIZE, SIZE), np.float32)})[0].shape == (2, 10)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    flags = ["--labels", str(labels), "--scale", "1/255", "--mean", "0", "--std", "1", "--rgb", "--verify", "digits",
             "--verify-size", "20", "--out", str(tmp_path / "out")]
    for extra, target, todo in (([], 17, "give --opset N"), (["--opset", "13"], 13, "try another --opset")):
        code, err = cli([str(src), *flags, *extra])
        assert_one_line_error(code, err, str(src), f"converting its graph from opset 8 to {target}",
                              "version converter", "invalid graph", todo, "convert scan8.onnx to opset 13")
        assert code == 1
        assert "onnxslim" not in err and "cnnedge-compare" not in err and "staged" not in err, err
    assert listing(tmp_path / "out") == []


@pytest.mark.slow  # Keras
def test_a_stop_a_library_turns_into_its_own_error_stays_a_stop(tiny, tmp_path):
    """tf2onnx's bare ``except:`` raises RuntimeError('Not support type ...') for whatever it caught, the
    signal handler's Terminated included (tf2onnx/tf_utils.py); Keras' loader and ONNX Runtime's quantizer do
    the like. Raised that way from inside a step, the stop still ends the export as a stop (exit 143), not as
    'Keras -> ONNX failed' (exit 1), and nothing is left."""
    import signal

    from cnnedge.export import export
    from cnnedge.runtime.interrupt import Terminated, exit_code_for

    def progress(msg: str) -> None:
        if msg.startswith("Keras -> ONNX") and msg.endswith("..."):
            try:
                raise Terminated(int(signal.SIGTERM))  # what the SIGTERM handler raises where it lands
            except:  # noqa: E722 - the library's pattern, reproduced
                raise RuntimeError("Not support type: <class 'bytes'>")

    out = tmp_path / "out"
    with pytest.raises(Terminated) as info:
        export(tiny, out, verify="digits", verify_size=20, progress=progress)
    assert exit_code_for(info.value) == 143
    assert listing(out) == []
