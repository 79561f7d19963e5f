"""The Classifier API: cards and third-party models, predict paths, threads, parity across artifacts."""
from __future__ import annotations

import sys
import threading
import warnings

import cv2
import numpy as np
import pytest

from cnnedge.errors import UsageError
from cnnedge.runtime.card_resolution import CardMissingWarning
from cnnedge.runtime.classifier import Classifier, Prediction

from test_runtime_models import helper_model, models, split, write_images  # noqa: E402

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def data():
    _, _, x, y = split()
    return x, y


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_third_party_nchw_without_card_matches_direct_session(data):
    x, _ = data
    path = models()["nchw"]
    with pytest.warns(CardMissingWarning, match="no model card"):
        clf = Classifier(path, scale=1 / 255)
    with clf:
        spec = clf.card.input
        assert (spec.layout, spec.height, spec.width, spec.channels, spec.color) == ("NCHW", 32, 32, 3, "RGB")
        assert clf.card.output == "probabilities" and clf.card.classes[:3] == ("0", "1", "2")
        # what a user would write by hand around a bare session
        rgb = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in x[:50]]).astype(np.float32) / 255.0
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {sess.get_inputs()[0].name: rgb.transpose(0, 3, 1, 2).copy()})[0]
        preds = clf.predict_batch(list(x[:50]))
        np.testing.assert_allclose([p.score for p in preds], ref.max(1), rtol=1e-5, atol=1e-6)
        assert [p.index for p in preds] == ref.argmax(1).tolist()
        np.testing.assert_allclose(clf.infer(rgb.transpose(0, 3, 1, 2).copy()), ref, atol=1e-6)


def test_logits_get_softmax_probabilities_do_not(data):
    x, _ = data
    with pytest.warns(CardMissingWarning):
        logit_clf = Classifier(models()["nchw_logits"], scale=1 / 255)
    with pytest.warns(CardMissingWarning):
        prob_clf = Classifier(models()["nchw"], scale=1 / 255)
    assert logit_clf.card.output == "logits" and prob_clf.card.output == "probabilities"
    a = logit_clf.predict_batch(list(x[:20]), topk=10)
    b = prob_clf.predict_batch(list(x[:20]), topk=10)
    for p, q in zip(a, b):
        assert p.index == q.index and p.score == pytest.approx(q.score, abs=1e-5)
        assert sum(s for _, s in p.topk) == pytest.approx(1.0, abs=1e-5)
    one = logit_clf.predict(x[0], topk=10)  # the single-image path computes the softmax in Python
    assert one.index == a[0].index and [s for _, s in one.topk] == pytest.approx([s for _, s in a[0].topk], abs=1e-6)
    # with a card that says probabilities, no softmax is applied on top
    card_clf = Classifier(models()["onnx"])
    raw = card_clf.infer(x[:5, :, :, ::-1].copy())
    assert [p.score for p in card_clf.predict_batch(list(x[:5]))] == pytest.approx(raw.max(1).tolist(), abs=1e-6)


def test_fixed_batch_gray_model_with_labels_file_and_arguments(tmp_path):
    path = helper_model(tmp_path / "gray.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\nfish\n")
    with pytest.warns(CardMissingWarning):
        clf = Classifier(path, labels=labels, scale=1 / 255, mean=0.5, std=0.25, output="logits", topk=2)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 24, 3), np.uint8) for _ in range(3)]
    preds = clf.predict_batch(frames)  # 3 images through a fixed batch of 1
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for f, p in zip(frames, preds):
        g = cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (8, 8), interpolation=cv2.INTER_AREA)
        z = sess.run(None, {"x": ((g.astype(np.float32) / 255 - 0.5) / 0.25)[None, None]})[0]
        assert p.label == ["cat", "dog", "bird", "fish"][int(z.argmax())] and len(p.topk) == 2
        assert p.score == pytest.approx(float(_softmax(z).max()), abs=1e-5)
    with pytest.raises(UsageError, match="3 names given, the model outputs 4"):
        with pytest.warns(CardMissingWarning):
            Classifier(path, labels=["a", "b", "c"])


