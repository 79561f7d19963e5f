"""The trainer: preset networks, data sources, the training loop and its run directory.

``cnnedge.trainer.data`` imports neither TensorFlow nor Keras, so export and
parity tools can rebuild a recorded data split (see :func:`data.split_images`)
without the training stack. The rest loads TensorFlow lazily, when it trains.
"""
from __future__ import annotations
