"""The parity gate checks what ships: artifacts run through the runtime (load_backend + the Classifier's
preprocessing from the card they carry), against the source model fed the way it expects.

A digits CNN is trained here on pixels normalised outside the model ((x/255 - 0.5) / 0.25, no Rescaling
layer: a model "from elsewhere"). With a card saying so (in_graph false) the export folds the
normalisation into the graph and passes; with a card that claims the model normalises itself, the
gate fails and names the field.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SIZE = 16
MEAN, STD = 0.5, 0.25


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from cnnedge.card import InputSpec, ModelCard, Preprocess, Provenance
    from cnnedge.runtime.preprocess import normalize, preprocess_batch
    from cnnedge.trainer.data import make_spec, split_images

    spec = make_spec("digits", size=(SIZE, SIZE))
    pre = Preprocess(scale=1 / 255, mean=(MEAN,), std=(STD,), in_graph=False, name="outside")
    card = ModelCard(name="outside", classes=tuple(str(i) for i in range(10)),
                     input=InputSpec(SIZE, SIZE, 3, "NHWC", "float32", "RGB"), preprocess=pre,
                     provenance=Provenance(dataset="digits", dataset_spec=spec))
    images, labels, _ = split_images(spec, "train")
    x = normalize(preprocess_batch(images, card.input, card.preprocess.__class__(in_graph=True)), pre)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=8, batch_size=32, verbose=0)
    run = tmp_path_factory.mktemp("outside") / "run"
    run.mkdir()
    model.save(run / "model.keras")
    card.save(run / "card.json")
    return run / "model.keras"


def test_normalisation_outside_the_model_is_folded_and_passes(outside: Path) -> None:
    from cnnedge.export import export
    from cnnedge.runtime import Classifier
    from cnnedge.trainer.data import split_images

    report = export(outside, outside.parent / "out", verify="digits", verify_size=300)
    assert report.passed, report.failures
    assert report.card_check is not None and report.card_check["failures"] == []
    fp32 = report.artifact("model.onnx")
    assert fp32.top1_agreement == 1.0 and fp32.accuracy is not None and fp32.accuracy > 0.85
    with Classifier(outside.parent / "out" / "model.onnx") as clf:  # the file takes plain uint8 pixels
        assert clf.card.input.dtype == "uint8" and clf.card.preprocess.in_graph
        from cnnedge.card import ModelCard

        images, labels, _ = split_images(ModelCard.load(outside.parent / "card.json").provenance.dataset_spec, "test")
        got = np.array([p.index for p in clf.predict_batch(images)])
    assert np.mean(got == labels) > 0.85


def test_card_claiming_in_graph_normalisation_fails_the_gate_and_says_so(outside: Path, tmp_path: Path) -> None:
    import shutil

    from cnnedge.card import ModelCard
    from cnnedge.export import ParityFailure, export

    run = tmp_path / "run"
    shutil.copytree(outside.parent, run, ignore=shutil.ignore_patterns("out"))
    card = ModelCard.load(run / "card.json")
    card.replace(preprocess={"in_graph": True}).save(run / "card.json")  # the lie: "the model normalises itself"
    with pytest.raises(ParityFailure) as info:
        export(run / "model.keras", run / "out", verify="digits", verify_size=300)
    msg = str(info.value)
    assert "preprocess.in_graph" in msg and "more accurate" in msg, msg
    assert not info.value.report.passed


def test_wrong_colour_order_on_a_colour_sensitive_model_fails_the_gate(tmp_path: Path) -> None:
    """Red-or-blue squares: the colour order decides the class, so a card with BGR for an RGB model is caught."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import cv2
    import keras

    from cnnedge.card import InputSpec, ModelCard, Preprocess
    from cnnedge.export import ParityFailure, export

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    xs, ys = [], []
    for k, name in enumerate(("red", "blue")):
        (data / name).mkdir(parents=True)
        for i in range(60):
            img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            img[:, :, 2 if name == "red" else 0] += 150  # OpenCV order: BGR
            cv2.imwrite(str(data / name / f"{i}.png"), img)
            xs.append(img[:, :, ::-1].astype(np.float32))  # the model is trained on RGB
            ys.append(k)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(np.stack(xs), np.array(ys), epochs=30, batch_size=16, verbose=0)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    ModelCard(name="colours", classes=("red", "blue"), input=InputSpec(SIZE, SIZE, 3, "NHWC", "float32", "BGR"),
              preprocess=Preprocess(scale=1 / 255)).save(run / "card.json")
    with pytest.raises(ParityFailure) as info:
        export(run / "model.keras", run / "out", verify=str(data))
    assert "input.color BGR" in str(info.value) and "fed RGB" in str(info.value), str(info.value)
