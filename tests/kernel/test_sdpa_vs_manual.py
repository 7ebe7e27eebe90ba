"""``sdpa`` against the ``manual`` oracle: forward and gradients, over random shapes, GQA ratios and masks.

Tolerances, per dtype:

* float32: ``atol = rtol = 1e-5``. Both kernels evaluate the same math in float32 (``manual`` upcasts nothing
  for float32 input; SDPA's CPU kernels accumulate in float32), so they differ only by summation order and the
  online-softmax rescaling, a few ulp times sqrt(Tk) at these sizes -- far below 1e-5 for O(1) values.
* bfloat16: ``atol = rtol = 2e-2``. bfloat16 keeps 8 significant bits (relative step 2**-8 ~ 3.9e-3, so one
  rounding is up to ~2e-3 relative). ``manual`` computes in float32 and rounds once, at the output; SDPA rounds
  intermediates (e.g. the probabilities before ``probs @ v`` and the partial gradients) to bfloat16, so the two
  may differ by a few bfloat16 steps: 2e-2 is about five of them, yet still fails on any real mistake (a wrong
  mask or key changes outputs by O(1e-1)). Gradients are sums with cancellation (``dk = dS^T q`` where each row
  of ``dS`` sums to zero), so an entry can be small while its rounding error is set by the size of the summands:
  the absolute part of the bfloat16 tolerance is therefore ``2e-2 * max(1, max|expected|)``, per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import kernel
from specs.attention import AttentionCall
from tensor.masks import combine_masks, document_mask, padding_mask, structural_mask

TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}

MASK_KINDS = ("none", "causal", "causal_top_left", "padding", "window", "window_bidirectional", "document",
              "causal_padding")

# Largest |sdpa - manual| seen per (dtype, quantity), for reporting (see the module's report helper below).
MAX_DIFF: dict[tuple[str, str], float] = {}


@dataclass
class Case:
    b: int
    hkv: int
    group: int
    tq: int
    tk: int
    d: int
    dtype: torch.dtype
    kind: str
    seed: int
    q_offset: int | torch.Tensor = 0
    kv_lens: torch.Tensor | None = field(default=None, repr=False)
    causal: bool = False
    window: int | None = None
    scale: float | None = None
    allow_mask: torch.Tensor | None = field(default=None, repr=False)


@st.composite
def cases(draw) -> Case:
    """Shapes, masks and offsets drawn independently: Tq and Tk need not match, offsets land anywhere (also past
    the keys, and per row), key lengths and windows with or without the causal rule."""
    kind = draw(st.sampled_from(MASK_KINDS))
    tk = draw(st.integers(1, 24))
    case = Case(
        b=draw(st.integers(1, 3)),
        hkv=draw(st.integers(1, 3)),
        group=draw(st.integers(1, 3)),  # Hq = Hkv * group: group 1 is MHA, Hkv 1 is MQA, else GQA
        tq=draw(st.integers(1, 24)),
        tk=tk,
        d=draw(st.sampled_from([8, 16, 32])),
        dtype=draw(st.sampled_from([torch.float32, torch.bfloat16])),
        kind=kind,
        seed=draw(st.integers(0, 2**31 - 1)),
        scale=draw(st.none() | st.sampled_from([0.1, 0.25])),  # logits of std <= 1.4, as with 1/sqrt(D)
    )
    gen = torch.Generator().manual_seed(case.seed)
    case.causal = kind in ("causal", "causal_top_left", "window", "causal_padding")
    if kind in ("causal", "window", "window_bidirectional", "causal_padding"):
        offsets = st.integers(0, tk + 2)
        if draw(st.booleans()):
            case.q_offset = torch.tensor(draw(st.lists(offsets, min_size=case.b, max_size=case.b)))
        else:
            case.q_offset = draw(offsets)
    if kind in ("window", "window_bidirectional"):
        case.window = draw(st.integers(1, tk + 1))
    if kind in ("padding", "causal_padding"):
        key_padding = torch.rand(case.b, tk, generator=gen) < draw(st.sampled_from([0.2, 0.5, 0.8]))
        # Rows with no visible key can happen (zeros expected from both kernels).
        case.allow_mask = padding_mask(key_padding)
    if kind == "document":
        n_docs = draw(st.integers(1, 4))
        k_ids = torch.randint(0, n_docs, (case.b, tk), generator=gen).sort(dim=-1).values
        q_ids = torch.randint(0, n_docs, (case.b, case.tq), generator=gen).sort(dim=-1).values
        case.allow_mask = document_mask(q_ids, k_ids)
        case.causal = draw(st.booleans())
    if draw(st.booleans()):
        case.kv_lens = torch.tensor(draw(st.lists(st.integers(0, tk), min_size=case.b, max_size=case.b)))
    return case


def _tensors(case: Case):
    gen = torch.Generator().manual_seed(case.seed + 1)
    hq = case.hkv * case.group

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(case.dtype)

    q = randn(case.b, hq, case.tq, case.d)
    k = randn(case.b, case.hkv, case.tk, case.d)
    v = randn(case.b, case.hkv, case.tk, case.d)
    grad_out = randn(case.b, hq, case.tq, case.d)
    return q, k, v, grad_out


def run_kernel(name: str, q, k, v, grad_out, **call_kw):
    """Run kernel ``name`` on fresh leaf copies of q/k/v; return the output and the three gradients."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    call = AttentionCall(q=leaves[0], k=leaves[1], v=leaves[2], **call_kw)
    out = kernel.resolve(name, call)(call)
    assert out.dtype == q.dtype and out.shape == q.shape
    out.backward(grad_out)
    return out.detach(), *(leaf.grad for leaf in leaves)


