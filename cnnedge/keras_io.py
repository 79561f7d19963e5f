"""Loading Keras models from strangers, and the card that sits beside them.

A ``.keras`` file is code-adjacent: it loads with ``safe_mode=True`` only (no
Lambda bytecode) and no custom objects unless the caller names them. Legacy
``.h5`` ignores safe mode, so it is refused unless the user says ``trust``.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

from .artifact.kinds import KINDS, describe_suffixes
from .artifact.card import ModelCard, card_path_for
from .artifact.modelfile import require_model_file
from .errors import CardError, ModelLoadError, UnsupportedModelFile, first_line
from .keras_archive import check_keras_archive
from .tfquiet import keras_warnings_off


def check_model_file(path: str | os.PathLike, trust: bool = False) -> str:
    """The cheap checks of :func:`load_keras_model`, without importing Keras (a ``.keras`` archive's
    member sizes and declared layers included, see :mod:`cnnedge.keras_archive`); returns the suffix."""
    p = require_model_file(path, folder_hint=f"e.g. {Path(path) / 'model.keras'}")
    suffix = p.suffix.lower()
    if suffix in KINDS["keras"].legacy_suffixes:
        from .keras_h5 import check_hdf5_model

        check_hdf5_model(p)  # a Keras 2 file: told before --trust, which would not make it load
        if not trust:
            raise UnsupportedModelFile(f"{p}: legacy HDF5 models ignore Keras safe mode and can run arbitrary code; "
                                       "re-save it as .keras, or pass --trust if you trust where it came from")
    elif suffix not in KINDS["keras"].suffixes:
        raise UnsupportedModelFile(f"{p}: not a Keras model (expected {describe_suffixes(('keras',))})")
    elif not zipfile.is_zipfile(p):
        raise ModelLoadError(f"{p}: not a valid .keras archive (truncated or corrupt?)")
    else:
        check_keras_archive(p)
    return suffix


def load_keras_model(path: str | os.PathLike, trust: bool = False,
                     custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Load a Keras model safely, or raise a ModelLoadError that says why and what to do."""
    p = Path(path)
    suffix = check_model_file(p, trust)

    from ._lazy import require

    keras = require("keras", "loading Keras models")
    try:
        with keras_warnings_off():
            if suffix == ".keras":
                return keras.saving.load_model(p, custom_objects=dict(custom_objects or {}), compile=False,
                                               safe_mode=True)
            return keras.saving.load_model(p, custom_objects=dict(custom_objects or {}), compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile, AttributeError) as exc:
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text or "unsafe" in text.lower():
            raise ModelLoadError(f"{p}: refused by Keras safe mode (the model contains a Lambda layer or other "
                                 "serialized code); rebuild it without Lambda layers") from None
        if "Unknown" in text or "custom" in text.lower() or "Could not locate" in text:
            named = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object)[^']*'([^']+)'",
                              text)
            first = (f"unknown {named.group(1) or named.group(2)!r}" if named
                     else text.strip().splitlines()[0][:300])
            raise ModelLoadError(f"{p}: uses a custom layer or object Keras cannot load ({first}); "
                                 "cnnedge loads only built-in Keras layers") from None
        raise ModelLoadError(f"{p}: cannot load Keras model ({first_line(exc)})") from None


def load_card_for(model_path: str | os.PathLike) -> ModelCard:
    """The card beside a Keras model (``card.json`` in its folder)."""
    path = card_path_for(model_path)
    if not path.is_file():
        raise CardError(f"{model_path}: no model card at {path}; models trained with cnn-train have one "
                        "(give the card's values as flags otherwise)")
    return ModelCard.load(path)
