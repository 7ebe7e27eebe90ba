"""The bundled corpus is built once per test session into a temporary cache (never the user's ~/.cache)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def corpus_cache(tmp_path_factory: pytest.TempPathFactory):
    previous = os.environ.get("LMPLANES_CACHE_DIR")
    os.environ["LMPLANES_CACHE_DIR"] = str(tmp_path_factory.mktemp("lmplanes-cache"))
    yield
    if previous is None:
        os.environ.pop("LMPLANES_CACHE_DIR", None)
    else:
        os.environ["LMPLANES_CACHE_DIR"] = previous
