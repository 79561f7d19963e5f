"""Model-description values checked at the flag or argument; labels and sizes read from ONNX
metadata; a card or file that lies about the graph refused at load, in one line."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from cnnedge.artifact.card import ONNX_KEY, InputSpec, ModelCard, Preprocess, Provenance
from cnnedge.cli import infer as infer_cli
from cnnedge.cli._run import run_cli
from cnnedge.errors import CardError, ModelLoadError, UsageError
from cnnedge.runtime.card_resolution import CardMissingWarning, OutputKindWarning
from cnnedge.runtime.classifier import Classifier

onnx = pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")
from onnx import TensorProto, helper  # noqa: E402


def _onnx(path, *, dynamic: bool = False, n_out: int = 3, softmax: bool = True, gram: bool = False,
          metadata: dict | None = None) -> str:
    """A tiny real graph: x [N,3,4,4] (or [N,3,?,?]) -> flatten -> matmul (-> softmax).
    Only a 4x4 input fits the weights; ``gram`` returns x x^T, whose width is the batch."""
    shape = ["N", 3, "H", "W"] if dynamic else ["N", 3, 4, 4]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [48, n_out], rng.normal(size=(48, n_out)).ravel().tolist())
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1)]
    if gram:
        nodes += [helper.make_node("Transpose", ["f"], ["ft"], perm=[1, 0]), helper.make_node("MatMul", ["f", "ft"], ["y"])]
    elif softmax:
        nodes += [helper.make_node("MatMul", ["f", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["y"], axis=1)]
    else:
        nodes += [helper.make_node("MatMul", ["f", "w"], ["y"])]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return str(path)


def _card(h: int, w: int) -> str:
    return ModelCard(name="tiny", classes=["a", "b", "c"], input=InputSpec(h, w, 3, "NCHW", "float32", "RGB"),
                     preprocess=Preprocess(in_graph=False)).to_json()


def _clf(path, **kw) -> Classifier:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Classifier(path, "ort-cpu", threads=1, **kw)


def _cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    code = run_cli("cnn-infer", lambda a: infer_cli.main(a, io.StringIO(), err), argv, stderr=err)
    return code, err.getvalue()


@pytest.mark.parametrize("flags, message", [
    (["--std", "0"], "--std: must not contain 0 (a negative value inverts pixels), e.g. --std 0.229,0.224,0.225"),
    (["--std", "0.2,0,0.2"], "--std: must not contain 0"),
    (["--scale", "0"], "--scale: must not be 0 (a negative value inverts pixels), e.g. --scale 1/255"),
    (["--mean", "0.5,x"], "--mean: must be a number or a fraction such as 1/255, got 'x'"),
    (["--mean", "0.1,0.2"], "--mean: takes one value or one per channel (3), got 2"),
    (["--scale", "inf"], "--scale: must be finite"),
    (["--scale", "1" + "0" * 400 + "/1"], "--scale: must be a number or a fraction"),  # float() overflows
    (["--crop-pct", "1.5"], "--crop-pct: must be above 0 and at most 1"),
    (["--pad-value", "300"], "--pad-value: must be a pixel value from 0 to 255"),
    (["--resize", "pad", "--crop-pct", "0.9"], "--crop-pct applies to --resize stretch, center-crop and shorter"),
    (["--input-size", "0x5"], "--input-size: sides must be from 1 to 16384 pixels"),
])
def test_bad_description_flags_exit_2_naming_the_flag(tmp_path, flags, message):
    model = _onnx(tmp_path / "m.onnx")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    code, err = _cli([model, "--source", str(img), *flags])
    assert code == 2, err
    assert f"cnn-infer: error: {message}" in err and "Traceback" not in err


@pytest.mark.parametrize("kw, message", [
    (dict(mean="0.5,x"), "mean: must be a number"),
    (dict(std=0), "std: must not contain 0 (a negative value inverts pixels), e.g. std=(0.229, 0.224, 0.225)"),
    (dict(rgb="no"), "rgb: must be True or False, got str 'no'"),
    (dict(scale=True), "scale: must be a number, not a boolean"),
    (dict(resize="squash"), "resize: must be one of stretch, center-crop, letterbox, shorter, pad"),
    (dict(input_size=(4, 4, 4)), "input_size: must be a height and a width"),
])
def test_bad_description_arguments_raise_usage_error(tmp_path, kw, message):
    model = _onnx(tmp_path / "m.onnx")
    with pytest.raises(UsageError) as exc:
        _clf(model, **kw)
    assert message in str(exc.value)


def test_string_values_take_the_cli_form(tmp_path):
    model = _onnx(tmp_path / "m.onnx")
    with _clf(model, mean="0.5", std="0.25,0.25,0.25", scale="1/255", rgb=False) as c:
        assert c.card.preprocess.mean == (0.5,) and c.card.preprocess.std == (0.25,) * 3
        assert c.card.input.color == "BGR"


@pytest.mark.parametrize("key, value, names", [
    ("names", "{0: 'cat', 1: 'dog', 2: 'bird'}", ("cat", "dog", "bird")),
    ("labels", '["cat", "dog", "bird"]', ("cat", "dog", "bird")),
    ("classes", "cat\ndog\nbird\n", ("cat", "dog", "bird")),
])
def test_class_names_from_onnx_metadata(tmp_path, key, value, names):
    model = _onnx(tmp_path / "m.onnx", metadata={key: value})
    with _clf(model) as c:
        assert c.card.classes == names and c.labels_from == f"the file's metadata ({key!r})"
        assert c.predict(np.zeros((4, 4, 3), np.uint8)).label in names
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((4, 4, 3), np.uint8))
    code, err = _cli([model, "--source", str(img), "--assume-preprocessing"])
    assert code == 0 and f"class names from the file's metadata ({key!r})" in err


@pytest.mark.parametrize("value, message", [
    ("{0: 'cat', 1: 'dog'}", "names 2 classes, the model outputs 3"),
    ("{0: 'cat', 2: 'dog', 3: 'x'}", "keys are not the indices 0..n-1"),
    ("__import__('os').system('echo pwned')", "not a Python dict or list literal"),
    ("{0: 'a', 1: 'a', 2: 'b'}", "at least 2 distinct"),
])
def test_bad_metadata_names_are_one_line_errors(tmp_path, value, message):
    model = _onnx(tmp_path / "m.onnx", metadata={"names": value})
    with pytest.raises(ModelLoadError, match="metadata 'names'|names 2 classes") as exc:
        _clf(model)
    assert message in str(exc.value)
    _clf(model, labels=["x", "y", "z"]).close()  # --labels wins over the metadata


def test_ultralytics_imgsz_gives_a_dynamic_graph_its_size(tmp_path):
    model = _onnx(tmp_path / "m.onnx", dynamic=True, metadata={"imgsz": "[4, 4]"})
    with _clf(model) as c:
        assert c.input_size == (4, 4) and c.backend.size_from == "the file's imgsz metadata"


def test_a_card_whose_size_lies_about_the_graph_is_refused_at_load(tmp_path):
    model = _onnx(tmp_path / "m.onnx", dynamic=True, metadata={ONNX_KEY: _card(8, 8)})
    with pytest.raises(CardError, match=r"fails on a batch of 1 at 8x8 \(.*\); the input size 8x8 comes from "
                                        r"the card's input.height x input.width"):
        _clf(model)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((4, 4, 3), np.uint8))
    code, err = _cli([model, "--source", str(img)])
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    huge = _onnx(tmp_path / "h.onnx", dynamic=True, metadata={ONNX_KEY: _card(8192, 8192)})
    with pytest.raises(CardError, match="8192x8192 is 67,108,864 pixels per image, over the"):
        _clf(huge)
    good = _onnx(tmp_path / "g.onnx", dynamic=True, metadata={ONNX_KEY: _card(4, 4)})
    with _clf(good) as c:
        assert c.input_size == (4, 4)
    with pytest.raises(UsageError, match="the model card of .* says 4x4; drop --input-size"):
        _clf(good, input_size=(5, 5))


def test_a_batch_dependent_output_is_refused_at_load(tmp_path):
    model = _onnx(tmp_path / "m.onnx", gram=True)
    with pytest.raises(ModelLoadError, match=r"output width depends on the batch \(1 values per image at batch 1, 2 "
                                             r"at batch 2\)"):
        _clf(model)


def test_output_kind_said_wrong_warns_once(tmp_path):
    logits = _onnx(tmp_path / "l.onnx", softmax=False)
    with pytest.warns(OutputKindWarning, match="do not sum to 1: they look like logits") as rec:
        Classifier(logits, "ort-cpu", output="probabilities").close()
    assert sum(w.category is OutputKindWarning for w in rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutputKindWarning)
        warnings.simplefilter("ignore", UserWarning)
        _clf(logits, output="logits").close()
        with _clf(logits) as c:  # not said: detected, no warning
            assert c.card.output == "logits"


@pytest.mark.slow
def test_a_keras_file_without_its_card_needs_a_description(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(UsageError, match="no model card \\(card.json beside it\\).*--scale, --mean.*scale=, mean="):
        Classifier(path)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((4, 4, 3), np.uint8))
    code, err = _cli([str(path), "--source", str(img)])
    assert code == 2 and "--scale, --mean, --std, --resize and --labels" in err
    with pytest.warns(UserWarning, match="carries no model card"):
        c = Classifier(path, scale=1 / 255, labels=["a", "b", "c"])
    with c:
        assert c.predict(np.zeros((4, 4, 3), np.uint8)).label in ("a", "b", "c")


@pytest.mark.parametrize("size, message", [(8192, "8192x8192 is 67,108,864 pixels per image, over the"),
                                           (100000, "input.height must be between 1 and 16384")])
def test_cnn_bench_refuses_a_huge_card_size_in_one_line(tmp_path, size, message):
    import json

    from cnnedge.cli import bench as bench_cli

    card = json.loads(_card(4, 4))
    card["input"].update(height=size, width=size)
    model = _onnx(tmp_path / "m.onnx", dynamic=True, metadata={ONNX_KEY: json.dumps(card)})
    err = io.StringIO()
    code = run_cli("cnn-bench", lambda a: bench_cli.main(a, io.StringIO(), err),
                   [model, "--backends", "ort-cpu", "--batch", "1", "--iters", "2", "-q"], stderr=err)
    assert code == 1 and message in err.getvalue() and "Traceback" not in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


def test_help_shows_models_from_elsewhere():
    text = infer_cli.build_parser().format_help()
    assert "models from elsewhere" in text and "--resize shorter --crop-pct 0.875" in text
    assert "--input-size 48x192 --resize pad" in text


def _sourced_card(source: str) -> str:
    return ModelCard(name="tiny", classes=["a", "b", "c"], input=InputSpec(4, 4, 3, "NCHW", "float32", "RGB"),
                     preprocess=Preprocess(in_graph=False), provenance=Provenance(source_sha256=source)).to_json()


def test_the_card_is_read_from_an_onnx_file_without_onnx(tmp_path):
    from cnnedge.artifact.onesource import onnx_card_json

    card = _sourced_card("a" * 64)
    path = _onnx(tmp_path / "m.onnx", metadata={"author": "x" * 300, ONNX_KEY: card, "after": "y"})
    assert onnx_card_json(path) == card == {p.key: p.value for p in onnx.load(path).metadata_props}[ONNX_KEY]
    assert onnx_card_json(_onnx(tmp_path / "none.onnx", metadata={"author": "x"})) is None
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    (tmp_path / "cut.onnx").write_bytes(open(path, "rb").read()[:40])
    assert onnx_card_json(tmp_path / "junk.onnx") is None and onnx_card_json(tmp_path / "cut.onnx") is None


def test_a_folder_mixing_two_source_models_is_refused(tmp_path):
    """model.int8.onnx of one model beside model.onnx of another (copied in by hand, or left by an older
    export) would run with exit 0 and wrong answers: the runtime refuses it, naming the other file."""
    a, b = "a" * 64, "b" * 64
    _onnx(tmp_path / "model.onnx", metadata={ONNX_KEY: _sourced_card(a)})
    stale = _onnx(tmp_path / "model.int8.onnx", metadata={ONNX_KEY: _sourced_card(b)})
    _onnx(tmp_path / "model.fp16.onnx", metadata={"author": "no card: not compared"})
    with pytest.raises(ModelLoadError, match=r"model.int8.onnx: exported from source bbbbbbbbbbbb, but model.onnx "
                                             r"\(source aaaaaaaaaaaa\) beside it came from another model.*--force"):
        _clf(stale)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((4, 4, 3), np.uint8))
    code, err = _cli([str(tmp_path / "model.onnx"), "--source", str(img)])
    assert code == 1 and "model.int8.onnx (source bbbbbbbbbbbb)" in err and len(err.strip().splitlines()) == 1
    _onnx(tmp_path / "model.int8.onnx", metadata={ONNX_KEY: _sourced_card(a)})
    with _clf(stale) as c:
        assert c.card.classes == ("a", "b", "c")
    _onnx(tmp_path / "other.onnx", metadata={ONNX_KEY: _sourced_card(b)})  # another stem: another model's name
    with _clf(tmp_path / "model.onnx") as c:
        assert c.card.classes == ("a", "b", "c")


def test_negative_values_are_read_after_their_flag():
    """argparse reads ``-1/255`` or ``-0.5,0.2`` after a flag as another flag; the three signed flags take them."""
    from cnnedge.cli._args import model_description

    args = infer_cli.build_parser().parse_args(["m.onnx", "--source", "d", "--scale", "-1/255", "--mean",
                                                "-0.5,0.2,-.1", "--std", "-1"])
    assert (args.scale, args.mean, args.std) == ("-1/255", "-0.5,0.2,-.1", "-1")
    d = model_description(args)
    assert d["scale"] == pytest.approx(-1 / 255) and d["mean"] == (-0.5, 0.2, -0.1) and d["std"] == (-1.0,)
    with pytest.raises(SystemExit):  # only those three: a file name starting with '-' is still refused
        infer_cli.build_parser().parse_args(["m.onnx", "--source", "d", "--labels", "-1/255"])


def test_cnn_infer_refuses_to_guess_a_card_less_models_preprocessing(tmp_path):
    """A card-less model ran on guessed preprocessing with exit 0 (a chess-tile model said "empty" for every
    tile); cnn-infer asks for the flags or --assume-preprocessing, and says what it assumed. The API assumes, with
    the same warning, unless assume_preprocessing=False."""
    model = _onnx(tmp_path / "m.onnx")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((4, 4, 3), np.uint8))
    code, err = _cli([model, "--source", str(img)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "m.onnx carries no model card" in err and "--scale, --mean, --std" in err and "--assume-preprocessing" in err
    code, err = _cli([model, "--source", str(img), "--assume-preprocessing"])
    assert code == 0 and "these are assumed: scale 1/255, mean 0, std 1, RGB, resize stretch" in err, err
    code, err = _cli([model, "--source", str(img), "--scale", "1/255", "--std", "0.5", "--no-rgb"])
    assert code == 0 and "these are assumed: mean 0, resize stretch" in err, err
    with pytest.raises(UsageError, match="carries no model card, so nothing says how its pixels were scaled"):
        Classifier(model, "ort-cpu", assume_preprocessing=False)
    with pytest.warns(CardMissingWarning, match="assumed: scale 1/255, mean 0, std 1, RGB, resize stretch"):
        Classifier(model, "ort-cpu").close()
