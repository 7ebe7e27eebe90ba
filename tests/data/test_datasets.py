"""RandomWindows and PackedSequences: contents, determinism, exact resume, ranks and DataLoader workers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import data
from specs import IGNORE_INDEX, Batch


def _take(stream, n: int) -> list[Batch]:
    return list(itertools.islice(stream, n))


def _same(a: list[Batch], b: list[Batch]) -> bool:
    fields = ("input_ids", "labels", "positions", "document_ids")
    return len(a) == len(b) and all(
        all((getattr(x, f) is None and getattr(y, f) is None) or torch.equal(getattr(x, f), getattr(y, f)) for f in fields)
        for x, y in zip(a, b)
    )


@pytest.fixture(scope="module")
def train(shakespeare_dir: Path) -> data.TokenShards:
    return data.TokenShards(shakespeare_dir, "train")


@pytest.fixture
def packed_corpus(small_build: Callable[..., Path]) -> data.TokenShards:
    """Documents of different lengths (byte tokens, EOS between them) in several shards."""
    documents = [f"doc{i} " * (3 + 7 * i % 23) + "\n" for i in range(40)]
    return data.TokenShards(small_build(documents, val_fraction=0.0, shard_size_tokens=700))


# ------------------------------------------------------------------------------------------ random windows


def test_windows_are_shifted_pairs_from_the_stream(train: data.TokenShards) -> None:
    stream = data.RandomWindows(train, seq_len=64, batch_size=12, seed=1)
    batch = stream.batch(0)
    assert batch.input_ids.shape == batch.labels.shape == (12, 64) and batch.input_ids.dtype == torch.int64
    assert torch.equal(batch.input_ids[:, 1:], batch.labels[:, :-1])
    starts = stream.starts(0)
    for row, start in zip(batch.input_ids, starts):
        assert torch.equal(row, torch.from_numpy(train.read(int(start), int(start) + 64)))
    assert starts.min() >= 0 and starts.max() < len(train) - 64


def test_windows_cover_the_stream_uniformly(train: data.TokenShards) -> None:
    stream = data.RandomWindows(train, seq_len=64, batch_size=512, seed=0)
    starts = np.concatenate([stream.starts(i) for i in range(20)])
    counts, _ = np.histogram(starts, bins=10, range=(0, len(train) - 64))
    assert counts.min() > 0.8 * counts.mean()


def test_windows_are_deterministic_per_seed_and_rank(train: data.TokenShards) -> None:
    def first(**kw) -> list[Batch]:
        return _take(iter(data.RandomWindows(train, seq_len=32, batch_size=4, **kw)), 3)

    assert _same(first(seed=5), first(seed=5))
    assert not _same(first(seed=5), first(seed=6))
    assert not _same(first(seed=5, rank=0, world_size=2), first(seed=5, rank=1, world_size=2))


@pytest.mark.parametrize("kind", ["windows", "packed"])
def test_resume_sees_exactly_the_batches_it_would_have(train: data.TokenShards, kind: str) -> None:
    def make() -> data.BatchStream:
        if kind == "windows":
            return data.RandomWindows(train, seq_len=64, batch_size=12, seed=3)
        return data.PackedSequences(train, seq_len=64, batch_size=12, seed=3, rank=1, world_size=2)

    k, n = 7, 5
    original = make()
    iterator = iter(original)
    _take(iterator, k)
    state = json.loads(json.dumps(original.state_dict()))  # survives a JSON round trip
    expected = _take(iterator, n)
    resumed = make()
    resumed.load_state_dict(state)
    assert state["next_batch"] == k and _same(_take(iter(resumed), n), expected)


def test_a_cursor_from_other_settings_is_refused(train: data.TokenShards, shakespeare_dir: Path) -> None:
    state = data.RandomWindows(train, seq_len=64, batch_size=12).state_dict()
    with pytest.raises(data.DataError, match=r"seq_len 64 \(now 128\)"):
        data.RandomWindows(train, seq_len=128, batch_size=12).load_state_dict(state)
    val = data.TokenShards(shakespeare_dir, "val")
    with pytest.raises(data.DataError, match="cannot resume: .*data"):
        data.RandomWindows(val, seq_len=64, batch_size=12).load_state_dict(state)
    with pytest.raises(data.DataError, match="cannot resume: .*dataset 'RandomWindows'"):
        data.PackedSequences(train, seq_len=64, batch_size=12).load_state_dict(state)


@pytest.mark.parametrize("kind", ["windows", "packed"])
def test_workers_share_out_the_numbers_in_order(train: data.TokenShards, kind: str) -> None:
    def make() -> data.BatchStream:
        if kind == "windows":
            return data.RandomWindows(train, seq_len=16, batch_size=3, seed=2)
        return data.PackedSequences(train, seq_len=16, batch_size=3, seed=2)

    sequential = _take(iter(make()), 9)
    workers = [_take(make().batches(w, 3), 3) for w in range(3)]
    interleaved = [workers[i % 3][i // 3] for i in range(9)]
    assert _same(interleaved, sequential)


def test_a_dataloader_with_workers_yields_the_in_process_stream(train: data.TokenShards) -> None:
    stream = data.RandomWindows(train, seq_len=16, batch_size=4, seed=9)
    stream.load_state_dict(stream.state_dict(batches_consumed=5))
    loader = DataLoader(stream, batch_size=None, num_workers=2, collate_fn=lambda b: b)
    from_workers = _take(iter(loader), 6)
    expected = [data.RandomWindows(train, seq_len=16, batch_size=4, seed=9).batch(i) for i in range(5, 11)]
    assert _same(from_workers, expected)


def test_bad_settings_are_clear_errors(train: data.TokenShards) -> None:
    with pytest.raises(data.DataError, match="rank must be in"):
        data.RandomWindows(train, seq_len=8, batch_size=2, rank=2, world_size=2)
    with pytest.raises(data.DataError, match="seq_len must be at least 1"):
        data.RandomWindows(train, seq_len=0, batch_size=2)
    with pytest.raises(data.DataError, match="fewer than one sequence"):
        data.RandomWindows(train, seq_len=len(train), batch_size=2)
    with pytest.raises(data.DataError, match="not one batch"):
        data.PackedSequences(train, seq_len=1000, batch_size=600, world_size=2)


# --------------------------------------------------------------------------------------- packed sequences


def test_packed_rows_cover_the_stream_once_per_epoch(packed_corpus: data.TokenShards) -> None:
    seq_len = 16
    stream = data.PackedSequences(packed_corpus, seq_len=seq_len, batch_size=5, shuffle=False, epochs=1)
    batches = list(stream)
    assert len(batches) == stream.num_batches() == ((len(packed_corpus) - 1) // seq_len) // 5
    inputs = torch.cat([b.input_ids for b in batches]).reshape(-1)
    assert torch.equal(inputs, torch.from_numpy(packed_corpus.read(0, len(inputs))))


def test_ranks_take_disjoint_rows_of_a_shared_shuffle(packed_corpus: data.TokenShards) -> None:
    seq_len, world = 8, 3
    streams = [
        data.PackedSequences(packed_corpus, seq_len=seq_len, batch_size=4, seed=1, epochs=1, rank=r, world_size=world)
        for r in range(world)
    ]
    per_rank = [set(s.rows(0).tolist()) for s in streams]
    rows_in_stream = (len(packed_corpus) - 1) // seq_len
    assert all(len(rows) == rows_in_stream // world for rows in per_rank)
    assert all(not (a & b) for a, b in itertools.combinations(per_rank, 2))
    assert set().union(*per_rank) <= set(range(rows_in_stream))
    for stream in streams:  # and the batches hold those rows
        served = torch.cat([b.input_ids for b in stream])
        rows = stream.rows(0)[: len(served)]
        assert torch.equal(served, torch.from_numpy(packed_corpus.windows(rows * seq_len, seq_len)))


def test_epochs_reshuffle_and_end(packed_corpus: data.TokenShards) -> None:
    stream = data.PackedSequences(packed_corpus, seq_len=16, batch_size=4, seed=0, epochs=2)
    per_epoch = stream.batches_per_epoch
    batches = list(stream)
    assert len(batches) == 2 * per_epoch
    first, second = batches[:per_epoch], batches[per_epoch:]
    assert not _same(first, second)
    assert sorted(map(tuple, torch.cat([b.input_ids for b in first]).tolist())) == sorted(
        map(tuple, torch.cat([b.input_ids for b in second]).tolist())
    )


def test_document_ids_positions_and_labels_follow_the_documents(packed_corpus: data.TokenShards) -> None:
    seq_len = 32
    stream = data.PackedSequences(packed_corpus, seq_len=seq_len, batch_size=4, seed=4)
    eos = packed_corpus.tokenizer().eos_id
    doc_of = np.searchsorted(packed_corpus.doc_starts, np.arange(len(packed_corpus)), side="right") - 1
    for index in range(6):
        batch = stream.batch(index)
        for b, row in enumerate(stream.rows(index // stream.batches_per_epoch)[index * 4 : index * 4 + 4]):
            start = int(row) * seq_len
            docs = doc_of[start : start + seq_len + 1]
            assert batch.document_ids[b].tolist() == (docs[:-1] - docs[0]).tolist()
            for t in range(seq_len):
                same_doc_as_before = t > 0 and docs[t] == docs[t - 1]
                expected_position = batch.positions[b, t - 1] + 1 if same_doc_as_before else 0
                assert batch.positions[b, t] == expected_position
                token_after = packed_corpus.read(start + t + 1, start + t + 2)[0]
                expected_label = token_after if docs[t + 1] == docs[t] else IGNORE_INDEX
                assert batch.labels[b, t] == expected_label
            ends = (batch.input_ids[b] == eos).nonzero().flatten().tolist()
            assert all(batch.labels[b, t] == IGNORE_INDEX for t in ends)  # after EOS comes another document
