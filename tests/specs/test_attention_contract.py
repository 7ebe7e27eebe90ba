"""AttentionCall validation and KernelCaps.missing."""

from __future__ import annotations

import pytest
import torch

from specs import AttentionCall, KernelCaps, ShapeError, set_checks
from specs.attention import FEATURES


def _qkv(b=2, hq=4, hkv=2, tq=3, tk=5, d=8, dtype=torch.float32, grad=False):
    q = torch.zeros(b, hq, tq, d, dtype=dtype, requires_grad=grad)
    k = torch.zeros(b, hkv, tk, d, dtype=dtype)
    v = torch.zeros(b, hkv, tk, d, dtype=dtype)
    return q, k, v


def _call(mask=None, **kw):
    shape = {key: kw.pop(key) for key in ("b", "hq", "hkv", "tq", "tk", "d", "dtype", "grad") if key in kw}
    q, k, v = _qkv(**shape)
    return AttentionCall(q=q, k=k, v=v, allow_mask=mask, **kw)


# ------------------------------------------------------------------------------------------------ valid calls


@pytest.mark.parametrize(
    "mask_shape",
    [None, (5,), (3, 5), (1, 1, 3, 5), (2, 1, 3, 5), (2, 4, 3, 5), (2, 1, 1, 5), (1, 4, 1, 1), ()],
)
def test_valid_calls(mask_shape):
    mask = None if mask_shape is None else torch.ones(mask_shape, dtype=torch.bool)
    call = _call(mask, causal=True, window=4, scale=0.5, softcap=30.0, dropout_p=0.1, q_offset=2)
    assert call.head_dim == 8 and call.gqa and call.device_type == "cpu" and not call.needs_backward


def test_mha_and_mqa_flags():
    assert not _call(hq=4, hkv=4).gqa
    assert _call(hq=4, hkv=1).gqa


def test_needs_backward_from_any_input():
    q, k, v = _qkv()
    assert AttentionCall(q=q, k=k.requires_grad_(), v=v).needs_backward
    q, k, v = _qkv()
    assert AttentionCall(q=q, k=k, v=v.requires_grad_()).needs_backward
    assert _call(grad=True).needs_backward


# ------------------------------------------------------------------------------------------------ invalid calls


def test_batch_mismatch():
    q, _, v = _qkv()
    k = torch.zeros(3, 2, 5, 8)
    with pytest.raises(ShapeError, match="k: dim 'B' \\(axis 0\\) is 3 but B = 2"):
        AttentionCall(q=q, k=k, v=v)


def test_head_dim_mismatch():
    q, k, _ = _qkv()
    with pytest.raises(ShapeError, match="v: dim 'D' \\(axis 3\\) is 16 but D = 8"):
        AttentionCall(q=q, k=k, v=torch.zeros(2, 2, 5, 16))


def test_key_value_length_mismatch():
    q, k, _ = _qkv()
    with pytest.raises(ShapeError, match="v: dim 'Tk' \\(axis 2\\) is 6 but Tk = 5"):
        AttentionCall(q=q, k=k, v=torch.zeros(2, 2, 6, 8))


def test_kv_heads_mismatch():
    q, k, _ = _qkv()
    with pytest.raises(ShapeError, match="v: dim 'Hkv'"):
        AttentionCall(q=q, k=k, v=torch.zeros(2, 1, 5, 8))


def test_wrong_rank():
    _, k, v = _qkv()
    with pytest.raises(ShapeError, match="q: expected 4 dims"):
        AttentionCall(q=torch.zeros(4, 3, 8), k=k, v=v)


def test_query_heads_not_multiple_of_kv_heads():
    with pytest.raises(ValueError, match="q has 4 heads, not a multiple of the 3 heads of k/v"):
        _call(hq=4, hkv=3)


def test_dtype_mismatch():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="q/k/v dtypes differ: float32, bfloat16, float32"):
        AttentionCall(q=q, k=k.to(torch.bfloat16), v=v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.uint8])
def test_non_bool_mask(dtype):
    with pytest.raises(ValueError, match=f"allow_mask must be bool \\(True = may attend\\), got {str(dtype)[6:]}"):
        _call(torch.ones(2, 4, 3, 5, dtype=dtype))


