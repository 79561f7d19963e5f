"""Models from elsewhere, end to end: exported with cnn-infer's model-description flags, then run by
`cnn-infer` with no flags, agreeing with the source model run under its declared preprocessing.

Two sources, each trained here on real MNIST scans (../shared/data/mnist):
- a PyTorch-style ONNX classifier: NCHW float input, ImageNet mean/std outside the graph, dynamic batch
  (a small Keras network converted with tf2onnx, since PyTorch is not installed here);
- a legacy Keras ``.h5`` that normalises outside its graph, 1 gray channel (MNIST's own mean/std).
The reference predictions are computed in the test with plain OpenCV/numpy and ONNX Runtime or Keras,
not through cnnedge's preprocessing.
"""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SIDE = 28


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> dict:
    """2,000 training and 1,000 held-out real MNIST digits as class folders of PNGs, plus the arrays."""
    from _mnist import load, write_folder

    x, y = load()
    root = tmp_path_factory.mktemp("mnist")
    parts = {"train": range(0, 2000), "test": range(2000, 3000)}
    files = {part: write_folder(root / part, x, y, idx) for part, idx in parts.items()}
    (root / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    return {"root": root, "x": x, "y": y, "parts": parts, "files": files}


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _cli(main, argv: list[str], prog: str) -> tuple[int, str, str]:
    from cnnedge.cli._run import run_cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out):
        code = run_cli(prog, lambda a: main(a, stdout=out, stderr=err), argv, stderr=err)
    return code, out.getvalue(), err.getvalue()


def export_cli(argv: list[str]) -> tuple[int, str, str]:
    from cnnedge.cli.export import main

    return _cli(main, argv, "cnn-export")


def infer_predictions(model: Path, folder: Path, tmp_path: Path) -> dict[str, int]:
    """`cnn-infer MODEL --source FOLDER --json` with no model flags: file name -> predicted class index."""
    from cnnedge.cli._run import run_cli
    from cnnedge.cli.infer import main

    out = tmp_path / f"{model.name}.jsonl"
    with redirect_stdout(io.StringIO()):
        code = run_cli("cnn-infer", main, [str(model), "--source", str(folder), "--json", str(out), "--quiet",
                                           "--no-progress"], stderr=io.StringIO())
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {Path(r["path"]).name: int(r["index"]) for r in rows}


def _agreement(got: dict[str, int], files: list[Path], ref: np.ndarray) -> float:
    assert len(got) == len(files)
    return float(np.mean([got[f.name] == int(r) for f, r in zip(files, ref)]))


@pytest.fixture(scope="module")
def pytorch_style_onnx(mnist, tmp_path_factory) -> tuple[Path, callable]:
    """NCHW float32 input normalised with ImageNet mean/std outside the graph, 3 channels (gray scans as RGB)."""
    keras = _keras()
    import tensorflow as tf
    import tf2onnx

    def pre(gray: np.ndarray) -> np.ndarray:  # what a PyTorch user's transform does: ToTensor + Normalize
        rgb = np.repeat(gray[:, None, :, :].astype(np.float32) / 255.0, 3, axis=1)
        return (rgb - np.array(IMAGENET_MEAN, np.float32)[None, :, None, None]) / \
            np.array(IMAGENET_STD, np.float32)[None, :, None, None]

    idx = list(mnist["parts"]["train"])
    model = keras.Sequential([keras.Input((3, SIDE, SIDE)), keras.layers.Permute((2, 3, 1)),
                              keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
                              keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
                              keras.layers.Flatten(), keras.layers.Dense(10)])  # logits, as PyTorch models give
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(pre(mnist["x"][idx]), mnist["y"][idx], epochs=4, batch_size=32, verbose=0)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, SIDE, SIDE], tf.float32, name="input")])
    def fn(x):
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    path = tmp_path_factory.mktemp("torch") / "net.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, pre


