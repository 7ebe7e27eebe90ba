"""SelfAttention against an explicit reference written here: projections, QK-norm, RoPE, repeated K/V heads,
masked softmax, output projection.

Tolerance: float32 throughout. The reference does the same math in a different order (one matmul per head
group, ``-inf`` masking), so results agree to float32 rounding: outputs reach ~15 here (ulp ~1e-6) and the
observed worst case is ~2e-6. ``ATOL = 1e-5`` leaves ~5x headroom, while a wrong head mapping, mask or RoPE
order is off by > 1e-3 (asserted where it matters).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import specs
from attn import SelfAttention, StaticKVCache
from attn.context import AttentionContext
from tensor.rope import rope_cos_sin, rope_inv_freq

ATOL = 1e-5  # float32; see the module docstring
C = 32


def _layer(seed: int = 0, **attention) -> SelfAttention:
    cfg = specs.AttentionConfig(**{"n_heads": 4, **attention})
    torch.manual_seed(seed)
    layer = SelfAttention(cfg, C, layer_idx=0, norm_eps=1e-5).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif p.dim() == 1:  # QK-norm scales
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3)  # large enough that attention is far from uniform
    return layer


def _rope(t: int, head_dim: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_cos_sin(torch.arange(offset, offset + t), rope_inv_freq(head_dim, 10000.0))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def reference(layer: SelfAttention, x, *, rope=None, allow=None, window=None, softcap=None, qk_norm_first=True):
    """Written from the definitions, independently of ``attn`` and ``kernel``."""
    b, t, _ = x.shape
    hq, hkv, d = layer.n_heads, layer.n_kv_heads, layer.head_dim
    q = F.linear(x, layer.wq.weight, layer.wq.bias).view(b, t, hq, d).transpose(1, 2)
    k = F.linear(x, layer.wk.weight, layer.wk.bias).view(b, t, hkv, d).transpose(1, 2)
    v = F.linear(x, layer.wv.weight, layer.wv.bias).view(b, t, hkv, d).transpose(1, 2)
    norm_q = (lambda z: _rms(z, layer.q_norm.weight)) if layer.cfg.qk_norm else (lambda z: z)
    norm_k = (lambda z: _rms(z, layer.k_norm.weight)) if layer.cfg.qk_norm else (lambda z: z)
    rot = (lambda z: _rotate(z, *rope)) if rope is not None else (lambda z: z)
    if qk_norm_first:
        q, k = rot(norm_q(q)), rot(norm_k(k))
    else:
        q, k = norm_q(rot(q)), norm_k(rot(k))
    group = hq // hkv
    k = torch.stack([k[:, h // group] for h in range(hq)], dim=1)  # query head h reads kv head h // group
    v = torch.stack([v[:, h // group] for h in range(hq)], dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    visible = j <= i
    if window is not None:
        visible = visible & (j > i - window)
    if allow is not None:
        visible = visible & allow
    scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return F.linear(out.transpose(1, 2).reshape(b, t, hq * d), layer.wo.weight, layer.wo.bias)


def _x(b: int = 2, t: int = 7, seed: int = 5) -> torch.Tensor:
    return torch.randn(b, t, C, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kernel", ["manual", "sdpa", "auto"])
@pytest.mark.parametrize("n_kv_heads", [1, 2, 4], ids=["mqa", "gqa", "mha"])
@pytest.mark.parametrize("bias", [False, True])
@torch.no_grad()
def test_matches_reference(n_kv_heads: int, bias: bool, kernel: str) -> None:
    layer = _layer(n_kv_heads=n_kv_heads, bias=bias, kernel=kernel)
    x = _x()
    rope = _rope(7, layer.head_dim)
    torch.testing.assert_close(layer(x, AttentionContext(rope=rope)), reference(layer, x, rope=rope), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kernel", ["manual", "sdpa"])
@torch.no_grad()
def test_window_and_mask_match_reference(kernel: str) -> None:
    layer = _layer(n_kv_heads=2, window=3, kernel=kernel)
    x = _x(t=9)
    allow = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    allow[0, ..., :2] = False  # row 0: two left-padding slots
    out = layer(x, AttentionContext(allow_mask=allow))
    expected = reference(layer, x, allow=allow, window=3)
    # Row 0's first two queries see no key: the contract gives zeros before ``wo`` (the reference gives NaN).
    torch.testing.assert_close(out[0, 2:], expected[0, 2:], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1], expected[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[0, :2], torch.zeros(2, C), atol=0, rtol=0)


@torch.no_grad()
def test_softcap_matches_reference() -> None:
    layer = _layer(n_kv_heads=2, softcap=2.0)  # a small cap, so it actually bends the logits
    x = _x()
    torch.testing.assert_close(layer(x), reference(layer, x, softcap=2.0), atol=ATOL, rtol=0)
    assert (layer(x) - reference(layer, x)).abs().max() > 1e-2


@torch.no_grad()
def test_gqa_query_head_h_reads_kv_head_h_over_group() -> None:
    """Make each KV head's values a constant (its index + 1), and wo the identity: head h's output shows
    which KV head it read. Grouping is contiguous (heads 0-3 -> kv 0, 4-7 -> kv 1), not round-robin."""
    cfg = specs.AttentionConfig(n_heads=8, n_kv_heads=2, bias=True)
    layer = SelfAttention(cfg, 32, layer_idx=0).eval()  # head_dim 4
    layer.wv.weight.zero_()
    layer.wv.bias.copy_(torch.arange(1.0, 3.0).repeat_interleave(4))
    layer.wo.weight.copy_(torch.eye(32))
    layer.wo.bias.zero_()
    out = layer(torch.randn(1, 5, 32)).view(1, 5, 8, 4)
    expected = torch.tensor([1.0, 1, 1, 1, 2, 2, 2, 2])[None, None, :, None].expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)  # a convex mix of one constant: exact-ish


@torch.no_grad()
def test_qk_norm_is_applied_before_rope() -> None:
    layer = _layer(n_kv_heads=2, qk_norm=True)
    x = _x()
    rope = _rope(7, layer.head_dim, offset=3)
    out = layer(x, AttentionContext(rope=rope))
    torch.testing.assert_close(out, reference(layer, x, rope=rope), atol=ATOL, rtol=0)
    # The order is observable: the per-lane norm scale does not commute with the rotation.
    assert (out - reference(layer, x, rope=rope, qk_norm_first=False)).abs().max() > 1e-3


@torch.no_grad()
def test_without_rope() -> None:
    layer = _layer(n_kv_heads=2)
    x = _x()
    torch.testing.assert_close(layer(x, AttentionContext()), reference(layer, x), atol=ATOL, rtol=0)
    assert (layer(x) - layer(x, AttentionContext(rope=_rope(7, layer.head_dim)))).abs().max() > 1e-3


@pytest.mark.parametrize("attention", [{}, {"window": 4}, {"n_kv_heads": 1}], ids=["plain", "window", "mqa"])
@torch.no_grad()
def test_manual_and_sdpa_kernels_agree(attention: dict) -> None:
    manual = _layer(kernel="manual", **attention)
    sdpa = _layer(kernel="sdpa", **attention)
    sdpa.load_state_dict(manual.state_dict())
    x = _x(t=11)
    rope = _rope(11, manual.head_dim)
    torch.testing.assert_close(
        sdpa(x, AttentionContext(rope=rope)), manual(x, AttentionContext(rope=rope)), atol=ATOL, rtol=0
    )


def test_kernels_agree_on_gradients() -> None:
    manual = _layer(kernel="manual", n_kv_heads=2)
    sdpa = _layer(kernel="sdpa", n_kv_heads=2)
    sdpa.load_state_dict(manual.state_dict())
    x = _x()
    grads = []
    for layer in (manual, sdpa):
        layer.zero_grad()
        layer(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for name in grads[0]:
        # Gradients sum over B*T*C terms of O(1): float32 rounding grows to ~1e-5 relative.
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-4, msg=name)


@torch.no_grad()
@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_cached_chunks_equal_one_call(fixed_shapes: bool) -> None:
    """At layer level: keys come from the cache, queries at the offset the cache's step reports."""
    layer = _layer(n_kv_heads=2, window=4)
    x = _x(t=10)
    full = layer(x, AttentionContext(rope=_rope(10, layer.head_dim)))
    cache = StaticKVCache(
        n_layers=1, batch=2, n_kv_heads=2, head_dim=layer.head_dim, max_len=12, fixed_shapes=fixed_shapes
    )
    parts = []
    for start, end in [(0, 6), (6, 7), (7, 10)]:
        rope = _rope(end - start, layer.head_dim, offset=start)
        step = cache.step(end - start)
        parts.append(layer(x[:, start:end], AttentionContext(rope=rope, cache=cache, step=step)))
        cache.advance(end - start)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=ATOL, rtol=0)


