"""Images for calibration and parity checks: a folder, a known dataset, or the card's own data.

Every image is an OpenCV BGR uint8 array and becomes a model input only through
:func:`cnnedge.imaging.prepare.preprocess_batch`, the runtime's own path, so a
training/deployment preprocessing mismatch shows up in the parity report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, overload

import numpy as np

from ..artifact.card import InputSpec, ModelCard
from ..datasets import DATASETS, labelled_entries, load_split, make_spec
from ..errors import DataError, UsageError

BATCH_BYTES = 64 << 20  # one preprocessed float32 batch (a model's activations are several times that)


def batch_for(spec: InputSpec, most: int = 64) -> int:
    """Images per model call so that one float32 batch of ``spec`` stays under :data:`BATCH_BYTES`: what a step
    holds at once, whatever the image count (at 2000x2000 a batch of 64 would be 3 GB)."""
    return max(1, min(most, BATCH_BYTES // (spec.height * spec.width * spec.channels * 4)))


class FileImages(Sequence[np.ndarray]):
    """Image files decoded when indexed or sliced: a folder of a thousand photos is not held in memory at once.
    Every file was decoded once when the set was made, so each decodes again."""

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        from ..imaging.decode import read_image

        if isinstance(i, slice):
            return [read_image(f) for f in self.files[i]]
        return read_image(self.files[i])


@dataclass
class ImageSet:
    """Decoded images (in memory, or files decoded when sliced), labels in the card's class order where known,
    and where they came from."""

    images: Sequence[np.ndarray]
    labels: np.ndarray | None
    source: str
    skipped: int = 0

    def __post_init__(self) -> None:
        if not self.images:
            raise DataError(f"{self.source}: no images")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{self.source}: {len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, spec: InputSpec, card: ModelCard, limit: int | None = None) -> np.ndarray:
        """The set (its first ``limit`` images) as one model-input batch for ``spec`` (the runtime's
        preprocessing)."""
        from ..imaging.prepare import preprocess_batch

        return preprocess_batch(self.images[:limit], spec, card.preprocess)

    def batches(self, spec: InputSpec, card: ModelCard, size: int = 32) -> Iterator[np.ndarray]:
        """Re-startable: each call starts again from the first image."""
        from ..imaging.prepare import preprocess_batch

        for i in range(0, len(self.images), size):
            yield preprocess_batch(self.images[i:i + size], spec, card.preprocess)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "images": len(self.images), "labels": self.labels is not None,
                "skipped": self.skipped}


def pixel_spec(card: ModelCard, dtype: str = "uint8") -> InputSpec:
    from dataclasses import replace

    return replace(card.input, dtype=dtype)


def load_images(source: str | None, card: ModelCard, split: str, limit: int | None, flag: str) -> ImageSet:
    """``source``: a folder of images, a dataset name, or None for the data recorded in the card.

    ``flag`` names the option in messages (``--calib`` / ``--verify``).
    """
    if source is None:
        spec = dict(card.provenance.dataset_spec or {})
        if not spec.get("source"):
            raise UsageError(f"the model card records no training data to use; pass {flag} DIR (a folder of "
                             f"images) or {flag} DATASET ({', '.join(DATASETS)})")
        return _from_spec(spec, split, limit, card, f"{card.provenance.dataset or spec['source']} ({split} split)")
    p = Path(source).expanduser()
    if p.is_dir():
        return read_folder(p, card, limit, flag)
    if source in DATASETS:
        return _from_spec(_spec_for(source, card), split, limit, card, f"{source} ({split} split)")
    if p.exists():
        raise UsageError(f"{flag} {source}: a file; give a folder of images or a dataset name "
                         f"({', '.join(DATASETS)})")
    import difflib

    close = difflib.get_close_matches(source, DATASETS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"{flag} {source}: no such folder and not a dataset{hint}; give a folder of images or one of "
                     f"{', '.join(DATASETS)}")


def _spec_for(name: str, card: ModelCard) -> dict[str, Any]:
    recorded = dict(card.provenance.dataset_spec or {})
    if recorded.get("source") == name:
        return recorded  # same seed and split fractions as training: its test split is held out
    size = (card.input.height, card.input.width) if name == "digits" else None
    return make_spec(name, size=size)


def _from_spec(spec: dict[str, Any], split: str, limit: int | None, card: ModelCard, label: str) -> ImageSet:
    s = load_split(spec, split, limit)
    labels = _map_labels(s.labels, list(s.classes), card)
    return ImageSet(list(s.images), labels, label, len(s.skipped))


def _map_labels(labels: np.ndarray, names: Sequence[str], card: ModelCard) -> np.ndarray | None:
    """Dataset label ids -> the card's class ids (by name); None when the names do not match."""
    index = {c: i for i, c in enumerate(card.classes)}
    if not set(names) <= set(index):
        return None
    table = np.array([index[n] for n in names], dtype=np.int64)
    return table[np.asarray(labels, dtype=np.int64)]


def read_folder(root: Path, card: ModelCard, limit: int | None, flag: str) -> ImageSet:
    """Every image file under ``root`` (sorted); labels when each sits in a folder named after a card class."""
    from ..imaging.decode import read_image
    from ..imaging.errors import ImageError

    images: list[Path] = []
    labels: list[int | None] = []
    skipped: list[str] = []
    for entry, label in labelled_entries(root, card.classes):
        if limit is not None and len(images) >= limit:
            break
        if entry.skip is not None:
            skipped.append(f"{entry.path.name}: {entry.skip}")
            continue
        try:
            read_image(entry.path)
            images.append(entry.path)
        except ImageError as exc:
            skipped.append(f"{entry.path.name}: {exc.reason}")
            continue
        labels.append(label)
    if not images:
        why = f" ({len(skipped)} file(s) skipped, e.g. {skipped[0]})" if skipped else ""
        raise DataError(f"{flag} {root}: no readable images{why}")
    lab = np.array(labels, dtype=np.int64) if all(v is not None for v in labels) else None
    return ImageSet(FileImages(images), lab, str(root), len(skipped))
