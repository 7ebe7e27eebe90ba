"""The ``manual`` kernel against a naive reference written here with Python loops, in float64.

``manual`` is the oracle every other kernel is tested against, so it is itself checked against the plainest
possible statement of ``specs.attention``: for each batch, query head and query row, list the visible keys one
by one, soft-cap their scores, softmax them one exponential at a time and sum the values. Nothing here uses
``tensor.masks`` or ``kernel`` code, so a shared mistake cannot hide.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernel
from specs.attention import AttentionCall

manual = kernel.resolve(
    "manual",
    AttentionCall(q=torch.zeros(1, 1, 1, 1), k=torch.zeros(1, 1, 1, 1), v=torch.zeros(1, 1, 1, 1)),
)

# float64 throughout: the loops and the tensor code differ only by rounding order, ~1e-16 relative.
TOL = {"atol": 1e-10, "rtol": 1e-10}


def naive_attention(
    q, k, v, *, allow_mask=None, causal=False, window=None, scale=None, softcap=None, q_offset=0, kv_lens=None
):
    """specs.attention, spelled out: query head ``h`` reads kv head ``h // (Hq // Hkv)``; ``q_offset`` is an int
    or one offset per row, ``kv_lens`` one key count per row.

    Scalar by scalar (but on tensors, so autograd can differentiate it for the gradient comparison).
    """
    b_size, n_q_heads, tq, d = q.shape
    n_kv_heads, tk = k.shape[1], k.shape[2]
    group = n_q_heads // n_kv_heads
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    allow = None if allow_mask is None else allow_mask.expand(b_size, n_q_heads, tq, tk)
    zero_row = q.new_zeros(d)
    rows = []
    for b in range(b_size):
        for h in range(n_q_heads):
            kv = h // group
            for i in range(tq):
                pos = (q_offset if isinstance(q_offset, int) else int(q_offset[b])) + i
                visible = []
                for j in range(tk):
                    if kv_lens is not None and j >= int(kv_lens[b]):
                        continue
                    if causal and j > pos:
                        continue
                    if window is not None and not (pos - window < j and (causal or j < pos + window)):
                        continue
                    if allow is not None and not bool(allow[b, h, i, j]):
                        continue
                    visible.append(j)
                if not visible:
                    rows.append(zero_row)  # no visible key: the row is zero
                    continue
                scores = []
                for j in visible:
                    s = (q[b, h, i] * k[b, kv, j]).sum() * scale
                    scores.append(softcap * torch.tanh(s / softcap) if softcap is not None else s)
                top = max(float(s.detach()) for s in scores)  # a constant shift: it cancels in the softmax
                weights = [torch.exp(s - top) for s in scores]
                total = sum(weights)
                rows.append(sum((w / total) * v[b, kv, j] for w, j in zip(weights, visible)))
    return torch.stack(rows).reshape(b_size, n_q_heads, tq, d)


def _qkv(b, hq, hkv, tq, tk, d, seed=0, dtype=torch.float64, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, tq, d, generator=gen, dtype=torch.float64) * spread
    k = torch.randn(b, hkv, tk, d, generator=gen, dtype=torch.float64) * spread
    v = torch.randn(b, hkv, tk, d, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _check(q, k, v, **kw):
    out = manual(AttentionCall(q=q, k=k, v=v, **kw))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, naive_attention(q, k, v, **kw), **TOL)
    return out


# ------------------------------------------------------------------------------------------ fixed cases

# (b, hq, hkv, tq, tk, d), call options
CASES = {
    "mha": ((2, 2, 2, 4, 4, 8), {}),
    "gqa": ((1, 6, 2, 3, 5, 4), {}),
    "mqa": ((2, 3, 1, 4, 4, 4), {"causal": True}),
    "scale": ((1, 2, 1, 3, 6, 4), {"scale": 0.37}),
    "softcap": ((1, 2, 2, 4, 4, 4), {"softcap": 0.8, "scale": 3.0}),
    "causal_bottom_right": ((1, 4, 2, 3, 7, 4), {"causal": True, "q_offset": 4}),
    "causal_beyond_keys": ((1, 2, 1, 3, 3, 4), {"causal": True, "q_offset": 9}),
    "window_causal": ((1, 2, 1, 6, 6, 4), {"causal": True, "window": 2}),
    "window_causal_decode": ((2, 2, 2, 2, 9, 4), {"causal": True, "window": 3, "q_offset": 7}),
    "window_symmetric": ((1, 2, 1, 7, 7, 4), {"window": 2}),
    "window_symmetric_offset": ((1, 2, 2, 3, 9, 4), {"window": 3, "q_offset": 4}),
    "window_one": ((1, 1, 1, 5, 5, 4), {"window": 1}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_manual_matches_naive(name):
    shape, kw = CASES[name]
    _check(*_qkv(*shape, seed=len(name)), **kw)


def test_softcap_is_applied_before_masking():
    """Masked keys must carry no weight: softcap(-inf-ish fill) would be -cap, a finite score that leaks."""
    q, k, v = _qkv(1, 2, 1, 4, 6, 4, seed=5)
    allow = torch.tensor([True, False, True, False, False, True])  # (Tk,): broadcast over everything else
    out = _check(q, k, v, allow_mask=allow, softcap=0.5)
    # Masked keys really are out: dropping them from k/v gives the same output.
    keep = allow.nonzero().squeeze(-1)
    torch.testing.assert_close(out, manual(AttentionCall(q=q, k=k[:, :, keep], v=v[:, :, keep], softcap=0.5)), **TOL)


def test_softcap_bounds_the_scores():
    """With a tiny cap every score is within (-cap, cap), so the weights are nearly uniform even for big logits."""
    q, k, v = _qkv(1, 1, 1, 3, 5, 4, seed=2, spread=30.0)
    out = _check(q, k, v, softcap=1e-3)
    torch.testing.assert_close(out, v.mean(dim=2, keepdim=True).expand_as(out), atol=1e-2, rtol=0)


def test_gqa_query_head_reads_kv_head_h_div_group():
    """Each kv head's values are its index, so query head ``h`` must output ``h // group`` (not ``h % Hkv``)."""
    hq, hkv, d = 6, 3, 4
    q, k, _ = _qkv(1, hq, hkv, 2, 5, d, seed=1)
    v = torch.arange(hkv, dtype=torch.float64)[None, :, None, None].expand(1, hkv, 5, d)
    out = _check(q, k, v)
    group = hq // hkv
    for h in range(hq):
        assert torch.allclose(out[0, h], torch.full((2, d), float(h // group), dtype=torch.float64))


def test_scale_default_and_explicit():
    q, k, v = _qkv(1, 2, 2, 3, 4, 16, seed=3)
    default = _check(q, k, v)
    torch.testing.assert_close(default, manual(AttentionCall(q=q, k=k, v=v, scale=0.25)), **TOL)  # 1/sqrt(16)
    assert not torch.allclose(default, manual(AttentionCall(q=q, k=k, v=v, scale=1.0)))
    # scale 0: every visible key weighs the same, so the output is the mean of the visible values.
    flat = _check(q, k, v, scale=0.0, causal=True, q_offset=1)
    for i in range(3):
        torch.testing.assert_close(flat[:, :, i], v[:, :, : i + 2].mean(dim=2), **TOL)


def test_fully_masked_rows_are_zero():
    q, k, v = _qkv(2, 2, 1, 4, 5, 4, seed=4)
    allow = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    allow[0, :, 2] = False
    out = _check(q, k, v, allow_mask=allow, causal=True, q_offset=1)
    assert (out[0, :, 2] == 0).all() and (out[1, :, 2] != 0).any()


# -------------------------------------------------------------------------------------- random cases


@st.composite
def calls(draw):
    hkv = draw(st.integers(1, 3))
    hq = hkv * draw(st.integers(1, 3))
    tq, tk = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    shape = (draw(st.integers(1, 2)), hq, hkv, tq, tk, draw(st.sampled_from([2, 4, 8])))
    per_row = draw(st.booleans())
    kw = {
        "causal": draw(st.booleans()),
        "window": draw(st.none() | st.integers(1, 8)),
        "q_offset": (
            torch.tensor(draw(st.lists(st.integers(0, 6), min_size=shape[0], max_size=shape[0])))
            if per_row
            else draw(st.integers(0, 6))
        ),
        "scale": draw(st.none() | st.floats(0.05, 3.0)),
        "softcap": draw(st.none() | st.floats(0.2, 5.0)),
    }
    if draw(st.booleans()):
        kw["kv_lens"] = torch.tensor(draw(st.lists(st.integers(0, tk), min_size=shape[0], max_size=shape[0])))
    if draw(st.booleans()):
        mask_shape = draw(st.sampled_from([(tk,), (tq, tk), (shape[0], 1, 1, tk), (shape[0], hq, tq, tk)]))
        kw["allow_mask"] = (
            torch.rand(mask_shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 999)))) < 0.7
        )
    return shape, kw, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=30, deadline=None, database=None)