def test_paged_keys_are_gathered_for_kernels_that_cannot_read_pages() -> None:
    """A paged call (page pools + block table) gives the dense call's result on every built-in kernel, which
    lack the ``paged`` capability and so get a gathered copy; naming such a kernel for a paged call directly
    is refused with the capability named."""
    import kernel
    from attn.dispatch import attend
    from specs.attention import AttentionCall

    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, 3, 8, generator=gen)
    pool_k, pool_v = torch.randn(6, 2, 4, 8, generator=gen), torch.randn(6, 2, 4, 8, generator=gen)
    table = torch.tensor([[4, 0], [2, 5]])  # row 0 reads pages 4 then 0, row 1 pages 2 then 5
    dense_k = torch.stack([torch.cat([pool_k[p] for p in row], dim=1) for row in table.tolist()])
    dense_v = torch.stack([torch.cat([pool_v[p] for p in row], dim=1) for row in table.tolist()])
    kw = {"causal": True, "q_offset": torch.tensor([5, 2]), "kv_lens": torch.tensor([8, 5])}
    paged = AttentionCall(q=q, k=pool_k, v=pool_v, block_table=table, **kw)
    dense = AttentionCall(q=q, k=dense_k, v=dense_v, **kw)
    want = kernel.resolve("manual", dense)(dense)
    for name in ("manual", "sdpa", "auto"):
        torch.testing.assert_close(attend(name, paged), want, atol=ATOL, rtol=0)
    with pytest.raises(kernel.KernelUnavailable, match="lacks paged"):
        kernel.resolve("sdpa", paged)


