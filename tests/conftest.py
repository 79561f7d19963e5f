"""Session-wide test settings."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def engine_choice_cache(tmp_path_factory):
    """auto's engine-choice cache in a session temp folder, never the user's ~/.cache; and auto's measuring off,
    so that which CPU engine runs a test does not depend on timing on a loaded machine (tests/test_engine_choice.py
    turns it on). Set in os.environ so that the CLIs the tests start inherit it."""
    saved = {k: os.environ.get(k) for k in ("CNNEDGE_CACHE_DIR", "CNNEDGE_AUTO_MEASURE")}
    os.environ["CNNEDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cnnedge-cache"))
    os.environ["CNNEDGE_AUTO_MEASURE"] = "0"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
