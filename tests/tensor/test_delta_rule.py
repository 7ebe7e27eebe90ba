"""The gated delta rule: the chunked form equals the recurrent form (outputs, final states and gradients), both
equal a naive loop over the defining equation written here, and the short convolution continues across pieces.

Tolerance: float32. The chunked form sums the same terms in another order (a triangular solve instead of a
loop); outputs and states are O(1), so the observed worst case is ~1e-6 and ``ATOL = 1e-5`` leaves headroom,
while a wrong decay, step or grouping is off by > 1e-2.
"""

from __future__ import annotations

import pytest
import torch

from tensor.delta_rule import delta_rule_chunked, delta_rule_recurrent, l2_normalize
from tensor.short_conv import causal_conv1d

ATOL = 1e-5  # float32; see the module docstring


def _inputs(t: int, *, key_heads: int = 2, value_heads: int = 4, dk: int = 8, dv: int = 6, batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, key_heads, t, dk, generator=gen)
    k = torch.randn(batch, key_heads, t, dk, generator=gen)
    v = torch.randn(batch, value_heads, t, dv, generator=gen)
    g = -torch.rand(batch, value_heads, t, generator=gen)  # decays in (e^-1, 1]
    beta = torch.rand(batch, value_heads, t, generator=gen)
    state = torch.randn(batch, value_heads, dk, dv, generator=gen)
    return q, k, v, g, beta, state


def _naive(q, k, v, g, beta, state):
    """The defining equation, one head and one token at a time, in float64."""
    q, k, v, g, beta, state = (x.double() for x in (q, k, v, g, beta, state))
    group = v.shape[1] // q.shape[1]
    out = torch.zeros_like(v)
    state = state.clone()
    for b in range(v.shape[0]):
        for h in range(v.shape[1]):
            s = state[b, h]
            for t in range(v.shape[2]):
                kt, qt = k[b, h // group, t], q[b, h // group, t] * q.shape[-1] ** -0.5
                eye = torch.eye(kt.shape[0], dtype=kt.dtype)
                s = g[b, h, t].exp() * (eye - beta[b, h, t] * torch.outer(kt, kt)) @ s + beta[b, h, t] * torch.outer(kt, v[b, h, t])
                out[b, h, t] = qt @ s
            state[b, h] = s
    return out, state


def test_recurrent_equals_the_defining_equation() -> None:
    q, k, v, g, beta, state = _inputs(9)
    out, final = delta_rule_recurrent(q, k, v, g, beta, initial_state=state)
    want_out, want_state = _naive(q, k, v, g, beta, state)
    torch.testing.assert_close(out.double(), want_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(final.double(), want_state, atol=ATOL, rtol=0)


@pytest.mark.parametrize("length", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("qk_l2norm", [False, True])
def test_chunked_equals_recurrent(length: int, with_state: bool, qk_l2norm: bool) -> None:
    q, k, v, g, beta, state = _inputs(length, seed=length)
    if not qk_l2norm:  # keep the unnormalised rule contractive, as it is with unit keys
        k = l2_normalize(k)
    initial = state if with_state else None
    want_out, want_state = delta_rule_recurrent(q, k, v, g, beta, initial_state=initial, qk_l2norm=qk_l2norm)
    for chunk in (1, 4, 16, 64):
        out, final = delta_rule_chunked(q, k, v, g, beta, chunk_size=chunk, initial_state=initial, qk_l2norm=qk_l2norm)
        torch.testing.assert_close(out, want_out, atol=ATOL, rtol=0)
        torch.testing.assert_close(final, want_state, atol=ATOL, rtol=0)


def test_state_carries_across_pieces() -> None:
    """Three pieces, each from the state the last one left, equal one pass."""
    q, k, v, g, beta, state = _inputs(23)
    whole, whole_state = delta_rule_chunked(q, k, v, g, beta, chunk_size=8, initial_state=state, qk_l2norm=True)
    outs, s = [], state
    for lo, hi in ((0, 10), (10, 11), (11, 23)):
        piece = (x[:, :, lo:hi] for x in (q, k, v, g, beta))
        out, s = delta_rule_chunked(*piece, chunk_size=8, initial_state=s, qk_l2norm=True)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=2), whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(s, whole_state, atol=ATOL, rtol=0)


def test_gradients_agree() -> None:
    tensors = _inputs(21, seed=3)
    grads = []
    for form in ("recurrent", "chunked"):
        leaves = [x.clone().requires_grad_() for x in tensors]
        q, k, v, g, beta, state = leaves
        if form == "recurrent":
            out, final = delta_rule_recurrent(q, k, v, g, beta, initial_state=state, qk_l2norm=True)
        else:
            out, final = delta_rule_chunked(q, k, v, g, beta, chunk_size=8, initial_state=state, qk_l2norm=True)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)  # a loss that weighs every output differently
        ((out * weights).sum() + final.square().sum()).backward()
        grads.append([x.grad for x in leaves])
    for name, a, b in zip(("q", "k", "v", "g", "beta", "state"), *grads):
        assert a is not None and b is not None and a.abs().max() > 0, name
        torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-5, msg=lambda m, n=name: f"d/d{n}: {m}")


def test_value_heads_share_key_heads_in_groups() -> None:
    """Value heads 0, 1 read key head 0 and 2, 3 key head 1: equal to repeating the keys by hand."""
    q, k, v, g, beta, _ = _inputs(7)
    grouped, _ = delta_rule_chunked(q, k, v, g, beta, chunk_size=4)
    q2, k2 = (x.repeat_interleave(2, dim=1) for x in (q, k))
    repeated, _ = delta_rule_chunked(q2, k2, v, g, beta, chunk_size=4)
    torch.testing.assert_close(grouped, repeated, atol=ATOL, rtol=0)
    tiled, _ = delta_rule_chunked(q.repeat(1, 2, 1, 1), k.repeat(1, 2, 1, 1), v, g, beta, chunk_size=4)  # 0, 1, 0, 1
    assert (tiled - grouped).abs().max() > 1e-2


def test_bfloat16_inputs_compute_in_float32() -> None:
    q, k, v, g, beta, _ = _inputs(19)
    ref, _ = delta_rule_recurrent(q, k, v, g, beta, qk_l2norm=True)
    low = [x.bfloat16() for x in (q, k, v, g, beta)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = delta_rule_chunked(*low, chunk_size=8, qk_l2norm=True)
    assert out.dtype == torch.bfloat16 and state.dtype == torch.float32
    # bfloat16 inputs carry ~4e-3 relative error each; the rule itself runs in float32.
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=0)


def test_rejects_value_heads_that_are_not_a_multiple() -> None:
    q, k, v, g, beta, _ = _inputs(3, key_heads=2, value_heads=3)
    with pytest.raises(ValueError, match="multiple"):
        delta_rule_chunked(q, k, v, g, beta)


def test_short_conv_continues_across_pieces() -> None:
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 5, 11, generator=gen), torch.randn(5, 4, generator=gen)
    whole, whole_state = causal_conv1d(x, w)
    # Reference: channel c at t sums w[c, j] * x[c, t - 3 + j] over the taps that exist.
    padded = torch.nn.functional.pad(x, (3, 0))
    want = sum(w[None, :, j, None] * padded[:, :, j : j + 11] for j in range(4))
    torch.testing.assert_close(whole, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(whole_state, x[..., -3:])
    outs, state = [], None
    for lo, hi in ((0, 2), (2, 3), (3, 11)):  # a piece shorter than the state keeps older inputs in it
        out, state = causal_conv1d(x[..., lo:hi], w, state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=-1), whole, atol=ATOL, rtol=0)
