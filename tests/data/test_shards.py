"""TokenShards: checks against the manifest before trusting a shard, and reads across shard boundaries."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import data
from tests.data.conftest import numbered_documents


@pytest.fixture
def sharded(small_build: Callable[..., Path]) -> Path:
    """About 5,800 byte tokens in shards of 1,000, no validation split."""
    return small_build(numbered_documents(20), shard_size_tokens=1000, val_fraction=0.0)


def _reference(outdir: Path) -> np.ndarray:
    manifest = json.loads((outdir / "manifest.json").read_text())
    names = [s["path"] for s in manifest["splits"]["train"]["shards"]]
    return np.concatenate([np.fromfile(outdir / n, dtype="<u2") for n in names]).astype(np.int64)


def test_windows_read_across_shard_boundaries(sharded: Path) -> None:
    shards = data.TokenShards(sharded)
    reference = _reference(sharded)
    assert len(shards) == len(reference) and len(shards._shard_names) > 3
    starts = np.array([0, 990, 1995, 2000, len(reference) - 40, 2999], dtype=np.int64)
    rows = shards.windows(starts, 40)
    assert rows.dtype == np.int64 and rows.shape == (6, 40)
    for row, start in zip(rows, starts):
        assert np.array_equal(row, reference[start : start + 40])
    assert np.array_equal(shards.read(0, len(shards)), reference)


def test_windows_outside_the_stream_are_an_error(sharded: Path) -> None:
    shards = data.TokenShards(sharded)
    with pytest.raises(data.DataError, match="run outside the"):
        shards.windows(np.array([len(shards) - 10]), 11)
    with pytest.raises(data.DataError, match="run outside the"):
        shards.windows(np.array([-1]), 2)


def test_a_truncated_shard_is_refused(sharded: Path) -> None:
    shard = sharded / "train-00002.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(data.DataError, match=r"train-00002.bin: 1998 bytes, the manifest says 2000"):
        data.TokenShards(sharded)


def test_a_changed_shard_fails_the_sha256_check(sharded: Path) -> None:
    shard = sharded / "train-00001.bin"
    content = bytearray(shard.read_bytes())
    content[10] ^= 0xFF
    shard.write_bytes(bytes(content))
    data.TokenShards(sharded)  # same size: the quick check passes
    with pytest.raises(data.DataError, match="train-00001.bin: sha256 does not match the manifest"):
        data.TokenShards(sharded, verify="sha256")
    with pytest.raises(data.DataError, match="train-00001.bin: sha256 does not match"):
        data.verify_build(sharded)


def test_a_missing_file_and_a_missing_manifest(sharded: Path) -> None:
    (sharded / "tokenizer.json").unlink()
    with pytest.raises(data.DataError, match="tokenizer.json: missing"):
        data.TokenShards(sharded)
    (sharded / "manifest.json").unlink()
    with pytest.raises(data.DataError, match="no manifest.json; it is not a finished token-shard build"):
        data.TokenShards(sharded)


def test_a_manifest_that_disagrees_with_itself_is_refused(sharded: Path) -> None:
    path = sharded / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["shards"][0]["tokens"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(data.DataError, match="2000 bytes of uint16 do not hold 1001 uint16 tokens"):
        data.TokenShards(sharded)
    manifest["version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(data.DataError, match="manifest version 99 is not supported"):
        data.TokenShards(sharded)


def test_unknown_and_empty_splits(sharded: Path) -> None:
    with pytest.raises(data.DataError, match="has no split 'test'"):
        data.TokenShards(sharded, "test")
    with pytest.raises(data.DataError, match="the 'val' split of .* holds no tokens"):
        data.TokenShards(sharded, "val")
    with pytest.raises(data.DataError, match="unknown verify level"):
        data.TokenShards(sharded, verify="md5")


def test_pickles_carry_paths_not_tokens(shakespeare_dir: Path) -> None:
    shards = data.TokenShards(shakespeare_dir)
    shards.windows(np.array([0]), 4)  # map the files
    blob = pickle.dumps(shards)
    assert len(blob) < 50_000 < len(shards) * 2
    copy = pickle.loads(blob)
    assert np.array_equal(copy.read(1000, 1100), shards.read(1000, 1100))
