"""cnn-export end to end on a small digits CNN: every artifact against Keras, cards, sidecars, Triton.

One model (tests/_small_cnn.py) is trained once for the session (a few seconds) and
exported once with FP16, INT8, TensorRT-RTX engines for sm89 (built on this CPU-only
machine) and a Triton repository (conftest.py's small_cnn_export); the tests check the
files independently of the report.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _small_cnn import SIZE
from _small_cnn import train_small_cnn as train_digits  # noqa: F401 - the name other branches import from here

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(small_cnn) -> Path:
    return small_cnn


@pytest.fixture(scope="module")
def exported(small_cnn_export):
    return small_cnn_export.report, small_cnn_export.out, small_cnn_export.repo


@pytest.fixture(scope="module")
def reference(trained):
    """Keras outputs and labels on the digits test split, computed here, not taken from the report."""
    from cnnedge.artifact.card import ModelCard
    from cnnedge.keras_io import load_keras_model
    from cnnedge.imaging.prepare import preprocess_batch
    from cnnedge.datasets import split_images

    card = ModelCard.load(trained.parent / "card.json")
    images, labels, _ = split_images(card.provenance.dataset_spec, "test")
    model = load_keras_model(trained)
    ref = np.asarray(model(preprocess_batch(images, card.input, card.preprocess), training=False))
    return images, labels, ref, card


def test_every_artifact_meets_default_thresholds(exported):
    report, out, _ = exported
    names = [Path(a.path).name for a in report.artifacts]
    assert names == ["model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx", "model.fp16.engine",
                     "model.int8.engine"]
    assert report.passed, report.failures
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["passed"] is True
    for a in on_disk["artifacts"]:
        assert Path(a["path"]).is_file()
        assert a["size_bytes"] == Path(a["path"]).stat().st_size
        for key in ("path", "precision", "max_abs_diff", "top1_agreement", "accuracy", "keras_accuracy", "passed"):
            assert key in a
    int8 = report.artifact("model.int8.onnx")
    assert int8.accuracy is not None and int8.keras_accuracy > 0.85
    assert int8.accuracy_drop == pytest.approx(int8.keras_accuracy - int8.accuracy)
    assert int8.accuracy_drop <= 0.01 and int8.top1_agreement >= 0.98
    assert report.cleanup["nodes_after"] < report.cleanup["nodes_before"]
    assert report.calibration["images"] == 300 and report.calibration["cache_hit"] is False
    assert (out / report.calibration["cache_file"]).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging files left behind"
    for name in ("model.fp16.engine", "model.int8.engine"):
        eng = report.artifact(name)
        if shutil.which("nvidia-smi") is None:  # no GPU: engines are built, never pretended to be run
            assert eng.passed is None and eng.top1_agreement is None and "not run here" in eng.note
        else:
            assert eng.passed is not False, eng.failures


@pytest.mark.parametrize("name,min_agree,max_diff", [("model.onnx", 1.0, 1e-4), ("model.fp16.onnx", 0.995, 5e-3),
                                                     ("model.int8.onnx", 0.98, None),
                                                     ("model.int8.trt.onnx", 0.98, None)])
def test_onnx_runs_in_onnxruntime_and_matches_keras(exported, reference, name, min_agree, max_diff):
    import onnxruntime as ort

    from cnnedge.export import read_card
    from cnnedge.imaging.prepare import preprocess_batch

    _, out, _ = exported
    images, labels, ref, _ = reference
    card = read_card(out / name)
    sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert sess.get_inputs()[0].shape[1:] == [SIZE, SIZE, 3]
    x = preprocess_batch(images, card.input, card.preprocess)
    assert x.dtype == np.uint8
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    agree = np.mean(got.argmax(1) == ref.argmax(1))
    assert agree >= min_agree
    if max_diff is not None:
        assert np.abs(got - ref).max() <= max_diff
    if name.startswith("model.int8."):
        drop = np.mean(ref.argmax(1) == labels) - np.mean(got.argmax(1) == labels)
        assert drop <= 0.01


def test_card_round_trips_through_onnx_and_sidecars(exported, trained):
    import onnx

    from cnnedge.artifact.card import ModelCard, sha256_file
    from cnnedge.export import read_card
    from cnnedge.artifact.sidecar import EngineSidecar

    _, out, _ = exported
    trained_card = ModelCard.load(trained.parent / "card.json")
    for name, precision in (("model.onnx", "fp32"), ("model.fp16.onnx", "fp16"), ("model.int8.onnx", "int8"),
                            ("model.int8.trt.onnx", "int8")):
        card = read_card(out / name)
        assert card.precision == precision and card.input.dtype == "uint8"
        assert card.classes == trained_card.classes and card.preprocess == trained_card.preprocess
        assert card.provenance.source_sha256 == sha256_file(trained)
        assert card.provenance.dataset_spec == trained_card.provenance.dataset_spec
        assert ModelCard.from_json(card.to_json()) == card
        assert sum(p.key == "cnnedge.card" for p in onnx.load(str(out / name)).metadata_props) == 1
    assert read_card(out / "model.int8.onnx").provenance.calibration["method"] == "entropy"
    for precision, source in (("fp16", "model.fp16.onnx"), ("int8", "model.int8.trt.onnx")):
        engine = out / f"model.{precision}.engine"
        side = EngineSidecar.load(engine)
        assert side.card == read_card(out / source)
        assert side.plan_sha256 == sha256_file(engine)
        assert side.source_onnx_sha256 == sha256_file(out / source)
        assert side.flavour == "tensorrt_rtx" and side.compute_capabilities == ("sm89",)
        assert side.profile == {"min": 1, "opt": 8, "max": 32}
        assert (side.input_name, side.output_name) == ("images", "probabilities")
        assert not engine.read_bytes().startswith(b"{")  # a plain plan, no header glued in front


def test_sidecar_mismatch_is_refused_before_loading(exported, tmp_path):
    import tensorrt_rtx

    from cnnedge.errors import ModelLoadError
    from cnnedge.artifact.sidecar import verify_engine

    _, out, _ = exported
    engine = tmp_path / "model.int8.engine"
    shutil.copy(out / "model.int8.engine", engine)
    shutil.copy(out / "model.int8.engine.json", tmp_path / "model.int8.engine.json")
    version = tensorrt_rtx.__version__
    assert verify_engine(engine, "tensorrt_rtx", version, "sm89").compute_capabilities == ("sm89",)
    with pytest.raises(ModelLoadError, match="this GPU is sm86"):
        verify_engine(engine, "tensorrt_rtx", version, "sm86")
    with pytest.raises(ModelLoadError, match="rebuild"):
        verify_engine(engine, "tensorrt_rtx", "1.0.0", "sm89")
    with pytest.raises(ModelLoadError, match="tensorrt_rtx, but this machine loads tensorrt"):
        verify_engine(engine, "tensorrt", version, "sm89")
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its sidecar"):
        verify_engine(engine, "tensorrt_rtx", version, "sm89")
    (tmp_path / "model.int8.engine.json").unlink()
    with pytest.raises(ModelLoadError, match="no sidecar"):
        verify_engine(engine, "tensorrt_rtx", version, "sm89")


def test_triton_configs_parse_with_tritons_schema(exported):
    """Triton's own backends' entries cannot load on these machines (tests/serve/test_triton_server.py loads the
    cnnedge ones): their configs are checked against Triton's schema and its model-configuration rules."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from cnnedge.artifact.card import sha256_file

    report, out, repo = exported
    models = sorted(p.name for p in repo.iterdir())
    ort = ["digits-test_fp16_onnxruntime", "digits-test_int8_onnxruntime", "digits-test_onnxruntime"]
    cnnedge = ["digits-test_cnnedge", "digits-test_fp16_cnnedge", "digits-test_fp16_engine_cnnedge",
               "digits-test_int8_cnnedge", "digits-test_int8_engine_cnnedge"]
    assert models == sorted(ort + cnnedge)  # RTX plans: no _tensorrt entry (Triton's backend loads full TensorRT's)
    for name in models:
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.name == name and cfg.max_batch_size == 32
        assert cfg.HasField("dynamic_batching") and max(cfg.dynamic_batching.preferred_batch_size) == 32
        assert all(1 <= b <= cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size)
        assert all(d > 0 for i in cfg.input if i.name != "IMAGE" for d in i.dims)
        assert cfg.output[0].data_type == model_config_pb2.TYPE_FP32 and list(cfg.output[0].dims) == [10]
        assert (repo / name / cfg.output[0].label_filename).read_text().split() == [str(i) for i in range(10)]
    for name in ort:
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.platform == "onnxruntime_onnx" and not cfg.backend
        assert cfg.input[0].name == "images" and cfg.input[0].data_type == model_config_pb2.TYPE_UINT8
        assert list(cfg.input[0].dims) == [SIZE, SIZE, 3] and cfg.input[0].format == model_config_pb2.ModelInput.FORMAT_NHWC
        assert cfg.output[0].name == "probabilities"
    src = {"digits-test_onnxruntime": "model.onnx", "digits-test_fp16_onnxruntime": "model.fp16.onnx",
           "digits-test_int8_onnxruntime": "model.int8.onnx"}
    for name, artifact in src.items():
        assert sha256_file(repo / name / "1" / "model.onnx") == sha256_file(out / artifact)
    for name in cnnedge:
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.backend == "python" and not cfg.platform
        assert [(i.name, i.data_type, list(i.dims), i.optional) for i in cfg.input] == [
            ("IMAGE", model_config_pb2.TYPE_UINT8, [-1], True), ("PIXELS", model_config_pb2.TYPE_UINT8, [SIZE, SIZE, 3], True)]
        assert [o.name for o in cfg.output] == ["PROBABILITIES", "CLASS", "SCORE"]
        assert cfg.instance_group[0].count == 2
        artifact = cfg.parameters["artifact"].string_value
        assert sha256_file(repo / name / "1" / artifact) == sha256_file(out / artifact)
        assert "cnnedge.serve.triton_python import TritonPythonModel" in (repo / name / "1" / "model.py").read_text()
        if artifact.endswith(".engine"):
            assert (repo / name / "1" / (artifact + ".json")).read_bytes() == (out / (artifact + ".json")).read_bytes()


