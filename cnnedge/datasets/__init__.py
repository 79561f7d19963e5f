"""Datasets below the trainer and export: every source becomes three splits (train, val, test) of BGR
uint8 HxWx3 images, exactly as ``cv2.imread`` would give them, with integer labels and sorted class names.

A source is described by a small JSON-able *spec* (``card.provenance.dataset_spec``) that rebuilds the
same split deterministically, so calibration and parity checks use the trainer's data:

>>> images, labels, classes = split_images(card.provenance.dataset_spec, "test", limit=100)

Sources: ``digits`` (scikit-learn's 8x8 scans, upscaled), ``mnist``, ``fashion_mnist``, ``cifar10``,
``cifar100`` (``keras.datasets``), a folder of class folders, and a ``.csv`` in the Fashion-MNIST layout.

Importing this package imports neither TensorFlow nor Keras, so export and the runtime's checks can use
it; only rebuilding a cifar10 or cifar100 split loads Keras, which alone reads their cache.
"""
from __future__ import annotations

from .folders import Entry, image_files, labelled_entries, walk
from .folderset import split_files
from .load import load_split, split_images
from .readers import KERAS_DATASETS, read_idx
from .specs import DATASETS, describe, make_spec
from .splits import SPLITS, Split, stratified_indices

__all__ = ["DATASETS", "KERAS_DATASETS", "SPLITS", "Entry", "Split", "describe", "image_files", "labelled_entries",
           "load_split", "make_spec", "read_idx", "split_files", "split_images", "stratified_indices", "walk"]
