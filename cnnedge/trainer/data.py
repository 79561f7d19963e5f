"""Where ``split_images`` and the dataset specs lived before :mod:`cnnedge.datasets`; the README's
``cnnedge.trainer.data.split_images`` keeps working for code written against it."""
from __future__ import annotations

from ..datasets import describe, load_split, make_spec, split_images

__all__ = ["describe", "load_split", "make_spec", "split_images"]
