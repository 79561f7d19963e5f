"""Each resize mode against a direct OpenCV computation of its steps, odd sizes included;
reduced-size JPEG decoding never decodes below what the mode then needs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cnnedge.artifact.card import InputSpec, Preprocess
from cnnedge.imaging.decode import decode_image, reduce_factor
from cnnedge.imaging.prepare import decode_for, decode_pixels, prepare_image
from cnnedge.imaging.resize import decode_need, resize

cv2 = pytest.importorskip("cv2")

SOURCES = [(37, 53), (53, 37), (100, 100), (9, 301), (480, 640)]
TARGETS = [(7, 11), (24, 24), (48, 192), (224, 224)]
FLAGS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
         "lanczos": cv2.INTER_LANCZOS4}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _src(photo: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)


def _flag(interp: str, src: tuple[int, int], dst: tuple[int, int]) -> int:
    if interp == "auto":
        return cv2.INTER_AREA if src[0] > dst[0] and src[1] > dst[1] else cv2.INTER_LINEAR
    return FLAGS[interp]


def _centre_crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    y, x = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[y:y + h, x:x + w]


def _reference(img: np.ndarray, H: int, W: int, mode: str, crop_pct: float, pad: int, interp: str) -> np.ndarray:
    """The steps written out with plain OpenCV calls (cv2.copyMakeBorder for the padding)."""
    h, w = img.shape[:2]
    th, tw = math.floor(H / crop_pct), math.floor(W / crop_pct)
    if mode == "stretch":
        size = (th, tw)
    elif mode == "center-crop":
        s = max(th / h, tw / w)
        size = (max(th, round(h * s)), max(tw, round(w * s)))
    elif mode == "shorter":  # torchvision Resize(int): short side = size, long side = int(size * long / short)
        short = min(th, tw)
        size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    else:
        s = min(H / h, W / w)
        size = (max(1, min(H, round(h * s))), max(1, min(W, round(w * s))))  # never 0 pixels
    if size != (h, w):
        img = cv2.resize(img, (size[1], size[0]), interpolation=_flag(interp, (h, w), size))
    if mode in ("letterbox", "pad"):
        dy, dx = H - img.shape[0], W - img.shape[1]
        top, left = (0, 0) if mode == "pad" else (dy // 2, dx // 2)
        return cv2.copyMakeBorder(img, top, dy - top, left, dx - left, cv2.BORDER_CONSTANT, value=(pad,) * 3)
    if img.shape[0] >= H and img.shape[1] >= W:
        return _centre_crop(img, H, W)
    # "shorter" into a non-square input whose long side the image does not fill: pad around the centre
    dy, dx = max(H - img.shape[0], 0), max(W - img.shape[1], 0)
    img = cv2.copyMakeBorder(img, dy // 2, dy - dy // 2, dx // 2, dx - dx // 2, cv2.BORDER_CONSTANT, value=(pad,) * 3)
    return _centre_crop(img, H, W)


@pytest.mark.parametrize("mode, crop_pct", [("stretch", 1.0), ("stretch", 0.875), ("center-crop", 1.0),
                                            ("center-crop", 0.9), ("shorter", 1.0), ("shorter", 0.875),
                                            ("letterbox", 1.0), ("pad", 1.0)])
@pytest.mark.parametrize("interp", ["auto", "area", "linear", "cubic", "lanczos"])
def test_each_mode_is_its_opencv_steps(photo, mode, crop_pct, interp):
    pad = 127 if mode in ("letterbox", "pad") else 0
    pre = Preprocess(resize=mode, crop_pct=crop_pct, pad_value=pad, interpolation=interp)
    for h, w in SOURCES:
        img = _src(photo, h, w)
        for H, W in TARGETS:
            got = resize(img, H, W, pre)
            want = _reference(img, H, W, mode, crop_pct, pad, interp)
            assert got.shape == (H, W, 3), (mode, h, w, H, W)
            assert np.array_equal(got, want), (mode, crop_pct, interp, h, w, H, W)


def test_pad_places_top_left_and_letterbox_centres(photo):
    img = _src(photo, 30, 90)  # 1:3 into 48x192 (1:4): height fills, 144 wide, 48 pad columns
    pad = resize(img, 48, 192, Preprocess(resize="pad", pad_value=200))
    box = resize(img, 48, 192, Preprocess(resize="letterbox", pad_value=200))
    assert (pad[:, 144:] == 200).all() and not (pad[:, :144] == 200).all(axis=(0, 2)).any()
    assert (box[:, :24] == 200).all() and (box[:, 168:] == 200).all()
    tall = resize(_src(photo, 90, 30), 48, 192, Preprocess(resize="pad", pad_value=5))
    assert (tall[:, 16:] == 5).all()  # 16 wide at the left, the rest padding


def test_prepare_image_converts_colour_and_gray_around_every_mode(photo):
    img = _src(photo, 37, 53)
    for mode in ("shorter", "pad"):
        pre = Preprocess(resize=mode, crop_pct=1.0, pad_value=9)
        rgb = prepare_image(img, InputSpec(24, 24, 3, "NHWC", "uint8", "RGB"), pre)
        assert np.array_equal(rgb, resize(img, 24, 24, pre)[:, :, ::-1])
        gray = prepare_image(img, InputSpec(24, 24, 1, "NHWC", "uint8", "GRAY"), pre)
        assert gray.shape == (24, 24, 1)
        assert np.array_equal(gray[:, :, 0], resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 24, 24, pre))


def test_crop_pct_applies_to_an_image_already_at_the_input_size(photo):
    img = _src(photo, 32, 32)
    pre = Preprocess(resize="stretch", crop_pct=0.5)
    got = resize(img, 32, 32, pre)
    want = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR)[16:48, 16:48]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode, crop_pct, expect_r, old_r", [
    ("stretch", 1.0, 2, 2),      # 448 -> 224: a 1/2 decode is exactly the input
    ("shorter", 0.875, 1, 2),    # needs 256 before the crop: 1/2 (224) would be enlarged again
    ("center-crop", 0.875, 1, 2),
    ("pad", 1.0, 2, 2),
])
def test_reduced_decoding_respects_what_the_mode_needs(photo, mode, crop_pct, expect_r, old_r):
    ok, buf = cv2.imencode(".jpg", _src(photo, 448, 448), [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = buf.tobytes()
    pre = Preprocess(resize=mode, crop_pct=crop_pct)
    r = reduce_factor(data, 224, 224, lambda h, w: decode_need(h, w, 224, 224, pre))
    assert r == expect_r and reduce_factor(data, 224, 224) == old_r
    img = decode_image(data, None, r)
    need = decode_need(448, 448, 224, 224, pre)
    assert img.shape[0] >= need[0] and img.shape[1] >= need[1]


def test_reduced_decoding_for_a_wide_photo_keeps_the_crop_side(photo):
    ok, buf = cv2.imencode(".jpg", _src(photo, 400, 1600))
    pre = Preprocess(resize="shorter", crop_pct=0.5)  # short side 128, then the centre 64x64
    r = reduce_factor(buf.tobytes(), 64, 64, lambda h, w: decode_need(h, w, 64, 64, pre))
    assert r == 2 and reduce_factor(buf.tobytes(), 64, 64) == 4  # 1/4 would give 100 rows, under 128


def test_cnn_train_checks_its_resize_flags_like_every_tool(tmp_path):
    import io

    from cnnedge.cli import train as train_cli
    from cnnedge.cli._run import run_cli

    err = io.StringIO()
    code = run_cli("cnn-train", train_cli.main, ["--preset", "digits-cnn", "--out", str(tmp_path / "r"),
                                                  "--resize", "pad", "--crop-pct", "0.9"], stderr=err)
    assert code == 2 and "--crop-pct applies to --resize stretch, center-crop and shorter" in err.getvalue()


@pytest.mark.slow
def test_a_trained_model_records_its_resize_mode_and_the_runtime_uses_it(tmp_path):
    from cnnedge.artifact.card import ModelCard
    from cnnedge.cli import train as train_cli
    from cnnedge.runtime.classifier import Classifier

    out = tmp_path / "run"
    assert train_cli.main(["--preset", "digits-cnn", "--out", str(out), "--epochs", "1", "--quiet",
                           "--resize", "shorter", "--crop-pct", "0.875", "--interpolation", "cubic"]) == 0
    card = ModelCard.load(out / "card.json")
    assert (card.preprocess.resize, card.preprocess.crop_pct, card.preprocess.interpolation) == \
        ("shorter", 0.875, "cubic")
    assert json_version(out / "card.json") == 2
    with Classifier(out / "model.keras") as clf:
        assert clf.card.preprocess == card.preprocess
        assert clf.predict(np.zeros((20, 30, 3), np.uint8)).label in card.classes


def json_version(path) -> int:
    import json

    return json.loads(path.read_text())["version"]


@pytest.mark.parametrize("color", ["RGB", "BGR", "GRAY"])
def test_the_pipelines_one_step_decode_gives_the_same_pixels_as_decode_then_prepare(photo, color):
    """decode_pixels decodes an RGB model's image in RGB (no channel swap after): every mode, crop, size and
    file kind must still give prepare_image(decode_for(...))'s pixels exactly."""
    bgra = cv2.cvtColor(_src(photo, 300, 200), cv2.COLOR_BGR2BGRA)
    files = [cv2.imencode(".jpg", _src(photo, 448, 300))[1].tobytes(),
             cv2.imencode(".jpg", cv2.cvtColor(_src(photo, 96, 72), cv2.COLOR_BGR2GRAY))[1].tobytes(),
             cv2.imencode(".png", bgra)[1].tobytes()]
    spec = {"RGB": (3, "RGB"), "BGR": (3, "BGR"), "GRAY": (1, "GRAY")}[color]
    checked = 0
    for data in files:
        for mode, crop in (("stretch", 1.0), ("stretch", 0.875), ("center-crop", 0.875), ("shorter", 0.875),
                           ("letterbox", 1.0), ("pad", 1.0)):
            for h, w in ((32, 32), (224, 160)):
                inp = InputSpec(h, w, spec[0], "NHWC", "uint8", spec[1])
                pre = Preprocess(resize=mode, crop_pct=crop, pad_value=114)
                for reduce in (True, False):
                    want = prepare_image(decode_for(data, None, inp, pre, reduce), inp, pre)
                    got = decode_pixels(data, None, inp, pre, reduce)
                    assert got.shape == want.shape == (h, w, spec[0])
                    assert np.array_equal(got, want), (mode, crop, h, w, reduce)
                    checked += 1
    assert checked == 3 * 6 * 2 * 2
