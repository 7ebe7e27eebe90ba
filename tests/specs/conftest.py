"""Shared fixtures for the specs tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """Fixture files shipped with these tests (v1 model configs)."""
    return DATA


@pytest.fixture
def repo_root() -> Path:
    return ROOT
