"""GatedDeltaNet against ``transformers``' ``Qwen3NextGatedDeltaNet`` (random tiny config, its weights copied into
ours), in one prefill and token by token through each side's cache; and our own padding and cache behaviour.

Tolerance: float32. Both sides run the same math in a different order (our chunked form vs theirs, a grouped
convolution on other slices); outputs are O(1) and agree to ~2e-6 (at 70 tokens, past Qwen3-Next's 64-token
chunk; a float64 run puts both sides within 2e-6 of it), so ``ATOL = 1e-5`` has headroom while a wrong row
permutation, gate or decay is off by > 1e-2.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import specs
from attn import GatedDeltaNet, HybridCache
from attn.context import AttentionContext
from specs.cache import CacheStep
from tensor.masks import padding_mask, self_visible

ATOL = 1e-5  # float32; see the module docstring
C = 32
HEADS, VALUE_HEADS, DK, DV, KERNEL = 2, 4, 8, 6, 4


def _cfg(**overrides: int) -> specs.DeltaNetConfig:
    fields = dict(n_heads=HEADS, n_value_heads=VALUE_HEADS, head_k_dim=DK, head_v_dim=DV, conv_kernel=KERNEL, chunk_size=8)
    return specs.DeltaNetConfig(**{**fields, **overrides})


def _layer(seed: int = 0, **overrides: int) -> GatedDeltaNet:
    torch.manual_seed(seed)
    layer = GatedDeltaNet(_cfg(**overrides), C, layer_idx=0, norm_eps=1e-6).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("dt_bias", "norm.weight"):
                p.add_(0.3 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0.0, 0.15)
    return layer


def _cache(layer: GatedDeltaNet, batch: int) -> HybridCache:
    """A cache with the layer as layer 0 and one attention layer after it (which these tests never touch)."""
    return HybridCache(
        n_layers=2, attention_layers=[1], state_shapes=layer.state_shapes(), batch=batch, n_kv_heads=1, head_dim=4,
        max_len=64,
    )


def _run(layer: GatedDeltaNet, x: torch.Tensor, cache: HybridCache | None = None, mask: torch.Tensor | None = None):
    step = cache.step(x.shape[1]) if cache is not None else CacheStep(q_offset=0)
    out = layer(x, AttentionContext(cache=cache, step=step, allow_mask=mask))
    if cache is not None:
        cache.advance(x.shape[1])
    return out


# ------------------------------------------------------------------------------------------ transformers parity


def _hf_pair(seed: int = 0):
    from transformers import Qwen3NextConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    hf_cfg = Qwen3NextConfig(
        hidden_size=C, linear_num_key_heads=HEADS, linear_num_value_heads=VALUE_HEADS, linear_key_head_dim=DK,
        linear_value_head_dim=DV, linear_conv_kernel_dim=KERNEL, rms_norm_eps=1e-6, num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"], num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, vocab_size=16, num_experts=2, num_experts_per_tok=1, intermediate_size=16,
        moe_intermediate_size=16, shared_expert_intermediate_size=16,
    )
    theirs = Qwen3NextGatedDeltaNet(hf_cfg, layer_idx=0).eval()
    ours = _layer(seed)
    _copy_into_hf(ours, theirs)
    return hf_cfg, ours, theirs


@torch.no_grad()
def _copy_into_hf(ours: GatedDeltaNet, theirs: nn.Module) -> None:
    """Our flat ``[q | k | v | z]`` and ``[b | a]`` rows, regrouped per key head as Qwen3-Next stores them."""
    group = VALUE_HEADS // HEADS
    q, k, v, z = ours.in_proj_qkvz.weight.split([HEADS * DK, HEADS * DK, VALUE_HEADS * DV, VALUE_HEADS * DV])
    per_head = [x.reshape(HEADS, -1, C) for x in (q, k, v, z)]  # v, z: (Hk, group * Dv, C), value heads in order
    theirs.in_proj_qkvz.weight.copy_(torch.cat(per_head, dim=1).reshape(-1, C))
    b, a = ours.in_proj_ba.weight.chunk(2)
    theirs.in_proj_ba.weight.copy_(torch.cat([b.reshape(HEADS, group, C), a.reshape(HEADS, group, C)], 1).reshape(-1, C))
    theirs.conv1d.weight.copy_(ours.conv_weight[:, None, :])
    theirs.dt_bias.copy_(ours.dt_bias)
    theirs.A_log.copy_(ours.a_log)
    theirs.norm.weight.copy_(ours.norm.weight)
    theirs.out_proj.weight.copy_(ours.wo.weight)


@torch.no_grad()
@pytest.mark.parametrize("length", [1, 13, 70])
def test_prefill_matches_qwen3_next(length: int) -> None:
    _, ours, theirs = _hf_pair()
    x = torch.randn(2, length, C, generator=torch.Generator().manual_seed(length))
    want = theirs(x)
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(_run(ours, x), want, atol=ATOL, rtol=0)


@torch.no_grad()
def test_token_by_token_matches_qwen3_next_with_its_cache() -> None:
    from transformers import DynamicCache

    hf_cfg, ours, theirs = _hf_pair(seed=1)
    x = torch.randn(2, 11, C, generator=torch.Generator().manual_seed(5))
    hf_cache, cache = DynamicCache(config=hf_cfg), _cache(ours, 2)
    pieces = [(0, 5), *((t, t + 1) for t in range(5, 11))]  # a prefill, then one token at a time
    for lo, hi in pieces:
        want = theirs(x[:, lo:hi], cache=hf_cache)
        torch.testing.assert_close(_run(ours, x[:, lo:hi], cache), want, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache.state(0)["recurrent"], hf_cache.get_recurrent_state(0, state_idx=0), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ our own behaviour


@torch.no_grad()
def test_decoding_in_pieces_equals_one_forward() -> None:
    layer = _layer(2, chunk_size=4)
    x = torch.randn(3, 19, C, generator=torch.Generator().manual_seed(0))
    whole = _run(layer, x)
    cache = _cache(layer, 3)
    steps = [_run(layer, x[:, lo:hi], cache) for lo, hi in ((0, 7), (7, 8), (8, 9), (9, 15), (15, 16), (16, 19))]
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=ATOL, rtol=0)


@torch.no_grad()
def test_left_padding_leaves_no_trace() -> None:
    """Rows of 9, 4 and 1 real tokens, left-padded to 9 and decoded on: each row equals its unpadded run,
    from the padded prefill through the decoding steps (the mask covers every key, as ``serve`` builds it)."""
    layer = _layer(3)
    lengths, width, n_new = [9, 4, 1], 9, 3
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randn(n + n_new, C, generator=gen) for n in lengths]
    x = torch.full((3, width + n_new, C), 7.0)  # padding that would show if it leaked
    pad = torch.zeros(3, width + n_new, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        x[i, width - n :] = row
        pad[i, : width - n] = True
    cache = _cache(layer, 3)
    out = [_run(layer, x[:, :width], cache, padding_mask(pad[:, :width]))]
    for t in range(width, width + n_new):
        out.append(_run(layer, x[:, t : t + 1], cache, padding_mask(pad[:, : t + 1])))
    stepped = torch.cat(out, dim=1)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        torch.testing.assert_close(stepped[i, width - n :], _run(layer, row[None])[0], atol=ATOL, rtol=0)
    # Without the mask the padding does leak: the test can fail.
    assert (_run(layer, x[1:2, :width])[0, -1] - stepped[1, width - 1]).abs().max() > 1e-2


def test_self_visible_reads_each_new_token_at_its_position() -> None:
    pad = torch.tensor([[True, False, False, False], [True, True, True, False]])
    allow = padding_mask(pad)  # (B, 1, 1, Tk)
    assert self_visible(allow, 2, 4).tolist() == (~pad).tolist()
    assert self_visible(allow, 2, 2, q_offset=2).tolist() == (~pad[:, 2:]).tolist()
    assert self_visible(allow, 2, 1, q_offset=torch.tensor([0, 3])).tolist() == [[False], [True]]


@torch.no_grad()
def test_reset_and_reorder_move_the_states_with_the_rows() -> None:
    layer = _layer(4)
    x = torch.randn(3, 6, C, generator=torch.Generator().manual_seed(2))
    cache = _cache(layer, 3)
    _run(layer, x[:, :5], cache)
    cache.reorder(torch.tensor([2, 2, 0]))
    cache.reset([1])
    got = _run(layer, torch.stack([x[2, 5:], x[1, 5:], x[0, 5:]]), cache)
    fresh = _run(layer, x[1:2, 5:])[0]
    torch.testing.assert_close(got[0], _run(layer, x[2:3])[0, 5:], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1], fresh, atol=ATOL, rtol=0)
    torch.testing.assert_close(got[2], _run(layer, x[0:1])[0, 5:], atol=ATOL, rtol=0)


def test_cache_refuses_what_it_cannot_do() -> None:
    layer = _layer()
    cache = _cache(layer, 2)
    cache.evict(0)  # dropping nothing is fine
    with pytest.raises(ValueError, match="cannot evict"):
        cache.evict(1)
    with pytest.raises(ValueError, match="linear-attention layer"):
        cache.update(0, torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))
    with pytest.raises(ValueError, match="softmax-attention layer"):
        cache.state(1)


def test_a_plain_kv_cache_is_refused() -> None:
    from attn import StaticKVCache

    layer = _layer()
    kv = StaticKVCache(n_layers=1, batch=1, n_kv_heads=1, head_dim=4, max_len=8)
    with pytest.raises(TypeError, match="recurrent state"):
        layer(torch.zeros(1, 2, C), AttentionContext(cache=kv, step=kv.step(2)))


def test_parameter_count_formula() -> None:
    for overrides in ({}, {"n_value_heads": 2, "head_v_dim": 8, "conv_kernel": 2}):
        layer = _layer(**overrides)
        assert sum(p.numel() for p in layer.parameters()) == layer.cfg.layer_parameters(C)