def test_card_fixes_preprocessing_and_labels_must_fit():
    with pytest.raises(UsageError, match="carries a model card.*drop --scale \\(scale=\\)"):
        Classifier(models()["onnx"], scale=1 / 255)
    with pytest.raises(UsageError, match="card has 10 classes"):
        Classifier(models()["onnx"], labels=["a", "b"])
    with pytest.raises(UsageError, match="topk"):
        Classifier(models()["onnx"], topk=0)
    with pytest.raises(ValueError):
        Prediction("x", 0.5, -1)


def test_predict_paths_arrays_gray_bgra_and_infer(tmp_path, data):
    x, y = data
    with Classifier(models()["onnx"], topk=3) as clf:
        assert clf.backend_name == "ort-cpu" and clf.card.name == "digits-test"
        p = clf.predict(x[0])
        assert isinstance(p, Prediction) and len(p.topk) == 3 and p.topk[0] == (p.label, p.score)
        png = tmp_path / "d.png"
        cv2.imwrite(str(png), x[0])
        assert clf.predict(png) == p
        assert clf.predict(str(png)).index == p.index
        gray = cv2.cvtColor(x[1], cv2.COLOR_BGR2GRAY)
        assert clf.predict(gray) == clf.predict(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        assert clf.predict(cv2.cvtColor(x[2], cv2.COLOR_BGR2BGRA)) == clf.predict(x[2])
        for i in range(5, 15):  # the at-size fast path and the batch path give the same answer
            assert clf.predict(x[i]) == clf.predict_batch([x[i]])[0]
        big = cv2.resize(x[3], (97, 61))  # any size is resized, not refused
        assert clf.predict(big).label in clf.card.classes
        with pytest.raises(UsageError, match="uint8"):
            clf.predict(x[0].astype(np.float32))
        preds = clf.predict_batch(list(x[:100]))
        acc = np.mean([q.index == t for q, t in zip(preds, y[:100])])
        assert acc > 0.8
        assert clf.predict_batch([]) == []
    with pytest.raises(UsageError, match="closed"):
        clf.predict(x[0])


def test_predict_is_thread_safe(data):
    x, _ = data
    for model in ("onnx", "keras"):
        with Classifier(models()[model]) as clf:
            expected = [clf.predict(im).index for im in x[:40]]
            got: dict[int, int] = {}
            errors = []

            def work(lo: int) -> None:
                try:
                    for i in range(lo, 40, 4):
                        got[i] = clf.predict(x[i]).index
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)
            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors and [got[i] for i in range(40)] == expected


def test_predict_per_thread_buffers_match_the_batch_path(data):
    """predict() on a frame at the model's size writes into a buffer bound to the session, one
    per thread: under rapid thread switching every thread still gets its own image's scores."""
    x, _ = data
    with Classifier(models()["onnx"]) as clf:
        ref = clf.predict_batch(list(x[:200]))
        got: dict[int, Prediction] = {}
        errors: list[BaseException] = []

        together = threading.Barrier(4)  # all four alive at once: thread ids are not reused

        def work(lo: int) -> None:
            try:
                together.wait(timeout=60)
                for i in range(lo, 200, 4):
                    got[i] = clf.predict(x[i])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(old)
        assert not errors, errors
        for i in range(200):
            assert [lab for lab, _ in got[i].topk] == [lab for lab, _ in ref[i].topk]
            np.testing.assert_allclose([s for _, s in got[i].topk], [s for _, s in ref[i].topk], atol=1e-6)
        assert len(clf._slots) >= 4  # the per-thread path was the one taken


def test_keras_and_onnx_agree(data):
    x, _ = data
    with Classifier(models()["keras"]) as k, Classifier(models()["onnx"]) as o:
        assert k.backend_name == "keras" and k.backend.input_spec.dtype == "float32"
        pk, po = k.predict_batch(list(x)), o.predict_batch(list(x))
    assert [p.index for p in pk] == [p.index for p in po]
    assert max(abs(a.score - b.score) for a, b in zip(pk, po)) < 1e-4


def test_stream_yields_each_file_once_in_order(tmp_path):
    paths, labels = write_images(tmp_path / "imgs", 30)
    with Classifier(models()["onnx"]) as clf:
        results = list(clf.stream(sorted(paths), batch=4))
        direct = clf.predict_batch(sorted(paths))
    assert [r.path for r in results] == [str(p) for p in sorted(paths)]
    assert [r.prediction.index for r in results] == [p.index for p in direct]
    assert all(r.latency_ms is not None and r.latency_ms >= 0 for r in results)


