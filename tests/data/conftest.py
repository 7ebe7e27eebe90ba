"""Shared fixtures for the data plane tests: the shakespeare-char build and small corpora made on the spot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import data


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nanoGPT's shakespeare-char dataset, built once per test session into a private cache."""
    return data.shakespeare_char(tmp_path_factory.mktemp("cache"))


def write_documents(folder: Path, documents: list[str]) -> list[Path]:
    """One UTF-8 file per document, named so that sorted order is document order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(documents):
        path = folder / f"doc-{i:03d}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def numbered_documents(count: int, words: int = 30) -> list[str]:
    """``count`` documents with different text, so that no two are duplicates."""
    return [" ".join(f"w{d}x{i}" for i in range(words)) + ".\n" for d in range(count)]


@pytest.fixture
def small_build(tmp_path: Path) -> Callable[..., Path]:
    """Build ``documents`` (default: 20 distinct ones) with the byte tokenizer; return the output folder."""

    def build(documents: list[str] | None = None, **options) -> Path:
        folder = tmp_path / f"corpus-{len(list(tmp_path.iterdir()))}"
        write_documents(folder, documents if documents is not None else numbered_documents(20))
        outdir = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        data.build_corpus([folder], outdir, **{"tokenizer": "byte", **options})
        return outdir

    return build
