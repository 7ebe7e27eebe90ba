"""RankShare: ranks read disjoint rows of each global batch, together exactly the batch, with a global cursor."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import data


@pytest.fixture(scope="module")
def train(shakespeare_dir: Path) -> data.TokenShards:
    return data.TokenShards(shakespeare_dir, "train")


def _streams(shards: data.TokenShards) -> list[data.BatchStream]:
    return [
        data.RandomWindows(shards, seq_len=16, batch_size=8, seed=4),
        data.PackedSequences(shards, seq_len=16, batch_size=8, seed=4),
    ]


@pytest.mark.parametrize("kind", [0, 1], ids=["windows", "packed"])
@pytest.mark.parametrize("world", [1, 2, 4])
def test_shares_are_disjoint_and_make_up_the_global_batch(train: data.TokenShards, kind: int, world: int) -> None:
    whole = _streams(train)[kind]
    shares = [data.RankShare(_streams(train)[kind], rank=r, world_size=world) for r in range(world)]
    for index in (0, 5):
        batch = whole.batch(index)
        parts = [share.batch(index) for share in shares]
        assert all(p.input_ids.shape == (8 // world, 16) for p in parts)
        for field in ("input_ids", "labels", "positions", "document_ids"):
            if getattr(batch, field) is not None:
                assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(batch, field)), field


def test_the_cursor_is_global_and_resumes_on_another_world_size(train: data.TokenShards) -> None:
    two = [data.RankShare(data.RandomWindows(train, seq_len=16, batch_size=8, seed=4), rank=r, world_size=2)
           for r in range(2)]
    for share in two:
        list(itertools.islice(share, 3))
    saved = two[0].state_dict()
    assert saved == two[1].state_dict() and saved["next_batch"] == 3 and saved["world_size"] == 1
    one = data.RankShare(data.RandomWindows(train, seq_len=16, batch_size=8, seed=4))
    one.load_state_dict(saved)
    expected = data.RandomWindows(train, seq_len=16, batch_size=8, seed=4).batch(3)
    assert torch.equal(next(iter(one)).input_ids, expected.input_ids)
    assert torch.equal(torch.cat([next(iter(s)).input_ids for s in two]), expected.input_ids)


def test_a_batch_that_does_not_split_evenly_is_refused(train: data.TokenShards) -> None:
    with pytest.raises(data.DataError, match="does not split evenly over 3 ranks; make data.batch_size a multiple of 3"):
        data.RankShare(data.RandomWindows(train, seq_len=16, batch_size=8), rank=0, world_size=3)
    with pytest.raises(data.DataError, match="open it with world_size=1"):
        data.RankShare(data.RandomWindows(train, seq_len=16, batch_size=8, rank=0, world_size=2))
    with pytest.raises(data.DataError, match="rank must be in"):
        data.RankShare(data.RandomWindows(train, seq_len=16, batch_size=8), rank=2, world_size=2)