def tolerance(expected: torch.Tensor) -> dict[str, float]:
    """``TOL`` for the dtype; for bfloat16 the absolute part scales with the tensor's largest entry (see top)."""
    tol = dict(TOL[expected.dtype])
    if expected.dtype == torch.bfloat16 and expected.numel():
        tol["atol"] *= max(1.0, expected.float().abs().max().item())
    return tol


def assert_close(actual, expected, dtype, what):
    diff = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    key = (str(dtype).removeprefix("torch."), what)
    MAX_DIFF[key] = max(MAX_DIFF.get(key, 0.0), diff)
    torch.testing.assert_close(actual, expected, **tolerance(expected), msg=lambda m: f"{what}: {m}")


def _compare(case: Case):
    q, k, v, grad_out = _tensors(case)
    kw = dict(
        allow_mask=case.allow_mask,
        causal=case.causal,
        window=case.window,
        q_offset=case.q_offset,
        kv_lens=case.kv_lens,
        scale=case.scale,
    )
    expected = run_kernel("manual", q, k, v, grad_out, **kw)
    actual = run_kernel("sdpa", q, k, v, grad_out, **kw)
    for what, a, e in zip(("out", "dq", "dk", "dv"), actual, expected):
        assert torch.isfinite(a).all(), f"sdpa {what} is not finite"
        assert_close(a, e, case.dtype, what)


@settings(max_examples=60, deadline=None, database=None)
@given(cases())
def test_sdpa_matches_manual(case: Case):
    _compare(case)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_every_mask_kind_at_a_fixed_gqa_shape(kind, dtype):
    """Each mask kind at least once, whatever hypothesis draws: B=2, Hq=6 over Hkv=2, Tq=7, Tk=11 (or square)."""
    square = kind in ("causal_top_left", "document")
    case = Case(b=2, hkv=2, group=3, tq=11 if square else 7, tk=11, d=16, dtype=dtype, kind=kind, seed=1234)
    gen = torch.Generator().manual_seed(7)
    if kind in ("causal", "window", "causal_padding"):
        case.causal, case.q_offset = True, case.tk - case.tq
    if kind == "window_bidirectional":
        case.q_offset = torch.tensor([2, 5])
    case.causal = case.causal or kind == "causal_top_left"
    case.window = 3 if kind.startswith("window") else None
    if kind in ("padding", "causal_padding"):
        key_padding = torch.rand(case.b, case.tk, generator=gen) < 0.4
        key_padding[:, -1] = False
        case.allow_mask = padding_mask(key_padding)
    if kind == "document":
        case.allow_mask = document_mask(torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3], [0] * 6 + [1] * 5]))
    _compare(case)


# --------------------------------------------------------------------------------------- fully masked rows