@pytest.mark.parametrize("shape", [(2, 2, 3, 5), (2, 4, 3, 4), (3, 1, 3, 5), (4,), (1, 2, 4, 3, 5), (2, 4, 5, 3)])
def test_mask_not_broadcastable(shape):
    with pytest.raises(ValueError, match="does not broadcast to \\(B, Hq, Tq, Tk\\) = \\[2, 4, 3, 5\\]"):
        _call(torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"q_offset": -1}, "q_offset must be >= 0, got -1"),
        ({"window": 0}, "window must be >= 1, got 0"),
        ({"softcap": 0.0}, "softcap must be > 0"),
        ({"softcap": -5.0}, "softcap must be > 0"),
        ({"dropout_p": 1.0}, "dropout_p must be in \\[0, 1\\)"),
        ({"dropout_p": -0.1}, "dropout_p must be in \\[0, 1\\)"),
    ],
)
def test_bad_scalars(kw, match):
    with pytest.raises(ValueError, match=match):
        _call(**kw)


def test_call_is_frozen():
    call = _call()
    with pytest.raises(AttributeError):
        call.causal = True  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ KernelCaps

ALL = KernelCaps(
    dtypes=frozenset({"float32", "bfloat16", "float16"}),
    devices=frozenset({"cpu", "cuda"}),
    features=frozenset(FEATURES),
)
BARE = KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"}))


def _names(missing):
    return [m.split(" ")[0] for m in missing]


@pytest.mark.parametrize(
    "call_kw, missing",
    [
        ({"hkv": 4}, []),
        ({}, ["gqa"]),
        ({"hkv": 4, "mask": torch.ones(3, 5, dtype=torch.bool)}, ["allow_mask"]),
        ({"hkv": 4, "causal": True}, ["causal"]),
        ({"hkv": 4, "causal": True, "q_offset": 2}, ["causal", "q_offset"]),
        ({"hkv": 4, "q_offset": 2}, []),  # an offset without causal/window changes nothing
        ({"hkv": 4, "window": 3}, ["window"]),
        ({"hkv": 4, "window": 3, "q_offset": 1}, ["q_offset", "window"]),
        ({"hkv": 4, "softcap": 50.0}, ["softcap"]),
        ({"hkv": 4, "dropout_p": 0.1}, ["dropout"]),
        ({"hkv": 4, "dropout_p": 0.0}, []),
        ({"hkv": 4, "scale": 0.1}, []),  # any scale is fine
        ({"hkv": 4, "grad": True}, ["backward"]),
        ({"hkv": 4, "dtype": torch.bfloat16}, ["dtype"]),
        (
            {
                "dtype": torch.float16,
                "causal": True,
                "q_offset": 1,
                "window": 2,
                "softcap": 1.0,
                "dropout_p": 0.5,
                "grad": True,
                "mask": torch.ones(2, 1, 3, 5, dtype=torch.bool),
            },
            ["dtype", "allow_mask", "causal", "q_offset", "gqa", "window", "softcap", "dropout", "backward"],
        ),
    ],
)
def test_missing_lists_exactly_what_is_lacking(call_kw, missing):
    call = _call(**call_kw)
    assert _names(BARE.missing(call)) == missing
    assert ALL.missing(call) == []


def test_missing_dtype_device_and_head_dim_phrases():
    caps = KernelCaps(
        dtypes=frozenset({"float16", "bfloat16"}),
        devices=frozenset({"cuda"}),
        features=frozenset({"gqa"}),
        head_dims=frozenset({64, 128}),
    )
    assert caps.missing(_call(d=8)) == [
        "dtype float32 (supports bfloat16, float16)",
        "device cpu (supports cuda)",
        "head dim 8 (supports [64, 128])",
    ]
    ok = KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"}), features=frozenset({"gqa"}), head_dims=frozenset({8}))
    assert ok.missing(_call(d=8)) == []
    assert _names(ok.missing(_call(d=16))) == ["head"]


def test_head_dims_none_means_any():
    caps = KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"}), features=frozenset({"gqa"}))
    assert caps.missing(_call(d=24)) == []