@given(calls())
def test_manual_matches_naive_random(drawn):
    shape, kw, seed = drawn
    _check(*_qkv(*shape, seed=seed), **kw)


def test_per_row_offsets_equal_each_row_run_alone():
    """Row ``b`` with offset ``q_offset[b]`` is exactly the single-row call with that int offset."""
    q, k, v = _qkv(3, 4, 2, 2, 7, 4, seed=10)
    offsets, lens = torch.tensor([5, 0, 3]), torch.tensor([7, 2, 5])
    together = _check(q, k, v, causal=True, window=3, q_offset=offsets, kv_lens=lens)
    for b in range(3):
        alone = manual(AttentionCall(q=q[b : b + 1], k=k[b : b + 1, :, : lens[b]], v=v[b : b + 1, :, : lens[b]],
                                     causal=True, window=3, q_offset=int(offsets[b])))
        torch.testing.assert_close(together[b : b + 1], alone, **TOL)


# -------------------------------------------------------------------------------------------- dropout


def test_dropout_zero_is_deterministic():
    q, k, v = _qkv(1, 2, 1, 5, 5, 4, seed=6, dtype=torch.float32)
    first = manual(AttentionCall(q=q, k=k, v=v, causal=True, dropout_p=0.0))
    torch.manual_seed(123)
    assert torch.equal(first, manual(AttentionCall(q=q, k=k, v=v, causal=True, dropout_p=0.0)))