def test_existing_outputs_are_kept_and_calibration_is_cached(exported, trained, tmp_path):
    from cnnedge.errors import FileExistsRefused
    from cnnedge.export import export

    import shutil

    _, shared_out, repo = exported
    with pytest.raises(FileExistsRefused, match="config.pbtxt exists"):  # refused before anything is written
        export(trained, tmp_path / "new", triton=repo)
    assert not (tmp_path / "new").exists()
    out = tmp_path / "out"  # a copy: the module's other tests read the shared export
    shutil.copytree(shared_out, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(FileExistsRefused, match="--force"):
        export(trained, out, int8=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    report = export(trained, out, int8=True, force=True)
    assert report.calibration["cache_hit"] is True
    assert report.passed
    # what the earlier export wrote and this one does not (its engines, FP16 file) went with the commit: a folder
    # never holds artifacts of two exports (issue 33)
    assert "model.fp16.engine" in before and not (out / "model.fp16.engine").exists()
    assert not (out / "model.fp16.engine.json").exists() and not (out / "model.fp16.onnx").exists()


def test_cli_float32_input_calibration_folder_and_threshold_failure(trained, tmp_path):
    import cv2
    import onnxruntime as ort

    from cnnedge.cli._run import run_cli
    from cnnedge.cli.export import main
    from cnnedge.export import read_card
    from cnnedge.datasets import make_spec, split_images

    calib = tmp_path / "calib"
    images, labels, classes = split_images(make_spec("digits", size=(SIZE, SIZE)), "val")
    for i, (im, y) in enumerate(zip(images, labels)):
        (calib / classes[y]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(calib / classes[y] / f"{i}.png"), im)
    (calib / "notes.txt").write_text("not an image")
    out, err = io.StringIO(), io.StringIO()
    code = run_cli("cnn-export", lambda a: main(a, stdout=out, stderr=err),
                   [str(trained), "--out", str(tmp_path / "f32"), "--input", "float32", "--int8", "--calib",
                    str(calib), "--calib-method", "minmax", "--engine", "--gpu", "sm80", "--batch", "2,4,8", "-q"],
                   stderr=err)
    assert code == 0, err.getvalue()
    from cnnedge.artifact.sidecar import EngineSidecar

    side = EngineSidecar.load(tmp_path / "f32" / "model.int8.engine")
    assert side.card.input.dtype == "float32" and side.card.precision == "int8"
    assert side.compute_capabilities == ("sm80",) and side.profile == {"min": 2, "opt": 4, "max": 8}
    assert "model.int8.onnx" in out.getvalue() and "ok" in out.getvalue()
    card = read_card(tmp_path / "f32" / "model.int8.onnx")
    assert card.input.dtype == "float32"
    assert card.provenance.calibration["source"] == str(calib)
    assert card.provenance.calibration["images"] == len(images) and card.provenance.calibration["skipped"] == 1
    sess = ort.InferenceSession(str(tmp_path / "f32" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"
    # a missed threshold: non-zero exit, the message names the artifact and what it missed
    err = io.StringIO()
    code = run_cli("cnn-export", lambda a: main(a, stdout=io.StringIO(), stderr=err),
                   [str(trained), "--out", str(tmp_path / "strict"), "--max-diff-fp32", "1e-12", "-q"], stderr=err)
    assert code == 1
    assert "model.onnx: max abs diff" in err.getvalue() and "> 1e-12" in err.getvalue()
    assert not (tmp_path / "strict" / "export_report.json").exists()  # a failed export puts nothing in place
    (failed,) = (tmp_path / "strict").glob("export-failed-*")
    assert json.loads((failed / "export_report.json").read_text())["passed"] is False
    assert str(failed) in err.getvalue()


def test_trainer_digits_cnn_preset_exports_within_thresholds(demo_trained, demo_copy):
    """The network `make demo` trains (BatchNorm, 32x32), briefly trained with the trainer's own API."""
    from cnnedge.export import export, read_card

    run, result = demo_copy, demo_trained.result
    report = export(run / "model.keras", fp16=True, int8=True, engine=True, gpu="sm86,sm89")
    assert report.passed, report.failures
    int8 = report.artifact("model.int8.onnx")
    assert int8.keras_accuracy == pytest.approx(result.test_accuracy, abs=1e-6)  # same test split as training
    assert report.verify["images"] == result.metrics["test_images"]
    assert report.artifact("model.onnx").max_abs_diff <= 1e-4
    assert read_card(run / "model.int8.onnx").name == "digits-cnn"
    from cnnedge.artifact.sidecar import EngineSidecar

    assert EngineSidecar.load(run / "model.int8.engine").compute_capabilities == ("sm86", "sm89")
