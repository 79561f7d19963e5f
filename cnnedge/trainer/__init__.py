"""The trainer: preset networks, the training loop and its run directory.

The data sources live below it, in :mod:`cnnedge.datasets`, so export and parity tools rebuild a recorded
split without the training stack. The rest loads TensorFlow lazily, when it trains.
"""
from __future__ import annotations
