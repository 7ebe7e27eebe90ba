"""KV-cache implementations of ``specs.KVCache``, exercised directly (no model).

Every test runs against each factory in ``FACTORIES`` (the eager contiguous cache, its fixed-shape,
compile-friendly mode, and the paged cache with blocks of 3 tokens, so rows cross block boundaries; a ring
cache joins the list when it lands). A row's visible keys are read the way attention reads them: what
``update`` returns (gathered through the block table when paged), cut at the row's valid length from ``step``.
Paged-only behaviour (blocks, prefix sharing, views) lives in ``tests/attn/test_paged_kv_cache.py``. Model-level
behaviour (decode == forward, rollback, beam reorder, ragged rows) lives in
``tests/model/test_decode_equals_forward.py``. Everything compared is copied data, so comparisons are exact.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import specs
from attn import PagedKVCache, Seq2SeqKVCache, StaticKVCache
from tensor import gather_pages

L, B, HKV, D = 3, 2, 2, 4
BLOCK = 3

Factory = Callable[..., specs.KVCache]
FACTORIES: dict[str, Factory] = {
    "static": lambda max_len, dtype=torch.float32: StaticKVCache(
        n_layers=L, batch=B, n_kv_heads=HKV, head_dim=D, max_len=max_len, dtype=dtype
    ),
    "static_fixed_shapes": lambda max_len, dtype=torch.float32: StaticKVCache(
        n_layers=L, batch=B, n_kv_heads=HKV, head_dim=D, max_len=max_len, dtype=dtype, fixed_shapes=True
    ),
    "paged": lambda max_len, dtype=torch.float32: PagedKVCache(
        n_layers=L, batch=B, n_kv_heads=HKV, head_dim=D, max_len=max_len, block_size=BLOCK, dtype=dtype
    ),
    # the encoder-decoder cache: its self-attention part must behave as the others do
    "seq2seq": lambda max_len, dtype=torch.float32: Seq2SeqKVCache(
        n_layers=L, batch=B, n_kv_heads=HKV, head_dim=D, max_len=max_len, dtype=dtype
    ),
}
HOST_LENGTHS = {"static", "paged", "seq2seq"}  # caches that mirror lengths on the host, so they refuse on the host

EVERY_CACHE = pytest.mark.parametrize("name", sorted(FACTORIES))
HOST_CHECKED = pytest.mark.parametrize("name", sorted(HOST_LENGTHS))


def _kv(t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, HKV, t, D, generator=gen), torch.randn(B, HKV, t, D, generator=gen)


def _rows(cache, k_all: torch.Tensor, step: specs.CacheStep) -> list[torch.Tensor]:
    """Each row's visible keys (B entries of (Hkv, Tk_b, D))."""
    if step.block_table is not None:
        k_all = gather_pages(k_all, step.block_table)
    lens = step.kv_lens.tolist() if step.kv_lens is not None else [k_all.shape[2]] * k_all.shape[0]
    return [k_all[b, :, :n] for b, n in enumerate(lens)]


def _forward(cache, t: int, seed: int, *, commit: bool = True):
    """What a model's forward does: step, update every layer, advance. Returns what was written and seen."""
    step = cache.step(t)
    written, seen = [], []
    for layer in range(L):
        k, v = _kv(t, seed * 100 + layer)
        k_all, v_all = cache.update(layer, k, v)
        written.append((k, v))
        seen.append((_rows(cache, k_all, step), _rows(cache, v_all, step)))
    if commit:
        cache.advance(t)
    return written, seen


@EVERY_CACHE
def test_is_a_kv_cache_with_its_layout(name: str) -> None:
    cache = FACTORIES[name](8)
    assert isinstance(cache, specs.KVCache)
    assert cache.max_len == 8
    assert cache.layout == specs.CacheLayout(n_layers=L, batch=B, n_kv_heads=HKV, head_dim=D, max_len=8, dtype="float32")
    assert cache.seq_lens.tolist() == [0] * B and cache.seq_lens.dtype == torch.int64


