"""Mask algebra, and agreement of the allow masks with PyTorch SDPA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor import (
    causal_mask,
    combine_masks,
    document_mask,
    padding_mask,
    structural_mask,
    to_additive_bias,
    window_mask,
)

SETTINGS = settings(max_examples=40, deadline=None)
sizes = st.integers(min_value=1, max_value=12)
offsets = st.integers(min_value=0, max_value=8)
windows = st.integers(min_value=1, max_value=16)


def _bool_masks(shape: tuple[int, ...]) -> st.SearchStrategy[torch.Tensor]:
    n = 1
    for d in shape:
        n *= d
    return st.lists(st.booleans(), min_size=n, max_size=n).map(lambda bits: torch.tensor(bits).reshape(shape))


# ------------------------------------------------------------------------------------------ structural masks


@SETTINGS
@given(tq=sizes, extra=st.integers(min_value=0, max_value=8))
def test_causal_with_cache_offset_is_the_lower_right_triangle(tq: int, extra: int) -> None:
    tk = tq + extra
    expected = torch.ones(tq, tk, dtype=torch.bool).tril(diagonal=tk - tq)
    assert torch.equal(causal_mask(tq, tk, q_offset=tk - tq), expected)


@SETTINGS
@given(t=sizes)
def test_square_causal_is_tril(t: int) -> None:
    assert torch.equal(causal_mask(t, t), torch.ones(t, t, dtype=torch.bool).tril())


@SETTINGS
@given(tq=sizes, tk=sizes, q_offset=offsets)
def test_causal_matches_its_definition(tq: int, tk: int, q_offset: int) -> None:
    mask = causal_mask(tq, tk, q_offset=q_offset)
    assert mask.shape == (tq, tk) and mask.dtype == torch.bool
    for i in range(tq):
        for j in range(tk):
            assert bool(mask[i, j]) == (j <= q_offset + i)


@SETTINGS
@given(tq=sizes, tk=sizes, q_offset=offsets, window=windows)
def test_causal_window_is_inside_causal(tq: int, tk: int, q_offset: int, window: int) -> None:
    win = window_mask(tq, tk, window, q_offset=q_offset)
    assert not (win & ~causal_mask(tq, tk, q_offset=q_offset)).any()


@SETTINGS
@given(tq=sizes, tk=sizes, q_offset=offsets, slack=st.integers(min_value=0, max_value=4))
def test_window_covering_every_position_is_causal(tq: int, tk: int, q_offset: int, slack: int) -> None:
    window = tq + q_offset + slack
    assert torch.equal(window_mask(tq, tk, window, q_offset=q_offset), causal_mask(tq, tk, q_offset=q_offset))


@SETTINGS
@given(tq=sizes, extra=st.integers(min_value=0, max_value=8), window=windows)
def test_causal_window_row_counts(tq: int, extra: int, window: int) -> None:
    # With the cache alignment every query sees keys 0..p (p + 1 of them); the window keeps the last `window`.
    tk = tq + extra
    q_offset = tk - tq
    counts = window_mask(tq, tk, window, q_offset=q_offset).sum(-1)
    visible = torch.arange(q_offset, q_offset + tq) + 1
    assert torch.equal(counts, visible.clamp(max=window))


@SETTINGS
@given(t=sizes, window=windows)
def test_bidirectional_window_is_a_symmetric_band(t: int, window: int) -> None:
    band = window_mask(t, t, window, causal=False)
    assert torch.equal(band, band.T)
    i = torch.arange(t)
    assert torch.equal(band, (i[:, None] - i[None, :]).abs() < window)
    # Its causal half is the causal window.
    assert torch.equal(band & causal_mask(t, t), window_mask(t, t, window))


def test_structural_mask_dispatch() -> None:
    assert structural_mask(3, 5, causal=False, window=None) is None
    assert torch.equal(structural_mask(3, 5, causal=True, window=None, q_offset=2), causal_mask(3, 5, q_offset=2))
    assert torch.equal(structural_mask(3, 5, causal=True, window=2, q_offset=2), window_mask(3, 5, 2, q_offset=2))
    assert torch.equal(structural_mask(4, 4, causal=False, window=2), window_mask(4, 4, 2, causal=False))


@pytest.mark.parametrize(
    "call",
    [
        lambda: causal_mask(-1, 3),
        lambda: causal_mask(2, 3, q_offset=-1),
        lambda: window_mask(2, 3, 0),
    ],
)
def test_invalid_structural_arguments_raise(call) -> None:
    with pytest.raises(ValueError):
        call()


# ----------------------------------------------------------------------------------------------- combinators


@SETTINGS
@given(data=st.data())
def test_combine_is_commutative_associative_idempotent(data: st.DataObject) -> None:
    a, b, c = (data.draw(_bool_masks((3, 4))) for _ in range(3))
    assert torch.equal(combine_masks(a, b), combine_masks(b, a))
    assert torch.equal(combine_masks(combine_masks(a, b), c), combine_masks(a, combine_masks(b, c)))
    assert torch.equal(combine_masks(a, a), a)
    assert torch.equal(combine_masks(a, None), a)
    assert torch.equal(combine_masks(None, a, None), a)
    assert torch.equal(combine_masks(a, b, c), a & b & c)


def test_combine_of_nothing_is_none() -> None:
    assert combine_masks() is None
    assert combine_masks(None, None) is None


def test_combine_broadcasts_padding_with_structure() -> None:
    kpm = torch.tensor([[False, False, True, True, True], [False, False, False, False, True]])
    allow = combine_masks(padding_mask(kpm), causal_mask(3, 5, q_offset=2))
    assert allow.shape == (2, 1, 3, 5)
    expected = (~kpm)[:, None, None, :] & causal_mask(3, 5, q_offset=2)
    assert torch.equal(allow, expected)


def test_combine_rejects_additive_masks() -> None:
    with pytest.raises(TypeError, match="bool"):
        combine_masks(causal_mask(2, 2), torch.zeros(2, 2))


@SETTINGS
@given(data=st.data())
def test_padding_mask_negates_and_adds_axes(data: st.DataObject) -> None:
    kpm = data.draw(_bool_masks((2, 6)))
    allow = padding_mask(kpm)
    assert allow.shape == (2, 1, 1, 6)
    assert torch.equal(allow[:, 0, 0, :], ~kpm)


def test_padding_mask_rejects_non_bool() -> None:
    with pytest.raises(ValueError, match="bool"):
        padding_mask(torch.zeros(2, 3, dtype=torch.int64))


@SETTINGS
@given(lengths=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=4))
def test_document_mask_is_block_diagonal_for_sorted_ids(lengths: list[int]) -> None:
    ids = torch.cat([torch.full((n,), d) for d, n in enumerate(lengths)])[None, :]
    mask = document_mask(ids)
    blocks = torch.block_diag(*[torch.ones(n, n) for n in lengths]).bool()
    assert mask.shape == (1, 1, ids.shape[1], ids.shape[1])
    assert torch.equal(mask[0, 0], blocks)


@SETTINGS
@given(ids=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=10))
def test_document_mask_is_symmetric_with_a_true_diagonal(ids: list[int]) -> None:
    mask = document_mask(torch.tensor([ids]))[0, 0]
    assert torch.equal(mask, mask.T)
    assert mask.diagonal().all()


def test_document_mask_with_separate_key_ids() -> None:
    q_ids = torch.tensor([[1, 2]])
    k_ids = torch.tensor([[1, 1, 2]])
    expected = torch.tensor([[True, True, False], [False, False, True]])
    assert torch.equal(document_mask(q_ids, k_ids)[0, 0], expected)


@SETTINGS
@given(data=st.data())
def test_additive_bias_exponentiates_to_the_mask(data: st.DataObject) -> None:
    mask = data.draw(_bool_masks((2, 3, 5)))
    bias = to_additive_bias(mask)
    assert bias.dtype == torch.float32 and bias.shape == mask.shape
    assert torch.equal(bias.exp(), mask.float())


def test_additive_bias_dtype_and_fill() -> None:
    mask = causal_mask(2, 2)
    bias = to_additive_bias(mask, torch.bfloat16, fill=-1e4)
    assert bias.dtype == torch.bfloat16
    assert torch.equal(bias, torch.tensor([[0.0, -1e4], [0.0, 0.0]], dtype=torch.bfloat16))


# ------------------------------------------------------------------------------------------ SDPA agreement


def _qkv(b: int, h: int, tq: int, tk: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, t, d, generator=g) for t in (tq, tk, tk))


@SETTINGS
@given(data=st.data(), tq=sizes, tk=sizes, q_offset=offsets, window=st.none() | windows)
def test_bool_mask_and_additive_bias_agree_in_sdpa(
    data: st.DataObject, tq: int, tk: int, q_offset: int, window: int | None
) -> None:
    kpm = data.draw(_bool_masks((2, tk)))
    allow = combine_masks(structural_mask(tq, tk, causal=True, window=window, q_offset=q_offset), padding_mask(kpm))
    q, k, v = _qkv(2, 2, tq, tk)
    out_bool = F.scaled_dot_product_attention(q, k, v, attn_mask=allow)
    out_bias = F.scaled_dot_product_attention(q, k, v, attn_mask=to_additive_bias(allow))
    # A row with no allowed key is undefined in SDPA (NaN or zeros depending on the backend); compare the rest.
    live = allow.expand(2, 2, tq, tk).any(-1)
    torch.testing.assert_close(out_bool[live], out_bias[live], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [1, 5, 16])
def test_square_causal_mask_equals_sdpa_is_causal(t: int) -> None:
    q, k, v = _qkv(2, 3, t, t)
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, t))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_cached_decoding_rows_equal_the_full_causal_pass() -> None:
    # The last tq queries attending with q_offset = tk - tq reproduce the last rows of the full causal pass.
    tq, tk = 3, 7
    q, k, v = _qkv(1, 2, tk, tk)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    tail = F.scaled_dot_product_attention(q[:, :, -tq:], k, v, attn_mask=causal_mask(tq, tk, q_offset=tk - tq))
    torch.testing.assert_close(tail, full[:, :, -tq:])
