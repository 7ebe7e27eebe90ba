"""CrossAttention against an explicit reference, with a memory padding mask and T != S.

Tolerance: float32; the reference does the same math with ``-inf`` masking and per-head K/V indexing, so the
outputs (|out| ~ 10 with the large weights used here) agree to a few ulps (observed ~1e-6). ``ATOL = 1e-5``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import specs
from attn import CrossAttention
from tensor.masks import padding_mask

ATOL = 1e-5  # float32; see the module docstring
C, T, S = 32, 3, 7


def _layer(**attention) -> CrossAttention:
    cfg = specs.AttentionConfig(**{"n_heads": 4, "n_kv_heads": 2, "bias": True, **attention})
    torch.manual_seed(0)
    layer = CrossAttention(cfg, C).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.normal_(0.0, 0.1 if name.endswith("bias") else 0.3)
    return layer


def reference(layer: CrossAttention, x: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor | None):
    """``pad`` is ``(B, S)`` with True = padding; no causal rule."""
    b, t, _ = x.shape
    s = memory.shape[1]
    hq, hkv, d = layer.n_heads, layer.n_kv_heads, layer.head_dim
    q = F.linear(x, layer.wq.weight, layer.wq.bias).view(b, t, hq, d).transpose(1, 2)
    k = F.linear(memory, layer.wk.weight, layer.wk.bias).view(b, s, hkv, d).transpose(1, 2)
    v = F.linear(memory, layer.wv.weight, layer.wv.bias).view(b, s, hkv, d).transpose(1, 2)
    group = hq // hkv
    k = torch.stack([k[:, h // group] for h in range(hq)], dim=1)
    v = torch.stack([v[:, h // group] for h in range(hq)], dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return F.linear(out.transpose(1, 2).reshape(b, t, hq * d), layer.wo.weight, layer.wo.bias)


def _inputs(b: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x, memory = torch.randn(b, T, C, generator=gen), torch.randn(b, S, C, generator=gen)
    pad = torch.zeros(b, S, dtype=torch.bool)
    pad[0, 4:] = True  # row 0: 3 padding slots at the end
    pad[1, :2] = True  # row 1: 2 at the start
    return x, memory, pad


@pytest.mark.parametrize("kernel", ["manual", "sdpa", "auto"])
@torch.no_grad()
def test_matches_reference_with_memory_padding(kernel: str) -> None:
    layer = _layer(kernel=kernel)
    x, memory, pad = _inputs()
    out = layer(x, layer.project_memory(memory), memory_allow_mask=padding_mask(pad))
    assert out.shape == (3, T, C)
    torch.testing.assert_close(out, reference(layer, x, memory, pad), atol=ATOL, rtol=0)
    # The mask matters: ignoring it changes the padded rows.
    assert (out[:2] - reference(layer, x, memory, None)[:2]).abs().max() > 1e-3


@torch.no_grad()
def test_without_mask_and_mha() -> None:
    layer = _layer(n_kv_heads=4)
    x, memory, _ = _inputs()
    torch.testing.assert_close(
        layer(x, layer.project_memory(memory)), reference(layer, x, memory, None), atol=ATOL, rtol=0
    )


@torch.no_grad()
def test_memory_projected_once_serves_every_step() -> None:
    """Decoder steps reuse one ``project_memory``: token-by-token equals all queries at once (no causal rule),
    and equals re-projecting the memory at each step."""
    layer = _layer()
    x, memory, pad = _inputs()
    allow = padding_mask(pad)
    memory_kv = layer.project_memory(memory)
    k, v = memory_kv
    assert k.shape == v.shape == (3, 2, S, layer.head_dim)
    all_at_once = layer(x, memory_kv, memory_allow_mask=allow)
    reused = torch.cat([layer(x[:, i : i + 1], memory_kv, memory_allow_mask=allow) for i in range(T)], dim=1)
    recomputed = torch.cat(
        [layer(x[:, i : i + 1], layer.project_memory(memory), memory_allow_mask=allow) for i in range(T)], dim=1
    )
    torch.testing.assert_close(reused, all_at_once, atol=ATOL, rtol=0)
    assert torch.equal(reused, recomputed)  # the same projection twice is bitwise the same
    assert torch.equal(memory_kv[0], k) and torch.equal(memory_kv[1], v)  # attending does not modify it


@pytest.mark.parametrize("kernel", ["manual", "sdpa"])
@torch.no_grad()
def test_fully_padded_memory_gives_zero_attention(kernel: str) -> None:
    """A query with no visible key attends to nothing: zeros before ``wo``, so the output is ``wo``'s bias."""
    layer = _layer(kernel=kernel)
    x, memory, pad = _inputs()
    pad[2] = True
    out = layer(x, layer.project_memory(memory), memory_allow_mask=padding_mask(pad))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[2], layer.wo.bias.expand(T, C), atol=0, rtol=0)


def test_shape_errors_name_the_tensor() -> None:
    layer = _layer()
    x, memory, _ = _inputs()
    with pytest.raises(specs.ShapeError, match=r"^memory: "):
        layer.project_memory(memory[0])
    with pytest.raises(specs.ShapeError, match=r"^x: "):
        layer(x[0], layer.project_memory(memory))
