"""The light runtime: preprocessing, backends, sources, sinks and the Classifier API.

Importing this package must not import TensorFlow or TensorRT.
"""
from __future__ import annotations
