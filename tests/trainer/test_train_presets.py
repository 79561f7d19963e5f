"""Every preset builds, follows the model conventions and takes a few training steps on tiny data."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cnnedge.errors import UsageError
from cnnedge.trainer.presets import CAFFE_MEAN_BGR, PRESETS, create_model, get_preset, list_presets

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")

BIG = {"vgg16-transfer", "vgg19-transfer", "mobilenetv2-transfer", "imagenette-cnn", "food101-cnn", "cifar10-wide"}
ALL = sorted(PRESETS)
EXPECTED = {"mnist-dense", "mnist-cnn", "fashion-cnn", "cifar10-cnn", "cifar10-wide", "food101-cnn", "imagenette-cnn",
            "vgg16-transfer", "vgg19-transfer", "mobilenetv2-transfer", "digits-cnn"}


def test_registry_names_every_tutorial_network_with_a_one_line_summary() -> None:
    assert set(PRESETS) == EXPECTED
    lines = list_presets()
    assert len(lines) == len(EXPECTED)
    for name, p in PRESETS.items():
        assert "%" in p.summary, f"{name}: the summary names the tutorial's accuracy"
        assert any(line.startswith(name + " ") and p.summary in line for line in lines)


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean mnist-cnn"):
        get_preset("mnist_cnn")
    with pytest.raises(UsageError, match="unknown preset 'zzz'"):
        get_preset("zzz")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in ALL])
def test_preset_builds_and_trains_a_few_steps(name: str) -> None:
    rng = np.random.default_rng(0)
    shape, n_classes = (32, 32, 3), 3
    model = create_model(name, shape, n_classes, weights="none")
    assert tuple(model.input.shape[1:]) == shape
    assert model.input.dtype == "float32"
    assert tuple(model.output.shape[1:]) == (n_classes,)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Lambda" not in kinds
    assert model.layers[-1].get_config()["activation"] == "softmax"
    x = rng.uniform(0, 255, (8,) + shape).astype("float32")
    y = np.arange(8) % n_classes
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert changed > 0
    p = model.predict(x[:2], verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    if get_preset(name).transfer:  # the ImageNet base stays frozen; only the head trains
        import keras

        base = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        assert base and not base[0].trainable


@pytest.mark.parametrize("name,scale,mean,color", [
    ("digits-cnn", 1 / 255, (0.0,), "RGB"),
    pytest.param("vgg16-transfer", 1.0, CAFFE_MEAN_BGR, "BGR", marks=pytest.mark.slow),
    pytest.param("mobilenetv2-transfer", 1 / 127.5, (1.0,), "RGB", marks=pytest.mark.slow),
])
def test_in_graph_normalisation_matches_the_card_formula(name: str, scale: float, mean: tuple, color: str) -> None:
    p = get_preset(name)
    assert p.scale == pytest.approx(scale) and p.color == color
    assert p.mean == pytest.approx(mean) and p.std == (1.0,)
    model = create_model(name, (32, 32, 3), 2, weights="none")
    names = [layer.name for layer in model.layers]
    last = "mean_std" if "mean_std" in names else "scale"
    import keras

    sub = keras.Model(model.input, model.get_layer(last).output)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = (x * p.scale - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    np.testing.assert_allclose(sub.predict(x, verbose=0), want, rtol=1e-5, atol=1e-3)


def test_preset_models_reload_in_keras_safe_mode(tmp_path) -> None:
    from cnnedge.keras_io import load_keras_model

    model = create_model("mnist-cnn", (28, 28, 1), 4)
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_keras_model(path)
    x = np.random.default_rng(2).uniform(0, 255, (3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_bad_build_requests_are_usage_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="needs 3 colour channels"):
        create_model("vgg16-transfer", (32, 32, 1), 2, weights="none")
    with pytest.raises(UsageError, match="larger --img-size"):
        create_model("mobilenetv2-transfer", (16, 16, 3), 2, weights="none")
    with pytest.raises(UsageError, match="no such file"):
        create_model("vgg16-transfer", (32, 32, 3), 2, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(UsageError, match="--weights applies to the transfer presets"):
        create_model("digits-cnn", (32, 32, 3), 2, weights="imagenet")
    with pytest.raises(UsageError, match="larger --img-size"):
        create_model("fashion-cnn", (8, 8, 3), 2)
