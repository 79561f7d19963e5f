"""Decoding images from strangers: limits, damage, reduced-size decode, colour conversion."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from cnnedge.artifact.card import InputSpec, Preprocess
from cnnedge.imaging.color import to_color
from cnnedge.imaging.decode import decode_image, read_image, reduce_factor
from cnnedge.imaging.errors import ImageError
from cnnedge.imaging.headers import image_size
from cnnedge.imaging.opencv import MAX_PIXELS
from cnnedge.imaging.prepare import preprocess_batch


def _photo() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)  # 512x512 real photograph


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def test_image_size_from_headers_matches_decoded_size():
    img = _photo()[:300, :400]
    assert image_size(_jpeg(img)) == (400, 300)
    ok, png = cv2.imencode(".png", img)
    assert image_size(png.tobytes()) == (400, 300)
    assert image_size(b"not an image") is None


def test_reduce_factor_keeps_image_at_least_model_size():
    data = _jpeg(_photo())  # 512x512
    assert reduce_factor(data, 32, 32) == 8
    assert reduce_factor(data, 100, 100) == 4
    assert reduce_factor(data, 300, 300) == 1
    ok, png = cv2.imencode(".png", _photo())
    assert reduce_factor(png.tobytes(), 32, 32) == 1  # only JPEG decodes cheaper at reduced size
    small = decode_image(data, reduce=8)
    assert small.shape == (64, 64, 3)


def test_truncated_jpeg_is_flagged_not_half_decoded():
    data = _jpeg(_photo())
    cut = data[: len(data) // 2]
    # OpenCV 4.x half-decodes this (grey bottom half); the header check flags it whatever OpenCV does.
    with pytest.raises(ImageError, match="truncated"):
        decode_image(cut, "half.jpg")


def test_empty_garbage_and_missing_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def _png_bomb(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * 3)
    idat = zlib.compress(row * 16, 9)  # only 16 rows of data: tiny file, huge header
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_pixel_bomb_is_a_skipped_file_not_an_allocation(tmp_path):
    data = _png_bomb(20000, 20000)  # 400 Mpixel header, a few KB file
    assert len(data) < 100_000 and 20000 * 20000 > MAX_PIXELS
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    with pytest.raises(ImageError, match="pixel"):
        read_image(p)


def test_gray_and_bgra_frames_are_converted():
    spec, pre = InputSpec(16, 16, 3, "NHWC", "uint8", "RGB"), Preprocess()
    bgr = _photo()
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    batch = preprocess_batch([bgr, gray, gray[:, :, None], bgra], spec, pre)
    assert batch.shape == (4, 16, 16, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], batch[3])  # BGRA == BGR after conversion
    np.testing.assert_array_equal(batch[1], batch[2])
    assert to_color(bgr, "RGB")[0, 0].tolist() == bgr[0, 0, ::-1].tolist()


def test_float_nchw_preprocessing_matches_numpy():
    spec = InputSpec(8, 8, 3, "NCHW", "float32", "RGB")
    pre = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.25,), in_graph=False)
    img = _photo()
    x = preprocess_batch([img], spec, pre)
    ref = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (8, 8), interpolation=cv2.INTER_AREA)
    ref = ((ref.astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)[None]
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_valid_files_with_trailing_bytes_are_not_truncated(tmp_path):
    """A phone "motion photo" JPEG carries a video after its EOI; padding after EOI or
    IEND is harmless too: the structure walk finds the end marker where it is."""
    img = _photo()[:200, :240]
    jpeg = _jpeg(img)
    # an EXIF-like APP1 segment holding a thumbnail JPEG (with its own FFD9) after SOI
    thumb = _jpeg(cv2.resize(img, (32, 32)))
    app1 = b"Exif\x00\x00" + thumb
    with_thumb = jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]
    motion = jpeg + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # an MP4 after the image
    for data in (jpeg + bytes(100), motion, with_thumb):
        assert decode_image(data, "x.jpg").shape == (200, 240, 3)
    ok, png = cv2.imencode(".png", img)
    assert decode_image(png.tobytes() + bytes(40), "x.png").shape == (200, 240, 3)
    # still flagged: cut inside the scan (the thumbnail's FFD9 in APP1 must not count), cut inside PNG chunks
    with pytest.raises(ImageError, match="truncated"):
        decode_image(with_thumb[: len(with_thumb) - 200], "cut.jpg")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(png.tobytes()[:-6], "cut.png")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(png.tobytes()[: len(png) // 2] + bytes(40), "cut.png")
