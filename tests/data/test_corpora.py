"""The shipped tinyshakespeare corpus and nanoGPT's shakespeare-char dataset built from it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

import data
from data.corpora import TINYSHAKESPEARE_SHA256

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_corpus_is_the_recorded_file() -> None:
    content = data.TINYSHAKESPEARE.read_bytes()
    assert len(content) == 1_115_394
    assert hashlib.sha256(content).hexdigest() == TINYSHAKESPEARE_SHA256
    readme = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    assert TINYSHAKESPEARE_SHA256 in readme and "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e" in readme


def test_the_corpus_ships_as_package_data() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"data" = ["corpora/*.txt"]' in pyproject
    assert data.TINYSHAKESPEARE.relative_to(Path(data.__file__).parent) == Path("corpora/tinyshakespeare.txt")


def test_shakespeare_char_is_nanogpts_dataset(shakespeare_dir: Path) -> None:
    train, val = data.TokenShards(shakespeare_dir, "train"), data.TokenShards(shakespeare_dir, "val")
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert train.dtype == np.uint16 and train.vocab_size == 65
    # nanoGPT's data/shakespeare_char/prepare.py, restated: sorted characters, ids by position, 90/10 by position
    text = data.TINYSHAKESPEARE.read_text(encoding="utf-8")
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    n = len(ids)
    assert np.array_equal(train.read(0, len(train)), ids[: int(n * 0.9)])
    assert np.array_equal(val.read(0, len(val)), ids[int(n * 0.9) :])
    manifest = json.loads((shakespeare_dir / "manifest.json").read_text())
    assert manifest["sources"][0]["sha256"] == TINYSHAKESPEARE_SHA256


def test_a_cached_build_is_reused(shakespeare_dir: Path) -> None:
    manifest = shakespeare_dir / "manifest.json"
    before = manifest.stat().st_mtime_ns
    assert data.shakespeare_char(shakespeare_dir.parent) == shakespeare_dir
    assert manifest.stat().st_mtime_ns == before


def test_a_damaged_cached_build_is_rebuilt(shakespeare_dir: Path, tmp_path: Path) -> None:
    cached = tmp_path / shakespeare_dir.name
    shutil.copytree(shakespeare_dir, cached)
    shard = cached / "val-00000.bin"
    shard.write_bytes(shard.read_bytes()[:100])
    assert data.shakespeare_char(tmp_path) == cached
    assert len(data.TokenShards(cached, "val", verify="sha256")) == 111_540