def _zero_row_masks(b: int, tq: int, tk: int) -> dict[str, tuple[torch.Tensor, dict]]:
    """Masks (with the call options they go with) that leave some query rows with no visible key."""
    explicit = torch.ones(b, 1, tq, tk, dtype=torch.bool)
    explicit[:, :, 1] = False  # row 1 sees nothing
    explicit[-1, :, tq - 1] = False  # and the last row of the last batch
    left_padded = torch.zeros(b, tk, dtype=torch.bool)
    left_padded[:, :3] = True  # keys 0..2 padded: with causal and q_offset 0, queries 0..2 see nothing
    return {
        "explicit": (explicit, {}),
        "causal_left_padding": (padding_mask(left_padded), {"causal": True}),
        "window_beyond_keys": (explicit, {"causal": True, "window": 2, "q_offset": 0}),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("which", ["explicit", "causal_left_padding", "window_beyond_keys"])
@pytest.mark.parametrize("name", ["manual", "sdpa"])
def test_fully_masked_rows_give_zeros_and_zero_gradients(name, which, dtype):
    b, hkv, group, tq, tk, d = 2, 2, 2, 6, 6, 8
    mask, kw = _zero_row_masks(b, tq, tk)[which]
    structure = structural_mask(tq, tk, causal=kw.get("causal", False), window=kw.get("window"))
    full = combine_masks(mask, structure).expand(b, hkv * group, tq, tk)
    dead = ~full.any(dim=-1)  # (B, Hq, Tq): rows with no visible key
    assert dead.any() and not dead.all()

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(b, h, t, d, generator=gen).to(dtype) for h, t in ((hkv * group, tq), (hkv, tk), (hkv, tk)))
    grad_out = torch.randn(b, hkv * group, tq, d, generator=gen).to(dtype)
    out, dq, dk, dv = run_kernel(name, q, k, v, grad_out, allow_mask=mask, **kw)

    for what, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert torch.isfinite(t).all(), f"{name} {what} has non-finite values"
    assert (out[dead] == 0).all()
    assert (dq[dead] == 0).all()
    # Whatever gradient arrives at a dead row must not reach k or v.
    other_grad = torch.where(dead[..., None], torch.randn(grad_out.shape, generator=gen).to(dtype) * 100, grad_out)
    _, dq2, dk2, dv2 = run_kernel(name, q, k, v, other_grad, allow_mask=mask, **kw)
    assert torch.equal(dk2, dk) and torch.equal(dv2, dv) and torch.equal(dq2, dq)


# ------------------------------------------------------------------------------ bottom-right causal alignment


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("tq", "tk", "window"), [(5, 12, None), (1, 9, None), (4, 10, 3), (3, 8, 1)])
@pytest.mark.parametrize("name", ["manual", "sdpa"])
def test_causal_with_fewer_queries_is_bottom_right_aligned(name, tq, tk, window, dtype):
    """Tq < Tk: the queries are the LAST Tq tokens, so the result is the last Tq rows of full causal attention.

    The reference runs SDPA's own ``is_causal`` (top-left, correct for a square) over the whole sequence, or an
    explicit banded mask for a window; it shares no mask code with the kernels.
    """
    b, hkv, group, d = 2, 2, 2, 16
    gen = torch.Generator().manual_seed(11)
    q_full = torch.randn(b, hkv * group, tk, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, tk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, tk, d, generator=gen).to(dtype)
    grad_out = torch.randn(b, hkv * group, tq, d, generator=gen).to(dtype)

    leaves = [t.float().clone().requires_grad_() for t in (q_full, k, v)]
    k_rep, v_rep = (t.repeat_interleave(group, dim=1) for t in leaves[1:])
    if window is None:
        ref_full = F.scaled_dot_product_attention(leaves[0], k_rep, v_rep, is_causal=True)
    else:
        i = torch.arange(tk)[:, None]
        j = torch.arange(tk)[None, :]
        ref_full = F.scaled_dot_product_attention(leaves[0], k_rep, v_rep, attn_mask=(j <= i) & (j > i - window))
    ref = ref_full[:, :, tk - tq :]
    ref.backward(grad_out.float())
    ref_dq = leaves[0].grad[:, :, tk - tq :]

    out, dq, dk, dv = run_kernel(
        name, q_full[:, :, tk - tq :], k, v, grad_out, causal=True, window=window, q_offset=tk - tq
    )
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    for what, a, e in (("out", out, ref), ("dq", dq, ref_dq), ("dk", dk, leaves[1].grad), ("dv", dv, leaves[2].grad)):
        torch.testing.assert_close(a.float(), e.detach(), **tol, msg=lambda m, w=what: f"{name} {w}: {m}")

    # The test can tell the alignments apart: top-left (q_offset 0) differs from the reference here.
    top_left, *_ = run_kernel(name, q_full[:, :, tk - tq :], k, v, grad_out, causal=True, window=window)
    assert not torch.allclose(top_left.float(), ref.detach(), **tol)


@pytest.mark.parametrize("kernel_name", ["manual", "sdpa"])
def test_kv_lens_equals_the_padding_mask_it_describes(kernel_name):
    """``kv_lens`` (right padding as lengths) must mean exactly the key-padding allow mask it stands for."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(3, 4, 5, 16, generator=gen)
    k, v = (torch.randn(3, 2, 9, 16, generator=gen) for _ in range(2))
    lens = torch.tensor([9, 4, 1])
    pad = torch.arange(9)[None, :] >= lens[:, None]
    by_lens = AttentionCall(q=q, k=k, v=v, causal=True, q_offset=4, kv_lens=lens)
    by_mask = AttentionCall(q=q, k=k, v=v, causal=True, q_offset=4, allow_mask=padding_mask(pad))
    fn = kernel.resolve(kernel_name, by_lens)
    torch.testing.assert_close(fn(by_lens), kernel.resolve("manual", by_mask)(by_mask), atol=1e-6, rtol=0)