def test_dropout_is_seeded_random_and_unbiased():
    # v = 1 everywhere: without dropout every output is exactly 1 (the probabilities sum to 1). Dropout keeps
    # each probability with chance 1 - p and rescales by 1 / (1 - p), so outputs scatter around 1.
    b, h, t, d, p = 1, 4, 64, 8, 0.5
    q = torch.zeros(b, h, t, d)  # uniform probabilities 1/64: each row's output has std sqrt(p/(1-p)/64) = 0.125
    k = torch.zeros(b, h, t, d)
    v = torch.ones(b, h, t, d)
    call = AttentionCall(q=q, k=k, v=v, dropout_p=p)
    torch.testing.assert_close(manual(AttentionCall(q=q, k=k, v=v)), torch.ones(b, h, t, d))

    torch.manual_seed(0)
    first = manual(call)
    torch.manual_seed(0)
    assert torch.equal(first, manual(call)), "same seed, same dropout pattern"
    torch.manual_seed(1)
    assert not torch.equal(first, manual(call)), "another seed, another pattern"
    assert not torch.allclose(first, torch.ones_like(first))
    # 256 independent rows: the mean has std 0.125 / 16 ~ 0.008, so 0.05 is a > 6-sigma bound.
    assert abs(first[..., 0].mean().item() - 1.0) < 0.05


# ----------------------------------------------------------------------------------- dtypes and grads


def test_float64_in_float64_out_and_low_precision_matches():
    q, k, v = _qkv(1, 4, 2, 3, 5, 8, seed=8)
    exact = _check(q, k, v, causal=True, q_offset=2)
    for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 2e-2)):
        call = AttentionCall(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), causal=True, q_offset=2)
        out = manual(call)
        assert out.dtype == dtype
        # the reference for low-precision inputs is the float64 result on the same (rounded) inputs
        ref = naive_attention(q.to(dtype).double(), k.to(dtype).double(), v.to(dtype).double(), causal=True, q_offset=2)
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
        torch.testing.assert_close(out.double(), exact, atol=tol * 5, rtol=tol * 5)


@pytest.mark.parametrize(
    "kw",
    [
        {"causal": True, "q_offset": 1},
        {"causal": True, "window": 2, "softcap": 1.5, "q_offset": 2},
        {"window": 2, "scale": 0.7},
    ],
    ids=["causal", "window_softcap", "symmetric_window"],
)
def test_gradcheck(kw):
    b, hq, hkv, tq, tk, d = 1, 4, 2, 3, 5, 3
    q, k, v = (t.requires_grad_() for t in _qkv(b, hq, hkv, tq, tk, d, seed=9))
    allow = torch.ones(b, 1, tq, tk, dtype=torch.bool)
    allow[..., 0, :] = False  # one fully masked row: its (zero) gradient must be exact too
    allow[..., 1, 3] = False

    def fn(q, k, v):
        return manual(AttentionCall(q=q, k=k, v=v, allow_mask=allow, **kw))

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6)
    # and the gradients agree with the naive loops differentiated by autograd
    out = fn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    ref = naive_attention(q, k, v, allow_mask=allow, **kw)
    assert ref.requires_grad
    ref_grads = torch.autograd.grad(ref, (q, k, v), torch.ones_like(ref))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL)


# ------------------------------------------------------------------------------------ float32 promise


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32_and_rounded_once(dtype):
    """Computing in bf16 would pass any toleranced check; the promise is exact: the float32 result, rounded."""
    q, k, v = _qkv(2, 4, 2, 5, 9, 16, seed=12, dtype=dtype)
    kw = {"causal": True, "q_offset": 4, "softcap": 2.0}
    low = manual(AttentionCall(q=q, k=k, v=v, **kw))
    high = manual(AttentionCall(q=q.float(), k=k.float(), v=v.float(), **kw))
    assert low.dtype == dtype
    assert torch.equal(low, high.to(dtype))


def test_autocast_does_not_lower_the_oracle_precision():
    q, k, v = _qkv(2, 4, 2, 5, 9, 16, seed=13, dtype=torch.float32)
    kw = {"causal": True, "q_offset": 4, "allow_mask": torch.rand(2, 1, 5, 9, generator=torch.Generator().manual_seed(1)) < 0.8}
    plain = manual(AttentionCall(q=q, k=k, v=v, **kw))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = manual(AttentionCall(q=q, k=k, v=v, **kw))
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)
