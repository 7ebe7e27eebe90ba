"""KV-cache implementations of ``specs.KVCache``, exercised directly (no model).

Model-level cache behaviour (decode == forward, rollback, beam reorder, left padding) lives in
``tests/model/test_decode_equals_forward.py``. Each test here takes a factory so a ring or paged cache can be
added to ``FACTORIES`` and run through the same checks. Everything compared here is copied data, so the
comparisons are exact (``torch.equal``), not toleranced.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import specs
from attn import StaticKVCache

L, B, HKV, D = 3, 2, 2, 4

Factory = Callable[..., specs.KVCache]
FACTORIES: dict[str, Factory] = {
    "static": lambda max_len, dtype=torch.float32: StaticKVCache(
        n_layers=L, batch=B, n_kv_heads=HKV, head_dim=D, max_len=max_len, dtype=dtype
    ),
}

pytestmark = pytest.mark.parametrize("name", sorted(FACTORIES))


def _kv(t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, HKV, t, D, generator=gen), torch.randn(B, HKV, t, D, generator=gen)


def _fill(cache, t: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Append ``t`` tokens to every layer; returns what was written per layer."""
    written = []
    for layer in range(L):
        k, v = _kv(t, seed * 100 + layer)
        cache.update(layer, k, v)
        written.append((k, v))
    return written


def test_is_a_kv_cache(name: str) -> None:
    cache = FACTORIES[name](8)
    assert isinstance(cache, specs.KVCache)
    assert cache.max_len == 8
    assert cache.seq_len == 0
    assert cache.seq_lens.tolist() == [0] * B


def test_update_returns_everything_stored_so_far(name: str) -> None:
    cache = FACTORIES[name](10)
    history: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {layer: [] for layer in range(L)}
    for step, t in enumerate([3, 1, 4]):
        for layer in range(L):
            k, v = _kv(t, step * 10 + layer)
            history[layer].append((k, v))
            k_all, v_all = cache.update(layer, k, v)
            expected_len = sum(kv[0].shape[2] for kv in history[layer])
            assert k_all.shape == v_all.shape == (B, HKV, expected_len, D)
            assert torch.equal(k_all, torch.cat([kv[0] for kv in history[layer]], dim=2))
            assert torch.equal(v_all, torch.cat([kv[1] for kv in history[layer]], dim=2))
    assert cache.seq_len == 8


def test_seq_len_advances_once_every_layer_is_updated(name: str) -> None:
    """New queries sit at ``seq_len`` read before the update; mid-step, the layers not yet updated hold it."""
    cache = FACTORIES[name](10)
    _fill(cache, 4, seed=0)
    k, v = _kv(2, seed=1)
    cache.update(0, k, v)
    assert cache.seq_len == 4  # layers 1.. still hold 4 tokens
    for layer in range(1, L):
        cache.update(layer, k, v)
    assert cache.seq_len == 6
    assert cache.seq_lens.tolist() == [6] * B
    assert cache.seq_lens.dtype == torch.int64


def test_overflow_error_names_max_len(name: str) -> None:
    cache = FACTORIES[name](5)
    _fill(cache, 4, seed=0)
    k, v = _kv(2, seed=1)
    with pytest.raises(ValueError, match=r"max_len 5"):
        cache.update(0, k, v)
    assert cache.seq_len == 4  # a refused update stores nothing


def test_wrong_shapes_are_refused(name: str) -> None:
    cache = FACTORIES[name](5)
    k, v = _kv(2, seed=0)
    with pytest.raises(specs.ShapeError, match="B"):
        cache.update(0, k[:1], v[:1])
    with pytest.raises(specs.ShapeError, match="Hkv"):
        cache.update(0, k[:, :1], v[:, :1])
    with pytest.raises(specs.ShapeError):
        cache.update(0, k, v[..., :2])


def test_evict_rolls_back_and_new_tokens_overwrite(name: str) -> None:
    cache = FACTORIES[name](10)
    kept = _fill(cache, 5, seed=0)
    _fill(cache, 3, seed=1)
    cache.evict(3)
    assert cache.seq_len == 5
    assert cache.seq_lens.tolist() == [5] * B
    k_new, v_new = _kv(2, seed=2)
    k_all, v_all = cache.update(0, k_new, v_new)
    assert torch.equal(k_all, torch.cat([kept[0][0], k_new], dim=2))
    assert torch.equal(v_all, torch.cat([kept[0][1], v_new], dim=2))


def test_evict_bounds(name: str) -> None:
    cache = FACTORIES[name](10)
    _fill(cache, 3, seed=0)
    with pytest.raises(ValueError):
        cache.evict(4)
    with pytest.raises(ValueError):
        cache.evict(-1)
    cache.evict(0)
    assert cache.seq_len == 3
    cache.evict(3)
    assert cache.seq_len == 0


def test_reset_keeps_memory_and_starts_over(name: str) -> None:
    cache = FACTORIES[name](6)
    _fill(cache, 6, seed=0)
    size = cache.bytes()
    cache.reset()
    assert cache.seq_len == 0
    assert cache.bytes() == size
    written = _fill(cache, 6, seed=1)  # the whole capacity is usable again
    k_all, _ = cache.update(L - 1, *_kv(0, seed=2))
    assert torch.equal(k_all, written[L - 1][0])


def test_reorder_copies_rows(name: str) -> None:
    cache = FACTORIES[name](6)
    written = _fill(cache, 3, seed=0)
    order = torch.tensor([1, 1])
    cache.reorder(order)
    for layer in range(L):
        k_all, v_all = cache.update(layer, *_kv(0, seed=1))
        assert torch.equal(k_all, written[layer][0][order])
        assert torch.equal(v_all, written[layer][1][order])
    with pytest.raises(ValueError):
        cache.reorder(torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes(name: str, dtype: torch.dtype) -> None:
    max_len = 7
    cache = FACTORIES[name](max_len, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    assert cache.bytes() == 2 * L * B * HKV * max_len * D * itemsize


def test_invalid_sizes_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="max_len"):
        FACTORIES[name](0)


def test_an_interrupted_step_is_overwritten_by_the_next(name):
    cache = FACTORIES[name](16)
    _fill(cache, 3, seed=1)
    cache.update(0, *_kv(2, seed=2))  # a forward that stopped after layer 0
    assert cache.seq_len == 3
    retry = _fill(cache, 2, seed=3)
    assert cache.seq_len == 5
    for layer, (k, v) in enumerate(retry):
        k_all, v_all = cache.update(layer, *_kv(1, seed=4 + layer))
        assert torch.equal(k_all[:, :, 3:5], k) and torch.equal(v_all[:, :, 3:5], v)


def test_wrong_dtype_names_the_cache_dtype(name):
    cache = FACTORIES[name](8)
    k, v = _kv(1, seed=0)
    with pytest.raises(ValueError, match=r"KV cache holds torch.float32 but layer 0 gives torch.bfloat16"):
        cache.update(0, k.bfloat16(), v.bfloat16())
