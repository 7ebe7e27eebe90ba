"""Incremental decoding with a KV cache gives the logits of the full forward (STYLE.md section 2, item 7).

Every test takes a *cache factory* ``(model, batch, max_len) -> KVCache``, so each KVCache implementation
plugs into the same checks (DESIGN.md section 2: "interchangeable in every test"): the contiguous cache in
its eager mode and in its fixed-shape (compile-friendly) mode, and the paged cache (blocks of 4 tokens, so
every sequence here spans several, some partly filled); a ring cache adds one entry to ``CACHE_FACTORIES``. The main property runs on every registered kernel by name (pinned with
``kernel.use_kernel``), so which kernel is exercised never depends on what ``"auto"`` measured.

Tolerance: everything runs in float32. A cached step and the full forward do the same arithmetic except for
the reduction order of the attention matmuls/softmax over a different number of keys, so logits agree to a
few float32 ulps accumulated over the layers:
with |logit| up to ~4 the observed worst case is ~2e-6. ``ATOL = 1e-5`` keeps ~5x headroom, while a wrong
mask, position or cache slot moves logits by > 1e-3 (see ``test_the_property_is_not_vacuous``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernel
import model
import specs
from tensor.masks import padding_mask

ATOL = 1e-5  # float32; see the module docstring
RTOL = 0.0

CacheFactory = Callable[[torch.nn.Module, int, int], specs.KVCache]
PAGE = 4
CACHE_FACTORIES: dict[str, CacheFactory] = {
    "static": lambda m, batch, max_len: m.new_cache(batch, max_len),
    "static_fixed_shapes": lambda m, batch, max_len: m.new_cache(batch, max_len, fixed_shapes=True),
    "paged": lambda m, batch, max_len: m.new_cache(batch, max_len, paged=specs.PagedSpec(block_size=PAGE)),
}
# How many keys ``update`` returns once ``end`` tokens are written (an allow mask must cover them): the slots in
# use, every slot, or the pages in use.
KEYS_SEEN: dict[str, Callable[[int, int], int]] = {
    "static": lambda end, max_len: end,
    "static_fixed_shapes": lambda end, max_len: max_len,
    "paged": lambda end, max_len: -(-end // PAGE) * PAGE,
}

# name -> (preset, overrides). init_std is raised from 0.02 so attention is far from uniform and a wrong
# mask/position shows up clearly; the 1-D parameters (norm scales, biases) are randomised by ``_perturb``.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "llama-gqa-rope": ("llama-tiny", []),
    "llama-mqa": ("llama-tiny", ["attention.n_kv_heads=1"]),
    "llama-mha": ("llama-tiny", ["attention.n_kv_heads=4"]),
    "gpt-learned-tied": ("gpt-shakespeare-char", []),
    "gpt-biases": ("gpt-shakespeare-char", ["attention.bias=true", "mlp.bias=true", "norm_bias=true"]),
    "sinusoidal": ("gpt-shakespeare-char", ["positions=sinusoidal"]),
    "qk-norm": ("llama-tiny", ["attention.qk_norm=true"]),
    "softcap": ("llama-tiny", ["attention.softcap=30"]),  # under "auto" only "manual" can serve softcap
    "window": ("llama-tiny", ["attention.window=5"]),  # sequences below are longer than the window
    "post-norm": ("llama-tiny", ["residual=post"]),
    # dropless token-choice MoE on layer 1 (layer 0 dense): each token's routing depends on that token alone
    "moe": ("llama-tiny", ["moe={n_experts: 4, top_k: 2, expert_hidden: 48, n_shared_experts: 1, shared_expert_gate: true, every: 2}"]),
}


def _perturb(m: torch.nn.Module, seed: int) -> None:
    """Random norm scales (around 1) and biases (around 0), so they are not invisible identities/zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            if name.endswith("bias"):
                p.copy_(noise)
            elif p.dim() == 1:
                p.copy_(1.0 + noise)


