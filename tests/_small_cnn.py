"""The small digits CNN the export tests convert: 16x16 inputs, Rescaling inside, softmax out, with its card.

Plain Keras (not a trainer preset), so that cnn-export is tested on a model the trainer did not make; trained once
per session by conftest.py's ``small_cnn`` fixture."""
from __future__ import annotations

import os
from pathlib import Path

SIZE = 16


def train_small_cnn(run: Path) -> Path:
    """Train the CNN on the embedded digits (12 epochs, seed 0) and write run/model.keras and run/card.json."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from cnnedge.artifact.card import InputSpec, ModelCard, Preprocess, Provenance
    from cnnedge.imaging.prepare import preprocess_batch
    from cnnedge.datasets import make_spec, split_images

    spec = make_spec("digits", size=(SIZE, SIZE))
    card = ModelCard(name="digits-test", classes=tuple(str(i) for i in range(10)),
                     input=InputSpec(SIZE, SIZE, 3, "NHWC", "float32", "RGB"), preprocess=Preprocess(scale=1 / 255),
                     provenance=Provenance(dataset="digits", dataset_spec=spec, versions={"keras": keras.__version__}))
    images, labels, _ = split_images(spec, "train")
    x = preprocess_batch(images, card.input, card.preprocess)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=12, batch_size=32, verbose=0)
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    card.save(run / "card.json")
    return run / "model.keras"