def test_reduced_jpeg_decode_on_a_photograph(tmp_path):
    skdata = pytest.importorskip("skimage.data")
    photo = cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR)  # 451x300 real photograph
    big = cv2.resize(photo, (photo.shape[1] * 2, photo.shape[0] * 2))
    jpg = tmp_path / "cat.jpg"
    cv2.imwrite(str(jpg), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    with Classifier(models()["onnx"]) as fast, Classifier(models()["onnx"], reduce_decode=False) as full:
        assert fast.load_image(jpg).shape[0] < full.load_image(jpg).shape[0]
        a, b = fast.prepare(fast.load_image(jpg)), full.prepare(full.load_image(jpg))
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4  # same picture at the model's 32x32
        assert fast.predict(jpg).index == full.predict(jpg).index


@pytest.mark.slow
def test_keras_onnx_fp16_int8_agree_on_top1(tmp_path, data):
    """The exporter's FP16 and INT8 files through the Classifier agree with Keras on top-1."""
    import shutil

    from cnnedge.export import export

    x, y = data
    run = tmp_path / "run"
    shutil.copytree(models()["keras"].parent, run, ignore=shutil.ignore_patterns("*.onnx"))
    calib = tmp_path / "calib"
    xtr, ytr, _, _ = split()
    for i in range(200):
        (calib / str(ytr[i])).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(calib / str(ytr[i]) / f"{i}.png"), xtr[i])
    export(run / "model.keras", run / "export", fp16=True, int8=True, calib=str(calib), calib_size=200,
           verify=str(calib), verify_size=50, check=False)
    files = {"keras": run / "model.keras"}
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        found = list((run / "export").rglob(name))
        assert found, f"export wrote no {name}"
        files[name] = found[0]
    tops = {}
    for name, f in files.items():
        with Classifier(f) as clf:
            tops[name] = np.array([p.index for p in clf.predict_batch(list(x))])
    ref = tops.pop("keras")
    for name, t in tops.items():
        agree = float(np.mean(t == ref))
        assert agree >= (0.98 if "int8" in name else 0.995), f"{name}: top-1 agreement {agree:.3f} with Keras"


def test_empty_image_is_a_usage_error(tmp_path):
    with pytest.warns(CardMissingWarning):
        clf = Classifier(helper_model(tmp_path / "m.onnx"))
    with clf:
        for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.uint8)):
            with pytest.raises(UsageError, match="empty image"):
                clf.predict(empty)
            with pytest.raises(UsageError, match="empty image"):
                clf.predict_batch([np.zeros((8, 8, 3), np.uint8), empty])


@pytest.mark.parametrize("model", ["helper", "onnx"])  # the general path; the per-thread bound buffers
def test_close_waits_for_running_predict_and_later_calls_say_closed(tmp_path, model):
    """close() from one thread while another loops predict(): the running call finishes
    (nothing is freed under it), later calls raise the clear 'closed' error."""
    path = helper_model(tmp_path / "m.onnx") if model == "helper" else models()["onnx"]
    size = 8 if model == "helper" else 32
    frame = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so close() lands inside predict()
    try:
        for _ in range(20):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CardMissingWarning)  # the helper model has no card
                clf = Classifier(path)
            bad: list[BaseException] = []
            started = threading.Event()

            def loop() -> None:
                started.set()
                while True:
                    try:
                        clf.predict(frame)
                    except UsageError as exc:
                        if "closed" not in str(exc):
                            bad.append(exc)
                        return
                    except BaseException as exc:  # noqa: BLE001 - what the race used to raise
                        bad.append(exc)
                        return
            t = threading.Thread(target=loop)
            t.start()
            started.wait()
            clf.close()
            t.join(5)
            assert not t.is_alive() and not bad, bad
            with pytest.raises(UsageError, match="closed"):
                clf.predict(frame)
            with pytest.raises(UsageError, match="closed"):
                clf.backend.infer(np.zeros((1,) + clf.backend.input_spec.shape[1:], clf.backend.input_spec.dtype))
    finally:
        sys.setswitchinterval(old)