@functools.cache
def _model(variant: str) -> torch.nn.Module:
    """Built once per variant; tests treat it as read-only."""
    preset, overrides = VARIANTS[variant]
    cfg = specs.apply_overrides(specs.load_preset(preset), [*overrides, "init_std=0.08"])
    torch.manual_seed(0)
    m = model.build(cfg).eval()
    _perturb(m, seed=1)
    return m


def _ids(m: torch.nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, m.config.vocab_size, (batch, length), generator=gen)


def _decode(m, cache, ids: torch.Tensor, chunks: list[int], **kwargs) -> torch.Tensor:
    """Feed ``ids`` through ``cache`` in chunks of the given sizes; the concatenated per-step logits."""
    out, start = [], 0
    for size in chunks:
        out.append(m(ids[:, start : start + size], cache=cache, **kwargs))
        start += size
    return torch.cat(out, dim=1)


def _kernel_variants(variants) -> list:
    """(kernel, variant) pairs where the kernel can serve the variant's config (sdpa has no softcap) on the CPU
    (triton_flash only under TRITON_INTERPRET=1)."""
    pairs = []
    for name in kernel.available():
        if "cpu" not in kernel.capabilities(name).devices:
            continue
        for variant in variants:
            preset, overrides = VARIANTS[variant]
            needs = specs.apply_overrides(specs.load_preset(preset), overrides).attention.kernel_features()
            if needs <= kernel.capabilities(name).features:
                pairs.append(pytest.param(name, variant, id=f"{name}-{variant}"))
    return pairs


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@pytest.mark.parametrize(
    "chunks",
    [[6, 1, 1, 1, 1, 1, 1], [5, 3, 1, 4], [1, 2, 7, 2]],
    ids=["prefill-then-single-steps", "mixed-chunks", "single-first"],
)
@pytest.mark.parametrize(("kernel_name", "variant"), _kernel_variants(sorted(VARIANTS)))
@torch.no_grad()
def test_cached_decode_equals_full_forward(kernel_name: str, variant: str, chunks: list[int], cache_name: str) -> None:
    """A prefill, then single-token steps and multi-token chunks on top of a cache (Tq > 1, Tq != Tk)."""
    m = _model(variant)
    total = sum(chunks)
    ids = _ids(m, batch=2, length=total, seed=total)
    with kernel.use_kernel(kernel_name):
        full = m(ids)
        cache = CACHE_FACTORIES[cache_name](m, 2, total + 3)
        stepped = _decode(m, cache, ids, chunks)
    assert cache.seq_lens.tolist() == [total, total]
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=RTOL)


@functools.cache
def _hypothesis_reference() -> tuple[torch.Tensor, torch.Tensor]:
    m = _model("llama-gqa-rope")
    ids = _ids(m, batch=2, length=24, seed=24)
    with torch.no_grad():
        return ids, m(ids)  # causal: logits of any prefix are the first positions of these


def _at_most_24(chunks: list[int]) -> list[int]:
    """The longest prefix of ``chunks`` whose sizes sum to <= 24 (never empty: a chunk is at most 8)."""
    kept, total = [], 0
    for size in chunks:
        if total + size > 24:
            break
        kept.append(size)
        total += size
    return kept


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=24).map(_at_most_24))
def test_any_chunking_schedule_equals_full_forward(cache_name: str, chunks: list[int]) -> None:
    m = _model("llama-gqa-rope")
    ids, full = _hypothesis_reference()
    total = sum(chunks)
    with torch.no_grad():
        stepped = _decode(m, CACHE_FACTORIES[cache_name](m, 2, 24), ids, chunks)
    torch.testing.assert_close(stepped, full[:, :total], atol=ATOL, rtol=RTOL)


