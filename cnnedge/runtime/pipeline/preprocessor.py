"""The card's preprocessing as one picklable object: decode, resize and colour, then the tensor the model takes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...artifact.card import InputSpec, ModelCard, Preprocess
from ...errors import UsageError
from ...imaging.errors import ImageError
from ...imaging.files import read_file
from ...imaging.normalize import to_model_input
from ...imaging.prepare import decode_for, decode_pixels, prepare_image


def error_text(exc: BaseException) -> str:
    """How a row that failed to decode is reported."""
    return exc.reason if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"


def check_image(image: Any) -> None:
    """UsageError unless ``image`` is a uint8 image array (HxW, HxWx1/3/4) with pixels."""
    if type(image) is not np.ndarray and not isinstance(image, np.ndarray):
        raise UsageError(f"expected an image array or a path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise UsageError(f"expected a uint8 image (as OpenCV decodes), got {image.dtype}")
    shape = "x".join(map(str, image.shape)) or "scalar"
    if image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise UsageError(f"expected an image: HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA), got shape {shape}"
                         + (" (a batch? use predict_batch)" if image.ndim == 4 else ""))
    if image.size == 0:
        raise UsageError(f"empty image (shape {shape}): nothing to classify (a camera read that returned no "
                         "frame?)")


@dataclass(frozen=True)
class Preprocessor:
    """Built from the card (and the input dtype the artifact takes), so that no stage needs the model.
    ``reduce``: decode large JPEGs at 1/2..1/8 size when that is enough for the input size. Picklable:
    worker processes get one."""

    input: InputSpec
    preprocess: Preprocess
    reduce: bool = True

    @classmethod
    def from_card(cls, card: ModelCard, dtype: str | None = None, reduce: bool = True) -> "Preprocessor":
        spec = card.input
        if dtype is not None and dtype != spec.dtype:
            spec = InputSpec(spec.height, spec.width, spec.channels, spec.layout, dtype, spec.color)
        return cls(spec, card.preprocess, reduce)

    @property
    def row_shape(self) -> tuple[int, int, int]:
        """One prepared image: height, width, channels (uint8)."""
        return self.input.height, self.input.width, self.input.channels

    @property
    def pixels_are_input(self) -> bool:
        """Whether prepared uint8 NHWC pixels are the model's input as they are (normalisation in the graph)."""
        return self.preprocess.in_graph and self.input.layout == "NHWC" and self.input.dtype == "uint8"

    def decode(self, data: bytes, path: str | os.PathLike | None = None) -> np.ndarray:
        """Image bytes -> the decoded image (BGR), at reduced size when that is enough."""
        return decode_for(data, path, self.input, self.preprocess, self.reduce)

    def decode_pixels(self, data: bytes, path: str | os.PathLike | None = None) -> np.ndarray:
        """Image bytes -> prepared pixels, in one step with fewer OpenCV calls."""
        return decode_pixels(data, path, self.input, self.preprocess, self.reduce)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One BGR/gray/BGRA uint8 image -> HxWxC uint8 in the model's colour order and size."""
        check_image(image)
        return prepare_image(image, self.input, self.preprocess)

    def file_pixels(self, path: str) -> np.ndarray:
        return self.decode_pixels(read_file(path), path)

    def file_pixels_and_image(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """A file's pixels and its decoded original (for sinks that draw on it)."""
        image = self.decode(read_file(path), path)
        return self.prepare(image), image

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """An NHWC uint8 batch of prepared pixels -> the tensor the artifact takes."""
        return to_model_input(pixels, self.input, self.preprocess)