@EVERY_CACHE
def test_each_forward_sees_everything_committed_plus_its_own_tokens(name: str) -> None:
    cache = FACTORIES[name](10)
    history: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {layer: [] for layer in range(L)}
    for n, t in enumerate([3, 1, 4]):
        written, seen = _forward(cache, t, seed=n)
        for layer in range(L):
            history[layer].append(written[layer])
            for b in range(B):
                assert torch.equal(seen[layer][0][b], torch.cat([k[b] for k, _ in history[layer]], dim=1))
                assert torch.equal(seen[layer][1][b], torch.cat([v[b] for _, v in history[layer]], dim=1))
    assert cache.seq_lens.tolist() == [8] * B


@EVERY_CACHE
def test_step_reports_offsets_and_tokens_commit_only_on_advance(name: str) -> None:
    cache = FACTORIES[name](10)
    _forward(cache, 4, seed=0)
    step = cache.step(2)
    assert torch.as_tensor(step.q_offset).expand(B).tolist() == [4] * B
    assert (step.block_table is not None) == (name == "paged")
    _forward(cache, 2, seed=1, commit=False)  # a forward that failed before advance
    assert cache.seq_lens.tolist() == [4] * B


@EVERY_CACHE
def test_an_interrupted_forward_is_overwritten_by_the_next(name):
    cache = FACTORIES[name](16)
    first, _ = _forward(cache, 3, seed=1)
    step = cache.step(2)
    cache.update(0, *_kv(2, seed=2))  # a forward that stopped after layer 0
    retry, seen = _forward(cache, 2, seed=3)
    for layer in range(L):
        for b in range(B):
            want = torch.cat([first[layer][0][b], retry[layer][0][b]], dim=1)
            assert torch.equal(seen[layer][0][b], want)
    assert step.q_offset is not None and cache.seq_lens.tolist() == [5] * B


@EVERY_CACHE
def test_overflow_is_refused_before_anything_is_written(name: str) -> None:
    cache = FACTORIES[name](5)
    _forward(cache, 4, seed=0)
    with pytest.raises((ValueError, RuntimeError), match="full"):
        cache.step(2)
    assert cache.seq_lens.tolist() == [4] * B


@HOST_CHECKED  # a fixed-shape cache has no host copy of its lengths: its overflow check runs on the device
def test_eager_overflow_error_names_the_row_and_max_len(name: str) -> None:
    cache = FACTORIES[name](5)
    _forward(cache, 3, seed=0)
    cache.evict(torch.tensor([2, 0]))
    with pytest.raises(ValueError, match=r"row 1 holds 3 tokens and 3 more exceed max_len 5"):
        cache.step(3)


@EVERY_CACHE
def test_wrong_shapes_and_dtypes_are_refused(name: str) -> None:
    cache = FACTORIES[name](5)
    k, v = _kv(2, seed=0)
    with pytest.raises(specs.ShapeError, match="B"):
        cache.update(0, k[:1], v[:1])
    with pytest.raises(specs.ShapeError, match="Hkv"):
        cache.update(0, k[:, :1], v[:, :1])
    with pytest.raises(specs.ShapeError):
        cache.update(0, k, v[..., :2])
    with pytest.raises(ValueError, match=r"KV cache holds torch.float32 but layer 0 gives torch.bfloat16"):
        cache.update(0, k.bfloat16(), v.bfloat16())


@EVERY_CACHE
def test_evict_rolls_back_and_new_tokens_overwrite(name: str) -> None:
    cache = FACTORIES[name](10)
    kept, _ = _forward(cache, 5, seed=0)
    _forward(cache, 3, seed=1)
    cache.evict(3)
    assert cache.seq_lens.tolist() == [5] * B
    new, seen = _forward(cache, 2, seed=2)
    for b in range(B):
        assert torch.equal(seen[0][0][b], torch.cat([kept[0][0][b], new[0][0][b]], dim=1))


@EVERY_CACHE
def test_per_row_evict_and_ragged_rows(name: str) -> None:
    """Row 0 rolls back 3 tokens, row 1 none: the next forward writes each row at its own length."""
    cache = FACTORIES[name](12)
    first, _ = _forward(cache, 5, seed=0)
    cache.evict(torch.tensor([3, 0]))
    assert cache.seq_lens.tolist() == [2, 5]
    step = cache.step(2)
    assert isinstance(step.q_offset, torch.Tensor) and step.q_offset.tolist() == [2, 5]
    assert step.kv_lens is not None and step.kv_lens.tolist() == [4, 7]
    new, seen = _forward(cache, 2, seed=1)
    for layer in range(L):
        assert torch.equal(seen[layer][0][0], torch.cat([first[layer][0][0, :, :2], new[layer][0][0]], dim=1))
        assert torch.equal(seen[layer][0][1], torch.cat([first[layer][0][1], new[layer][0][1]], dim=1))
    assert cache.seq_lens.tolist() == [4, 7]


