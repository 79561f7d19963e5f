"""tf.data input pipelines: prepared uint8 pixels -> shuffled, augmented, batched, prefetched.

Augmentation lives here only, never in the saved model: the model a user
deploys is exactly the network plus its normalisation layers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from ..artifact.card import InputSpec, Preprocess
from ..errors import UsageError


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation; every field off (0/False) means none."""

    flip: bool = False       # random horizontal flip
    rotation: float = 0.0    # up to +-degrees
    zoom: float = 0.0        # up to +-fraction
    shift: float = 0.0       # up to +-fraction of height/width
    shear: float = 0.0       # up to +-fraction (shear intensity)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation <= 180.0:
            raise UsageError(f"--rotation must be 0..180 degrees, found {self.rotation}")
        for name in ("zoom", "shift", "shear"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UsageError(f"--{name} must be a fraction in [0, 1), found {v}")

    @property
    def active(self) -> bool:
        return bool(self.flip or self.rotation or self.zoom or self.shift or self.shear)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def layers(self, seed: int) -> list[Any]:
        from .._lazy import require

        L = require("keras", "training").layers
        out: list[Any] = []
        if self.flip:
            out.append(L.RandomFlip("horizontal", seed=seed))
        if self.rotation:
            out.append(L.RandomRotation(self.rotation / 360.0, fill_mode="constant", seed=seed + 1))
        if self.zoom:
            out.append(L.RandomZoom(self.zoom, fill_mode="constant", seed=seed + 2))
        if self.shift:
            out.append(L.RandomTranslation(self.shift, self.shift, fill_mode="constant", seed=seed + 3))
        if self.shear:
            out.append(L.RandomShear(x_factor=self.shear, y_factor=self.shear, fill_mode="constant", seed=seed + 4))
        return out


def prepare_pixels(images: Sequence[np.ndarray], spec: InputSpec, pre: Preprocess) -> np.ndarray:
    """BGR uint8 images -> one NHWC uint8 array in the card's colour and size, through the
    runtime's own :func:`cnnedge.imaging.prepare.prepare_image` (so training sees
    exactly what deployment will feed)."""
    from ..imaging.prepare import prepare_image

    if not len(images):
        return np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
    return np.stack([prepare_image(im, spec, pre) for im in images]).astype(np.uint8, copy=False)


def make_dataset(pixels: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, augment: Augment | None = None) -> Any:
    """A batched, prefetched tf.data.Dataset of (float32 pixels 0..255, int labels)."""
    from .._lazy import require

    tf = require("tensorflow", "training")
    ds = tf.data.Dataset.from_tensor_slices((pixels, labels.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(min(len(labels), 20000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return _to_float_and_augment(tf, ds, augment, seed)


def stream_dataset(files: Sequence[Any], labels: np.ndarray, spec: InputSpec, pre: Preprocess, batch_size: int, *,
                   shuffle: bool = False, seed: int = 0, augment: Augment | None = None,
                   skipped: dict | None = None) -> Any:
    """Like :func:`make_dataset`, for datasets too large to hold: each epoch decodes the files with
    the runtime's reader and preprocessing; unreadable ones are skipped and added to ``skipped``."""
    from .._lazy import require
    from ..imaging.decode import read_image
    from ..imaging.errors import ImageError
    from ..imaging.prepare import prepare_image

    tf = require("tensorflow", "training")
    files = [str(f) for f in files]
    labels = np.asarray(labels, np.int32)
    epoch = [0]

    def gen() -> Any:
        order = np.arange(len(files))
        if shuffle:
            order = np.random.default_rng(seed + epoch[0]).permutation(len(files))
            epoch[0] += 1
        for i in order:
            try:
                img = prepare_image(read_image(files[i]), spec, pre)
            except ImageError as exc:
                if skipped is not None:
                    skipped[(files[i], exc.reason)] = None
                continue
            yield img, labels[i]

    sig = (tf.TensorSpec((spec.height, spec.width, spec.channels), tf.uint8), tf.TensorSpec((), tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).batch(batch_size)
    return _to_float_and_augment(tf, ds, augment, seed)


def _to_float_and_augment(tf: Any, ds: Any, augment: Augment | None, seed: int) -> Any:
    """The shared tail of both pipelines: uint8 batches to float pixels, augmentation
    (training only, never in the saved model), prefetch."""
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None and augment.active:
        aug_layers = augment.layers(seed)

        def _aug(x: Any, y: Any) -> tuple[Any, Any]:
            for layer in aug_layers:
                x = layer(x, training=True)
            return tf.clip_by_value(x, 0.0, 255.0), y

        ds = ds.map(_aug, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
