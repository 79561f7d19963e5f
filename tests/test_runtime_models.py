"""Test models for the runtime tests, built once per test session (no tests here).

A tiny Keras CNN trained a few epochs on scikit-learn's digits (upscaled to
32x32 RGB with OpenCV), its ONNX export with the card embedded (uint8 NHWC,
normalisation in the graph), a third-party style NCHW float ONNX with no card
(probabilities and logits), and an onnx.helper graph with a fixed batch of 1.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

SIZE = 32


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as 32x32 BGR uint8 images (OpenCV order) and their labels."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = []
    for im in d.images:
        g = cv2.resize((im * (255.0 / 16.0)).astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
        bgr[:, :, 0] = bgr[:, :, 0] // 2  # a tint, so colour order matters a little
        imgs.append(bgr)
    return np.stack(imgs), d.target.astype(np.int64)


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = digits_images()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    tr, te = order[:1500], order[1500:]
    return x[tr], y[tr], x[te], y[te]


@functools.lru_cache(maxsize=None)
def models() -> dict[str, Path]:
    """Build every test model once; returns name -> path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import cv2
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from cnnedge.artifact.card import ONNX_KEY, InputSpec, ModelCard, Preprocess

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        pass  # another test in this process started TensorFlow first; its thread setting stays
    out = Path(tempfile.mkdtemp(prefix="cnnedge-runtime-test-"))
    atexit.register(shutil.rmtree, out, True)
    xtr, ytr, _, _ = split()
    rgb = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in xtr]).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3), name="image"),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
        keras.layers.Activation("softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(rgb, ytr, epochs=6, batch_size=64, verbose=0)
    run = out / "run"
    run.mkdir()
    model.save(run / "model.keras")
    card = ModelCard(name="digits-test", classes=tuple(str(i) for i in range(10)),
                     input=InputSpec(SIZE, SIZE, 3, "NHWC", "float32", "RGB"),
                     preprocess=Preprocess(resize="stretch", in_graph=True), output="probabilities")
    card.save(run / "card.json")

    logits_model = keras.Model(model.inputs, model.layers[-2].output)

    def export(fn, spec, path: Path, card_json: str | None) -> Path:
        proto, _ = tf2onnx.convert.from_function(tf.function(fn), input_signature=[spec], opset=17)
        if card_json is not None:
            proto.metadata_props.add(key=ONNX_KEY, value=card_json)
        onnx.save(proto, str(path))
        return path

    paths = {"keras": run / "model.keras"}
    onnx_card = card.replace(input={"dtype": "uint8"})
    paths["onnx"] = export(lambda x: model(tf.cast(x, tf.float32), training=False),
                           tf.TensorSpec((None, SIZE, SIZE, 3), tf.uint8, name="image"),
                           run / "model.onnx", onnx_card.to_json())
    # third-party style: NCHW float in 0..1 (scale 1/255), RGB, no card
    paths["nchw"] = export(lambda x: model(tf.transpose(x, [0, 2, 3, 1]) * 255.0, training=False),
                           tf.TensorSpec((None, 3, SIZE, SIZE), tf.float32, name="input"),
                           out / "third_party_nchw.onnx", None)
    paths["nchw_logits"] = export(lambda x: logits_model(tf.transpose(x, [0, 2, 3, 1]) * 255.0, training=False),
                                  tf.TensorSpec((None, 3, SIZE, SIZE), tf.float32, name="input"),
                                  out / "third_party_logits.onnx", None)
    paths["helper"] = helper_model(out / "helper_fixed1.onnx")
    return paths


def helper_model(path: Path) -> Path:
    """An onnx.helper graph: fixed batch 1, NCHW, 1 channel 8x8 float, 4 logits out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.normal(size=(64, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w", "b"], ["y"])],
        "helper", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def write_images(folder: Path, n: int = 20, offset: int = 0) -> tuple[list[Path], list[int]]:
    """Digits test images written as PNG files into class-named sub-folders."""
    import cv2

    _, _, xte, yte = split()
    paths, labels = [], []
    for i in range(offset, offset + n):
        d = folder / str(int(yte[i]))
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"img{i:04d}.png"
        cv2.imwrite(str(p), xte[i])
        paths.append(p)
        labels.append(int(yte[i]))
    return paths, labels