@HOST_CHECKED  # a fixed-shape cache does not read lengths on the host, so it cannot refuse there
def test_evict_bounds(name: str) -> None:
    cache = FACTORIES[name](10)
    _forward(cache, 3, seed=0)
    with pytest.raises(ValueError, match="cannot evict 4 tokens from row 0, which holds 3"):
        cache.evict(4)
    with pytest.raises(ValueError):
        cache.evict(-1)
    with pytest.raises(ValueError, match="one count per row"):
        cache.evict(torch.tensor([1, 1, 1]))
    cache.evict(0)
    assert cache.seq_lens.tolist() == [3, 3]
    cache.evict(torch.tensor([3, 1]))
    assert cache.seq_lens.tolist() == [0, 2]


@EVERY_CACHE
def test_reset_one_row_releases_it_while_the_other_goes_on(name: str) -> None:
    cache = FACTORIES[name](8)
    first, _ = _forward(cache, 3, seed=0)
    cache.reset([0])
    assert cache.seq_lens.tolist() == [0, 3]
    new, seen = _forward(cache, 2, seed=1)
    assert torch.equal(seen[0][0][0], new[0][0][0])  # row 0 starts over
    assert torch.equal(seen[0][0][1], torch.cat([first[0][0][1], new[0][0][1]], dim=1))
    with pytest.raises(ValueError, match="cannot reset row 2"):
        cache.reset([2])


@EVERY_CACHE
def test_reset_keeps_memory_and_starts_over(name: str) -> None:
    cache = FACTORIES[name](6)
    _forward(cache, 6, seed=0)
    size = cache.bytes()
    cache.reset()
    assert cache.seq_lens.tolist() == [0] * B and cache.bytes() == size
    written, seen = _forward(cache, 6, seed=1)  # the whole capacity is usable again
    assert torch.equal(seen[L - 1][0][1], written[L - 1][0][1])


@EVERY_CACHE
def test_reorder_copies_rows_and_lengths(name: str) -> None:
    cache = FACTORIES[name](8)
    written, _ = _forward(cache, 3, seed=0)
    cache.evict(torch.tensor([0, 1]))
    cache.reorder(torch.tensor([1, 1]))
    assert cache.seq_lens.tolist() == [2, 2]
    new, seen = _forward(cache, 1, seed=1)
    for layer in range(L):
        for b in range(B):
            want = torch.cat([written[layer][0][1, :, :2], new[layer][0][b]], dim=1)
            assert torch.equal(seen[layer][0][b], want)
    with pytest.raises(ValueError):
        cache.reorder(torch.tensor([0, 1, 0]))


@EVERY_CACHE
def test_fixed_shapes_return_the_same_shapes_every_step(name: str) -> None:
    cache = FACTORIES[name](9)
    shapes = set()
    for n in range(4):
        step = cache.step(1)
        k_all, _ = cache.update(0, *_kv(1, seed=n))
        for layer in range(1, L):
            cache.update(layer, *_kv(1, seed=n))
        cache.advance(1)
        shapes.add((tuple(k_all.shape), isinstance(step.q_offset, int)))
    if name == "static_fixed_shapes":
        assert shapes == {((B, HKV, 9, D), False)}
    elif name == "paged":  # the pools of pages: B rows of 9 tokens in blocks of 3
        assert shapes == {((B * 3, HKV, BLOCK, D), True)}
    else:
        assert shapes == {((B, HKV, n, D), True) for n in range(1, 5)}


@EVERY_CACHE
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes(name: str, dtype: torch.dtype) -> None:
    max_len = 7
    cache = FACTORIES[name](max_len, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if name == "paged":  # by default, blocks for every row to reach max_len: 3 blocks of 3 for 7 tokens
        assert cache.bytes() == 2 * L * B * 3 * HKV * BLOCK * D * itemsize
    else:
        assert cache.bytes() == 2 * L * B * HKV * max_len * D * itemsize + B * 8


@EVERY_CACHE
def test_invalid_sizes_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="max_len"):
        FACTORIES[name](0)