@torch.no_grad()
def test_the_property_is_not_vacuous() -> None:
    """The checks above could fail: dropping the cache, or restarting positions, changes logits by >> ATOL."""
    m = _model("llama-gqa-rope")
    ids = _ids(m, batch=2, length=12, seed=3)
    full = m(ids)
    no_cache = m(ids[:, 8:], positions=torch.arange(8, 12).expand(2, -1))  # right positions, no history
    assert (no_cache - full[:, 8:]).abs().max() > 1e-3
    cache = m.new_cache(2, 12)
    m(ids[:, :8], cache=cache)
    wrong_positions = m(ids[:, 8:], cache=cache, positions=torch.arange(4).expand(2, -1))
    assert (wrong_positions - full[:, 8:]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------- batch with left padding

# The window counts cache slots; with padding only on the left, real tokens are contiguous slots, so a window
# over slots is the same window over real positions and the comparison holds for "window" too.
PADDED_VARIANTS = [
    "llama-gqa-rope",
    "llama-mqa",
    "gpt-learned-tied",
    "sinusoidal",
    "qk-norm",
    "softcap",
    "window",
    "post-norm",
]


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@pytest.mark.parametrize(("kernel_name", "variant"), _kernel_variants(PADDED_VARIANTS))
@torch.no_grad()
def test_left_padded_batch_decode_equals_unpadded_forward(kernel_name: str, variant: str, cache_name: str) -> None:
    """Rows of different lengths, left-padded; each row's real logits equal its own unpadded full forward.

    The allow mask comes from the key padding (``padding_mask`` -> ``(B, 1, 1, Tk)``, covering cached and new
    keys); positions count real tokens (``cumsum - 1``, clamped at 0 on the padding).
    """
    m = _model(variant)
    prompt_lens, n_new = [7, 3, 5], 5
    width = max(prompt_lens)
    rows = [_ids(m, batch=1, length=p + n_new, seed=10 + i)[0] for i, p in enumerate(prompt_lens)]
    batch = len(rows)
    ids = torch.zeros(batch, width + n_new, dtype=torch.int64)
    pad = torch.zeros(batch, width + n_new, dtype=torch.bool)  # True = padding (specs.Batch convention)
    for i, (row, p) in enumerate(zip(rows, prompt_lens)):
        ids[i, width - p :] = row
        pad[i, : width - p] = True
    positions = ((~pad).long().cumsum(dim=1) - 1).clamp(min=0)

    cache = CACHE_FACTORIES[cache_name](m, batch, width + n_new)
    steps, start = [], 0
    for size in [width, 2, 1, 2]:  # prefill the padded prompts, then a chunk, a single step, a chunk
        end = start + size
        # The mask covers every key the cache returns (KEYS_SEEN); slots past what is written are excluded by
        # the cache's key lengths.
        keys = KEYS_SEEN[cache_name](end, width + n_new)
        mask = padding_mask(torch.nn.functional.pad(pad[:, :end], (0, keys - end), value=True))
        with kernel.use_kernel(kernel_name):
            steps.append(m(ids[:, start:end], cache=cache, positions=positions[:, start:end], attn_mask=mask))
        start = end
    stepped = torch.cat(steps, dim=1)
    assert start == width + n_new

    for i, (row, p) in enumerate(zip(rows, prompt_lens)):
        reference = m(row[None])[0]  # (p + n_new, V), no padding at all
        torch.testing.assert_close(stepped[i, width - p :], reference, atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------- cache operations seen by a model


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@torch.no_grad()
def test_cache_handle_satisfies_the_protocol(cache_name: str) -> None:
    m = _model("llama-gqa-rope")
    cfg = m.config
    cache = CACHE_FACTORIES[cache_name](m, 3, 10)
    assert isinstance(cache, specs.KVCache)
    assert cache.max_len == 10
    assert cache.seq_lens.tolist() == [0, 0, 0]
    m(_ids(m, 3, 4, seed=0), cache=cache)
    assert cache.seq_lens.tolist() == [4, 4, 4]
    assert cache.seq_lens.dtype == torch.int64
    m(_ids(m, 3, 1, seed=1), cache=cache)
    assert cache.seq_lens.tolist() == [5, 5, 5]
    itemsize = torch.finfo(torch.float32).bits // 8
    per_token = 2 * cfg.n_layers * cfg.attention.kv_heads * cfg.head_dim * itemsize
    if cache_name == "paged":  # by default, blocks for every row to reach max_len: 3 pages of 4 for 10 tokens
        assert cache.bytes() == per_token * 3 * 3 * PAGE
    else:
        assert cache.bytes() == per_token * 3 * 10 + 3 * 8


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@torch.no_grad()
def test_overflow_is_refused_before_anything_changes(cache_name: str) -> None:
    m = _model("llama-gqa-rope")
    cache = CACHE_FACTORIES[cache_name](m, 1, 6)
    m(_ids(m, 1, 5, seed=0), cache=cache)
    with pytest.raises((ValueError, RuntimeError), match="full"):
        m(_ids(m, 1, 2, seed=1), cache=cache)
    assert cache.seq_lens.tolist() == [5]


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@pytest.mark.parametrize("variant", ["llama-gqa-rope", "window", "gpt-learned-tied"])
@torch.no_grad()
def test_evict_rollback_then_redecode(variant: str, cache_name: str) -> None:
    """Speculative decoding: draft tokens are decoded, rejected (evicted), and other tokens decoded instead."""
    m = _model(variant)
    prefix, draft, accepted = _ids(m, 2, 8, seed=0), _ids(m, 2, 4, seed=1), _ids(m, 2, 3, seed=2)
    cache = CACHE_FACTORIES[cache_name](m, 2, 16)
    m(prefix, cache=cache)
    first_draft = m(draft, cache=cache)
    cache.evict(4)
    assert cache.seq_lens.tolist() == [8, 8]
    # Re-decoding the same draft after the rollback gives the very same logits.
    torch.testing.assert_close(m(draft, cache=cache), first_draft, atol=ATOL, rtol=RTOL)
    cache.evict(4)
    # A different continuation sees no trace of the rejected draft.
    stepped = torch.cat([m(accepted[:, :1], cache=cache), m(accepted[:, 1:], cache=cache)], dim=1)
    full = m(torch.cat([prefix, accepted], dim=1))[:, 8:]
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@torch.no_grad()
def test_reset_forgets_everything(cache_name: str) -> None:
    m = _model("llama-gqa-rope")
    cache = CACHE_FACTORIES[cache_name](m, 2, 12)
    m(_ids(m, 2, 10, seed=0), cache=cache)
    cache.reset()
    assert cache.seq_lens.tolist() == [0, 0]
    ids = _ids(m, 2, 9, seed=1)
    torch.testing.assert_close(_decode(m, cache, ids, [4, 1, 4]), m(ids), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("cache_name", sorted(CACHE_FACTORIES))
@pytest.mark.parametrize("variant", ["llama-gqa-rope", "gpt-learned-tied"])
@torch.no_grad()
def test_reorder_for_beam_search(variant: str, cache_name: str) -> None:
    """Reordering rows then decoding equals decoding the reordered batch from scratch."""
    m = _model(variant)
    prefix, step = _ids(m, 3, 6, seed=0), _ids(m, 3, 2, seed=1)
    cache = CACHE_FACTORIES[cache_name](m, 3, 10)
    m(prefix, cache=cache)
    beams = torch.tensor([2, 0, 0])  # beam 1 dies, beam 0 forks, beam 2 moves to row 0
    cache.reorder(beams)
    assert cache.seq_lens.tolist() == [6, 6, 6]
    stepped = _decode(m, cache, step, [1, 1])
    full = m(torch.cat([prefix[beams], step], dim=1))[:, 6:]
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=RTOL)
