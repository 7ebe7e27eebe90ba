"""What only the paged cache does: blocks taken on demand and given back, refusal when none is free, prompt
prefixes shared between rows (reference counted, copied before a write), and views over some rows.

The behaviour every KV cache shares is tested for the paged one too, in ``tests/attn/test_kv_cache_unit.py``
and ``tests/model/test_decode_equals_forward.py``. Everything compared here is copied data: exact.
"""

from __future__ import annotations

import pytest
import torch

import specs
from attn import PagedKVCache
from tensor import gather_pages

L, HKV, D, S = 2, 2, 4, 4  # layers, kv heads, head dim, tokens per block


def _cache(batch: int = 2, max_len: int = 16, num_blocks: int | None = None) -> PagedKVCache:
    return PagedKVCache(
        n_layers=L, batch=batch, n_kv_heads=HKV, head_dim=D, max_len=max_len, block_size=S, num_blocks=num_blocks
    )


def _kv(batch: int, t: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, HKV, t, D, generator=torch.Generator().manual_seed(seed))


def _forward(cache, t: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A model's forward: ``t`` tokens per row. Returns, per layer, the keys written and each row's visible keys
    (B, Hkv, Tk, D) gathered through the block table and cut at the longest row."""
    step = cache.step(t)
    written, seen = [], []
    for layer in range(L):
        k = _kv(cache.layout.batch, t, seed * 10 + layer)
        pool_k, _ = cache.update(layer, k, k + 1)
        written.append(k)
        seen.append(gather_pages(pool_k, step.block_table)[:, :, : int(step.kv_lens.max())])
    cache.advance(t)
    return written, seen


def _used(cache) -> int:
    return cache.blocks_total - cache.blocks_free


def test_is_a_paged_cache_made_by_the_model_factory_contract() -> None:
    cache = _cache()
    assert isinstance(cache, specs.PagedCache) and isinstance(cache, specs.KVCache)
    assert (cache.block_size, cache.blocks_total, cache.blocks_free) == (S, 8, 8)  # 2 rows x 16 tokens
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        specs.PagedSpec(block_size=0)
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        specs.PagedSpec(num_blocks=0)


def test_blocks_are_taken_as_rows_grow_and_given_back_on_evict_and_reset() -> None:
    cache = _cache(num_blocks=6)
    _forward(cache, 3, seed=0)
    assert _used(cache) == 2  # one block per row
    _forward(cache, 2, seed=1)
    assert _used(cache) == 4 and cache.seq_lens.tolist() == [5, 5]
    cache.evict(torch.tensor([1, 2]))  # row 0 keeps 4 tokens (1 block), row 1 keeps 3 (1 block)
    assert _used(cache) == 2
    cache.reset([0])
    assert _used(cache) == 1 and cache.seq_lens.tolist() == [0, 3]
    cache.reset()
    assert cache.blocks_free == 6


def test_no_free_block_is_refused_before_anything_is_written() -> None:
    cache = _cache(num_blocks=3)
    first, _ = _forward(cache, 4, seed=0)  # rows hold one full block each
    with pytest.raises(
        specs.CacheFull, match=r"needs 2 more blocks of 4 tokens \(rows \[0, 1\] grow, 0 shared blocks to copy\) and "
        r"1 of 3 are free"
    ):
        cache.step(1)
    assert isinstance(specs.CacheFull("x"), RuntimeError)
    assert cache.seq_lens.tolist() == [4, 4] and cache.blocks_free == 1
    cache.reset([1])  # a finished request frees its blocks: the other row goes on
    view = cache.select([0])
    new, seen = _forward(view, 2, seed=1)
    assert torch.equal(seen[0][0], torch.cat([first[0][0], new[0][0]], dim=1))


def test_update_needs_its_step_and_advance_needs_the_blocks() -> None:
    cache = _cache()
    with pytest.raises(ValueError, match=r"update of 2 tokens after no step"):
        cache.update(0, _kv(2, 2, 0), _kv(2, 2, 0))
    cache.step(3)
    with pytest.raises(ValueError, match=r"update of 2 tokens after step\(3\)"):
        cache.update(0, _kv(2, 2, 0), _kv(2, 2, 0))
    with pytest.raises(ValueError, match=r"cannot commit 5 tokens to row 0: step\(5\) did not run"):
        cache.advance(5)


def test_rows_share_the_blocks_of_a_common_prompt_prefix() -> None:
    cache = _cache(num_blocks=8)
    prompt = list(range(100, 110))  # 10 tokens: 2 whole blocks and 2 tokens
    assert cache.share_prefix(0, prompt) == 0  # nothing cached yet
    written, _ = _forward(cache.select([0]), 10, seed=0)
    assert _used(cache) == 3
    assert cache.cached_prefix(prompt) == 8
    assert cache.cached_prefix(prompt[:9]) == 8
    assert cache.cached_prefix(prompt[:8]) == 4  # the last token is always left to compute
    assert cache.cached_prefix([7, *prompt[1:]]) == 0  # a different first token: a different prefix
    assert cache.share_prefix(1, [*prompt[:9], 55]) == 8
    assert cache.seq_lens.tolist() == [10, 8] and _used(cache) == 3  # linked, not copied
    new, seen = _forward(cache.select([1]), 2, seed=1)
    assert _used(cache) == 4
    for layer in range(L):
        assert torch.equal(seen[layer][0], torch.cat([written[layer][0, :, :8], new[layer][0]], dim=1))
    cache.reset([0])  # the shared blocks stay with row 1
    assert _used(cache) == 3 and cache.cached_prefix(prompt) == 8
    cache.reset([1])
    assert cache.blocks_free == 8 and cache.cached_prefix(prompt) == 0  # freed blocks are unpublished
    _forward(cache, 1, seed=2)
    with pytest.raises(ValueError, match="share_prefix starts an empty row, but row 0 holds 1 tokens"):
        cache.share_prefix(0, prompt)


def test_a_row_copies_a_shared_block_before_writing_into_it() -> None:
    """Beam search forks rows: both hold the same partly filled block; each then writes its own token."""
    cache = _cache(num_blocks=8)
    written, _ = _forward(cache, 6, seed=0)  # 1 full + 1 partial block per row
    cache.reorder(torch.tensor([0, 0]))
    assert _used(cache) == 2  # row 1's blocks were released, row 0's are held twice
    new, seen = _forward(cache, 1, seed=1)
    assert _used(cache) == 3  # one row copied the partial block, the last holder wrote in place
    for b in range(2):
        assert torch.equal(seen[0][b], torch.cat([written[0][0], new[0][b]], dim=1))


def test_a_copy_is_refused_like_a_new_block_when_none_is_free() -> None:
    cache = _cache(num_blocks=2)
    _forward(cache.select([0]), 6, seed=0)
    cache.reorder(torch.tensor([0, 0]))
    with pytest.raises(specs.CacheFull, match=r"needs 1 more blocks of 4 tokens \(rows \[\] grow, 1 shared blocks to copy\)"):
        cache.step(1)
    assert cache.seq_lens.tolist() == [6, 6]


def test_a_published_block_rewritten_after_evict_is_no_longer_offered() -> None:
    cache = _cache()
    prompt = list(range(9))
    cache.share_prefix(0, prompt)
    _forward(cache.select([0]), 9, seed=0)
    assert cache.cached_prefix(prompt) == 8
    cache.select([0]).evict(6)  # back to 3 tokens, inside the first block
    assert cache.cached_prefix(prompt) == 4  # the second block was freed; the first is still intact
    _forward(cache.select([0]), 1, seed=1)  # token 3 is no longer known to be prompt[3]
    assert cache.cached_prefix(prompt) == 0


def test_views_run_some_rows_and_write_through() -> None:
    cache = _cache(batch=3)
    view = cache.select([2, 0])
    assert view.layout.batch == 2 and view.max_len == 16 and view.bytes() == cache.bytes()
    written, _ = _forward(view, 5, seed=0)
    assert cache.seq_lens.tolist() == [5, 0, 5] and view.seq_lens.tolist() == [5, 5]
    _, seen = _forward(cache.select([0]), 1, seed=1)
    assert torch.equal(seen[0][0, :, :5], written[0][1])  # the parent's row 0 is the view's row 1
    view.reset([0])
    assert cache.seq_lens.tolist() == [6, 0, 0]
    with pytest.raises(ValueError, match="distinct rows"):
        cache.select([1, 1])
    with pytest.raises(ValueError, match="cannot select row 3"):
        cache.select([3])