def test_shape_error_names_x() -> None:
    layer = _layer()
    with pytest.raises(specs.ShapeError, match=r"^x: "):
        layer(torch.randn(7, C))


class _CountProducts(TorchDispatchMode):
    """Counts the matrix products that run (``mm``/``addmm``), forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.products = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.products += 1
        return func(*args, **(kwargs or {}))


def _autocast_step(layer: SelfAttention, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    layer.zero_grad(set_to_none=True)
    with _CountProducts() as counted:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x, AttentionContext(rope=_rope(x.shape[1], layer.head_dim)))
        out.float().square().sum().backward()
    return out, [p.grad for p in layer.parameters()], counted.products


@pytest.mark.parametrize("n_kv_heads", [1, 4], ids=["mqa", "mha"])
@pytest.mark.parametrize("bias", [False, True])
def test_mixed_precision_training_projects_qkv_in_one_product(n_kv_heads: int, bias: bool) -> None:
    """Under autocast with gradients, q/k/v come from one product over the concatenated weights: the same
    outputs and weight gradients as three separate products (bfloat16 tolerances: the GEMMs block differently),
    in 2 forward + 4 backward products instead of 4 + 8. A hook on a projection (what tensor parallelism
    installs) or inference keeps the three layers."""
    layer = _layer(n_kv_heads=n_kv_heads, bias=bias, kernel="manual").train()
    x = _x(4, 16).requires_grad_(True)
    fused, fused_grads, fused_products = _autocast_step(layer, x)
    handle = layer.wk.register_forward_hook(lambda module, args, out: out)
    separate, separate_grads, separate_products = _autocast_step(layer, x)
    handle.remove()
    assert (fused_products, separate_products) == (6, 12)
    torch.testing.assert_close(fused, separate, atol=2e-2, rtol=2e-2)
    for got, expected in zip(fused_grads, separate_grads):
        torch.testing.assert_close(got, expected, atol=5e-2, rtol=2e-2)
    with _CountProducts() as counted, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert counted.products == 4