def test_pytorch_style_onnx_exports_and_runs_without_flags(mnist, pytorch_style_onnx, tmp_path):
    import onnxruntime as ort

    path, pre = pytorch_style_onnx
    root, out = mnist["root"], tmp_path / "out"
    code, table, err = export_cli([str(path), "--labels", str(root / "labels.txt"), "--scale", "1/255",
                                   "--mean", ",".join(map(str, IMAGENET_MEAN)), "--std", ",".join(map(str, IMAGENET_STD)),
                                   "--rgb", "--fp16", "--int8", "--calib", str(root / "train"), "--calib-size", "300",
                                   "--verify", str(root / "test"), "--engine", "--gpu", "sm89", "--out", str(out),
                                   "-q"])
    assert code == 0, err + table
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.fp16.engine", "model.int8.engine"):
        assert (out / name).is_file(), name
    from cnnedge.export import read_card

    card = read_card(out / "model.onnx")
    assert card.input.dtype == "uint8" and card.input.layout == "NHWC" and card.preprocess.in_graph
    assert card.output == "logits" and card.provenance.parent == "net.onnx" and card.provenance.source_sha256
    assert read_card(out / "model.int8.onnx").provenance.calibration["images"] == 300

    # the source model under its declared preprocessing, computed here without cnnedge
    test_idx = list(mnist["parts"]["test"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": pre(mnist["x"][test_idx])})[0].argmax(1)
    files, truth = mnist["files"]["test"], mnist["y"][test_idx]
    fp32 = infer_predictions(out / "model.onnx", root / "test", tmp_path)
    assert _agreement(fp32, files, ref) >= 0.99
    acc = {}
    for name in ("model.onnx", "model.int8.onnx"):
        got = fp32 if name == "model.onnx" else infer_predictions(out / name, root / "test", tmp_path)
        acc[name] = float(np.mean([got[f.name] == int(t) for f, t in zip(files, truth)]))
    print(f"ONNX from elsewhere on 1,000 real MNIST digits: FP32 {acc['model.onnx']:.2%}, "
          f"INT8 {acc['model.int8.onnx']:.2%}")
    assert acc["model.onnx"] > 0.9
    assert acc["model.onnx"] - acc["model.int8.onnx"] <= 0.01


def test_keras_h5_normalising_outside_exports_and_runs_without_flags(mnist, tmp_path):
    keras = _keras()
    idx = list(mnist["parts"]["train"])

    def pre(gray: np.ndarray) -> np.ndarray:
        return ((gray.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD)[..., None]

    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(pre(mnist["x"][idx]), mnist["y"][idx], epochs=4, batch_size=32, verbose=0)
    src = tmp_path / "src" / "digits.h5"
    src.parent.mkdir()
    model.save(src)
    root, out = mnist["root"], tmp_path / "out"
    argv = [str(src), "--labels", str(root / "labels.txt"), "--scale", "1/255", "--mean", str(MNIST_MEAN),
            "--std", str(MNIST_STD), "--no-rgb", "--verify", str(root / "test"), "--out", str(out), "-q"]
    code, _, err = export_cli(argv)
    assert code == 2 and "--trust" in err  # legacy .h5 still needs it: a missing flag, a usage mistake
    code, table, err = export_cli(argv + ["--trust"])
    assert code == 0, err + table
    assert sorted(p.name for p in src.parent.iterdir()) == ["digits.h5"]  # nothing written beside the source

    test_idx = list(mnist["parts"]["test"])
    ref = np.asarray(model(pre(mnist["x"][test_idx]), training=False)).argmax(1)
    got = infer_predictions(out / "model.onnx", root / "test", tmp_path)
    assert _agreement(got, mnist["files"]["test"], ref) >= 0.99


def test_input_float32_keeps_the_declared_normalisation_outside(mnist, pytorch_style_onnx, tmp_path):
    from cnnedge.export import read_card

    path, _ = pytorch_style_onnx
    root, out = mnist["root"], tmp_path / "out"
    code, table, err = export_cli([str(path), "--labels", str(root / "labels.txt"), "--scale", "1/255",
                                   "--mean", ",".join(map(str, IMAGENET_MEAN)), "--std", ",".join(map(str, IMAGENET_STD)),
                                   "--rgb", "--input", "float32", "--verify", str(root / "test"), "--verify-size",
                                   "200", "--out", str(out), "-q"])
    assert code == 0, err + table
    card = read_card(out / "model.onnx")
    assert card.input.dtype == "float32" and card.input.layout == "NCHW" and not card.preprocess.in_graph
    assert card.preprocess.mean == IMAGENET_MEAN


# --- errors ------------------------------------------------------------------------------------------------


def _tiny_onnx(path: Path, inputs: list[tuple[str, list]], out_shape: list) -> Path:
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    if len(inputs) == 2:
        node = helper.make_node("Add", [inputs[0][0], inputs[1][0]], ["y"])
    else:
        node = helper.make_node("Identity", [inputs[0][0]], ["y"])
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _one_line(code: int, err: str, *needles: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("cnn-export: ") or "error" in ln]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("cnn-export: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_missing_description_flags_are_listed_before_anything_loads(tmp_path):
    path = _tiny_onnx(tmp_path / "m.onnx", [("x", ["N", 3, 8, 8])], ["N", 3, 8, 8])
    code, _, err = export_cli([str(path), "--scale", "1/255", "--out", str(tmp_path / "out")])
    line = _one_line(code, err, "no model card", "missing: --labels, --mean, --std, --rgb/--no-rgb")
    assert "--scale," not in line.split("missing:")[1]
    assert "load ONNX model" not in err and not (tmp_path / "out").exists()
    code, _, err = export_cli([str(tmp_path / "nothing.h5"), "--trust"])
    assert code == 2


def test_card_with_missing_fields_is_one_line(tmp_path):
    keras = _keras()
    run = tmp_path / "run"
    run.mkdir()
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")]
                     ).save(run / "model.keras")
    (run / "card.json").write_text(json.dumps({"version": 1, "name": "x", "input": {"height": 8}}))
    code, _, err = export_cli([str(run / "model.keras")])
    _one_line(code, err, "card", "missing field")
    assert "load Keras model" not in err  # refused before the model is loaded


def test_onnx_with_two_inputs_is_refused(tmp_path):
    path = _tiny_onnx(tmp_path / "two.onnx", [("a", ["N", 3, 8, 8]), ("b", ["N", 3, 8, 8])], ["N", 3, 8, 8])
    code, _, err = export_cli([str(path), "--labels", str(tmp_path / "l.txt")])
    _one_line(code, err, "2 inputs", "one image input")


def test_onnx_whose_input_is_not_an_image_is_refused(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    path = _tiny_onnx(tmp_path / "vec.onnx", [("x", ["N", 2])], ["N", 2])
    code, _, err = export_cli([str(path), "--labels", str(labels), "--scale", "1", "--mean", "0", "--std", "1",
                               "--rgb", "--verify", str(tmp_path)])
    _one_line(code, err, "an image classifier takes a 4-D")


def test_fixed_batch_onnx_exports_with_engines_for_its_batch(mnist, tmp_path):
    """A graph that takes batches of 2 only: parity, calibration and the engine profile use that size."""
    keras = _keras()
    import tensorflow as tf
    import tf2onnx

    model = keras.Sequential([keras.Input((3, SIDE, SIDE)), keras.layers.Permute((2, 3, 1)),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10)])

    @tf.function(input_signature=[tf.TensorSpec([2, 3, SIDE, SIDE], tf.float32, name="input")])
    def fn(x):
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    path = tmp_path / "fixed.onnx"
    path.write_bytes(proto.SerializeToString())
    root, out = mnist["root"], tmp_path / "out"
    code, table, err = export_cli([str(path), "--labels", str(root / "labels.txt"), "--scale", "1/255",
                                   "--mean", "0.5", "--std", "0.25", "--rgb", "--int8", "--calib", str(root / "train"),
                                   "--calib-size", "51", "--verify", str(root / "test"), "--verify-size", "101",
                                   "--engine", "--gpu", "sm89", "--out", str(out)])
    assert code == 0, err + table
    report = json.loads((out / "export_report.json").read_text())
    assert report["engines"]["profile"] == {"min": 2, "opt": 2, "max": 2}
    assert report["calibration"]["images"] == 50  # whole batches of 2
    assert all(a["passed"] is not False for a in report["artifacts"])
    assert "engine profile 2,2,2 instead of --batch 1,8,32" in err


def test_a_colour_keras_model_without_a_card_is_asked_its_colour_order_and_gets_suggestions(mnist, tmp_path):
    """The missing list names --rgb/--no-rgb before the model loads (the archive's config says 3 channels), and
    the conventions measured on labelled images include the colour order: digits drawn in the red channel only
    tell RGB from BGR."""
    import cv2

    keras = _keras()
    idx = list(mnist["parts"]["train"])

    def red(gray: np.ndarray) -> np.ndarray:
        rgb = np.zeros(gray.shape + (3,), np.uint8)
        rgb[..., 0] = gray
        return rgb

    model = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(red(mnist["x"][idx]) / np.float32(255), mnist["y"][idx], epochs=3, batch_size=32, verbose=0)
    src = tmp_path / "colour.keras"
    model.save(src)
    test = tmp_path / "test"
    for i in list(mnist["parts"]["test"])[:200]:
        f = test / str(int(mnist["y"][i])) / f"{i}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(f), cv2.cvtColor(red(mnist["x"][i]), cv2.COLOR_RGB2BGR))
    labels = str(mnist["root"] / "labels.txt")
    code, _, err = export_cli([str(src), "--labels", labels, "--out", str(tmp_path / "o1")])
    _one_line(code, err, "missing: --scale, --mean, --std, --rgb/--no-rgb")
    code, _, err = export_cli([str(src), "--labels", labels, "--verify", str(test), "--out", str(tmp_path / "o2")])
    line = _one_line(code, err, "missing: --scale, --mean, --std, --rgb/--no-rgb", "best on 200 labelled images: ")
    picks = line.split("best on 200 labelled images: ")[1].split(", ")
    assert all(p.rsplit(" (", 1)[0].split()[-1] in ("--rgb", "--no-rgb") for p in picks), picks
    assert picks[0].startswith("--scale 1/255 --mean 0 --std 1 --rgb ("), picks


def test_inverted_pixels_are_described_with_a_negative_std_or_scale(mnist, tmp_path):
    """A model trained on dark digits on white (1 - x/255) is described by --scale 1/255 --mean 1 --std -1, or
    (as argparse could not take before) --scale -1/255 --mean -1 --std 1; both export, pass the card check, and run like Keras."""
    keras = _keras()
    idx = list(mnist["parts"]["train"])

    def pre(gray: np.ndarray) -> np.ndarray:
        return (1 - gray.astype(np.float32) / 255)[..., None]

    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(pre(mnist["x"][idx]), mnist["y"][idx], epochs=3, batch_size=32, verbose=0)
    src = tmp_path / "inverted.keras"
    model.save(src)
    root = mnist["root"]
    test_idx = list(mnist["parts"]["test"])
    ref = np.asarray(model(pre(mnist["x"][test_idx]), training=False)).argmax(1)
    for i, flags in enumerate((["--scale", "1/255", "--mean", "1", "--std", "-1"],
                              ["--scale", "-1/255", "--mean", "-1", "--std", "1"])):
        out = tmp_path / f"out{i}"
        code, table, err = export_cli([str(src), "--labels", str(root / "labels.txt"), *flags, "--no-rgb",
                                       "--verify", str(root / "test"), "--out", str(out), "-q"])
        assert code == 0, err + table
        got = infer_predictions(out / "model.onnx", root / "test", out)
        assert _agreement(got, mnist["files"]["test"], ref) >= 0.99


def test_cnn_infer_measures_the_conventions_on_labelled_images_instead_of_guessing(mnist, pytorch_style_onnx,
                                                                                    tmp_path):
    """A card-less model, its labels and a folder of labelled images, no preprocessing flags: cnn-infer refuses
    to guess (exit 2) and lists the conventions that score best on those images (on gray digits ImageNet's, what
    the model was trained with, ties with -1..1, in either colour order), never the 0..255 ones; pasting the best
    runs."""
    from cnnedge.cli._run import run_cli
    from cnnedge.cli.infer import main

    path, _ = pytorch_style_onnx
    root = mnist["root"]
    base = [str(path), "--labels", str(root / "labels.txt"), "--source", str(root / "test"), "--quiet",
            "--no-progress"]
    err = io.StringIO()
    with redirect_stdout(io.StringIO()):
        code = run_cli("cnn-infer", lambda a: main(a, io.StringIO(), err), base, stderr=err)
    line = err.getvalue().strip()
    assert code == 2 and len(line.splitlines()) == 1 and "best on 200 labelled images: " in line, line
    picks = line.split("best on 200 labelled images: ")[1].split(", ")
    rates = [int(p.rsplit("(", 1)[1].rstrip("%)")) for p in picks]
    assert len(picks) == 3 and rates == sorted(rates, reverse=True) and rates[0] > 90, picks
    assert not any(p.startswith("--scale 1 ") for p in picks), picks  # raw 0..255 and caffe's means score worst
    best = picks[0].rsplit(" (", 1)[0].split()
    err = io.StringIO()
    with redirect_stdout(io.StringIO()):
        code = run_cli("cnn-infer", lambda a: main(a, io.StringIO(), err), base + best, stderr=err)
    assert code == 0, err.getvalue()