def test_attention_call_with_checks_disabled_does_not_crash():
    """With TensorSpec checks off the call still validates its own rules (Hq % Hkv, dtypes, mask, scalars)."""
    q, k, v = _qkv()
    with set_checks(False):
        call = AttentionCall(q=q, k=k, v=v)
    assert call.gqa


def test_kv_lens_is_checked_and_counted_as_a_capability():
    q, k = torch.zeros(2, 4, 3, 8), torch.zeros(2, 2, 5, 8)
    with pytest.raises(ShapeError, match="kv_lens"):
        AttentionCall(q=q, k=k, v=k, kv_lens=torch.tensor([5, 5, 5]))
    with pytest.raises(ShapeError, match="kv_lens: dtype float32"):
        AttentionCall(q=q, k=k, v=k, kv_lens=torch.tensor([5.0, 5.0]))
    call = AttentionCall(q=q, k=k, v=k, kv_lens=torch.tensor([5, 2]))
    assert "kv_lens" in KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"}), features=frozenset({"gqa"})).missing(call)


def test_unknown_feature_names_are_refused():
    with pytest.raises(ValueError, match="unknown kernel features \\['flash'\\]"):
        KernelCaps(dtypes=frozenset({"float32"}), devices=frozenset({"cpu"}), features=frozenset({"flash"}))


def test_every_feature_a_call_can_need_is_declared_once():
    """features() only ever names entries of FEATURES, and each entry can be needed by some call."""
    q, k = torch.zeros(2, 4, 3, 8, requires_grad=True), torch.zeros(2, 2, 5, 8)
    busy = AttentionCall(
        q=q, k=k, v=k, allow_mask=torch.ones(3, 5, dtype=torch.bool), causal=True, window=2, softcap=1.0,
        dropout_p=0.1, q_offset=1, kv_lens=torch.tensor([5, 4]),
    )
    pool = torch.zeros(6, 2, 4, 8)
    paged = AttentionCall(q=q, k=pool, v=pool, block_table=torch.tensor([[0, 1], [2, 3]]))
    assert busy.features() | paged.features() == frozenset(FEATURES)


# ----------------------------------------------------------------------------------------- per-row q_offset


def test_per_row_q_offset_is_a_b_tensor_and_needs_the_capability():
    q, k = torch.zeros(2, 4, 1, 8), torch.zeros(2, 2, 5, 8)
    call = AttentionCall(q=q, k=k, v=k, causal=True, q_offset=torch.tensor([4, 2]))
    assert "q_offset" in call.features()
    # A tensor offset is never compared on the host (that would sync), so even zeros count as an offset.
    assert "q_offset" in AttentionCall(q=q, k=k, v=k, causal=True, q_offset=torch.zeros(2, dtype=torch.long)).features()
    with pytest.raises(ShapeError, match="q_offset: dim 'B'"):
        AttentionCall(q=q, k=k, v=k, causal=True, q_offset=torch.tensor([1, 2, 3]))
    with pytest.raises(ShapeError, match="q_offset: dtype float32"):
        AttentionCall(q=q, k=k, v=k, causal=True, q_offset=torch.tensor([1.0, 2.0]))


# ------------------------------------------------------------------------------------------------ paged calls


def test_paged_call_takes_page_pools_and_a_block_table():
    q = torch.zeros(2, 4, 3, 8)
    pool = torch.zeros(7, 2, 4, 8)  # 7 pages of 4 slots
    call = AttentionCall(q=q, k=pool, v=pool, block_table=torch.tensor([[0, 3], [5, 1]]), causal=True, q_offset=5)
    assert call.key_len == 8 and "paged" in call.features()
    # The allow mask broadcasts against the logical key length (pages x page size), not the pool.
    AttentionCall(q=q, k=pool, v=pool, block_table=torch.tensor([[0, 3], [5, 1]]), allow_mask=torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        AttentionCall(q=q, k=pool, v=pool, block_table=torch.tensor([[0, 3], [5, 1]]), allow_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="block_table: dim 'B'"):
        AttentionCall(q=q, k=pool, v=pool, block_table=torch.tensor([[0, 3]]))
    with pytest.raises(ShapeError, match="k \\(paged\\): expected 4 dims"):
        AttentionCall(q=q, k=pool[0], v=pool[0], block_table=torch.tensor([[0, 3], [5, 1]]))
