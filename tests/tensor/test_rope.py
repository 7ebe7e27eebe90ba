"""RoPE: the relative-position property, parity with Hugging Face Llama, and the scaling variants."""

from __future__ import annotations

import math

import pytest
import torch
import transformers  # noqa: F401  (the oracle must be installed: a skip would hide a broken dev install)
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

from tensor import apply_rope, rope_cos_sin, rope_inv_freq, rotate_half

HIDDEN, HEADS = 64, 4
HEAD_DIM = HIDDEN // HEADS


def _hf_rotary(theta: float, rope_type: str = "default", factor: float | None = None) -> LlamaRotaryEmbedding:
    """A Llama rotary module, whichever way the installed transformers spells its RoPE settings.

    transformers 5 takes ``rope_parameters={"rope_type", "rope_theta", ...}``; 4.x took ``rope_theta`` plus a
    ``rope_scaling`` dict, and would silently ignore ``rope_parameters``.
    """
    extra = {} if factor is None else {"factor": factor}
    if hasattr(LlamaConfig(), "rope_parameters"):
        cfg = LlamaConfig(
            hidden_size=HIDDEN,
            num_attention_heads=HEADS,
            rope_parameters={"rope_type": rope_type, "rope_theta": theta, **extra},
        )
    else:
        scaling = None if rope_type == "default" else {"rope_type": rope_type, **extra}
        cfg = LlamaConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, rope_theta=theta, rope_scaling=scaling)
    return LlamaRotaryEmbedding(cfg)


def _rope_at(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    cos, sin = rope_cos_sin(positions, inv_freq)
    return apply_rope(x, cos, sin)


# --------------------------------------------------------------------------------------------- HF parity


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_inv_freq_matches_hf_bit_for_bit(theta: float) -> None:
    assert torch.equal(rope_inv_freq(HEAD_DIM, theta), _hf_rotary(theta).inv_freq)


def test_linear_inv_freq_matches_hf_linear_rope() -> None:
    ours = rope_inv_freq(HEAD_DIM, 10000.0, scaling="linear", factor=4.0)
    torch.testing.assert_close(ours, _hf_rotary(10000.0, "linear", 4.0).inv_freq, rtol=0, atol=0)


@pytest.mark.parametrize("per_sequence_positions", [False, True])
def test_cos_sin_and_rotation_match_hf(per_sequence_positions: bool) -> None:
    g = torch.Generator().manual_seed(0)
    b, t = 2, 11
    q = torch.randn(b, HEADS, t, HEAD_DIM, generator=g)
    k = torch.randn(b, HEADS, t, HEAD_DIM, generator=g)
    position_ids = torch.randint(0, 4096, (b, t), generator=g) if per_sequence_positions else torch.arange(t)[None]
    hf = _hf_rotary(10000.0)
    hf_cos, hf_sin = hf(q, position_ids)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)

    positions = position_ids if per_sequence_positions else position_ids[0]
    cos, sin = rope_cos_sin(positions, rope_inv_freq(HEAD_DIM, 10000.0))
    expected_shape = (b, t, HEAD_DIM) if per_sequence_positions else (t, HEAD_DIM)
    assert cos.shape == expected_shape
    torch.testing.assert_close(cos, hf_cos.reshape(expected_shape), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, hf_sin.reshape(expected_shape), rtol=0, atol=1e-6)
    torch.testing.assert_close(apply_rope(q, cos, sin), hf_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(apply_rope(k, cos, sin), hf_k, rtol=0, atol=1e-6)


def test_bf16_rotation_matches_hf() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, HEADS, 9, HEAD_DIM, generator=g).to(torch.bfloat16)
    position_ids = torch.arange(100, 109)[None]
    hf_cos, hf_sin = _hf_rotary(10000.0)(q, position_ids)
    hf_q, _ = apply_rotary_pos_emb(q, q, hf_cos, hf_sin)
    cos, sin = rope_cos_sin(position_ids[0], rope_inv_freq(HEAD_DIM, 10000.0), dtype=torch.bfloat16)
    out = apply_rope(q, cos, sin)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, hf_q)


# ---------------------------------------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(min_value=0, max_value=2048),
    n=st.integers(min_value=0, max_value=2048),
    shift=st.integers(min_value=0, max_value=2048),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_scores_depend_only_on_relative_position(m: int, n: int, shift: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, 1, HEAD_DIM, dtype=torch.float32, generator=g)
    k = torch.randn(1, 1, 1, HEAD_DIM, dtype=torch.float32, generator=g)
    inv_freq = rope_inv_freq(HEAD_DIM, 10000.0)
    base = (_rope_at(q, torch.tensor([m]), inv_freq) * _rope_at(k, torch.tensor([n]), inv_freq)).sum()
    moved = (_rope_at(q, torch.tensor([m + shift]), inv_freq) * _rope_at(k, torch.tensor([n + shift]), inv_freq)).sum()
    # Not exact in fp32: positions reach 4096, and an angle p * f (f < 1 past the first, exact, frequency)
    # rounds to half an ulp, up to 6e-5 rad near 1300 rad. A score mixes four such angles (q and k, before and
    # after the shift), so it may move by ~2.4e-4 rad times the weight of that pair in |q||k| (seen: < 3e-5).
    scale = float(q.norm() * k.norm())
    assert abs(float(base) - float(moved)) <= 2e-4 * scale


@settings(max_examples=20, deadline=None)
@given(positions=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8))
def test_rotation_preserves_norms(positions: list[int]) -> None:
    x = torch.randn(2, 3, len(positions), HEAD_DIM, generator=torch.Generator().manual_seed(len(positions)))
    out = _rope_at(x, torch.tensor(positions), rope_inv_freq(HEAD_DIM, 10000.0))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-6)


def test_position_zero_is_the_identity() -> None:
    x = torch.randn(1, 2, 1, HEAD_DIM)
    assert torch.equal(_rope_at(x, torch.tensor([0]), rope_inv_freq(HEAD_DIM, 10000.0)), x)


def test_rotate_half_is_a_quarter_turn() -> None:
    x = torch.arange(1.0, 7.0)
    assert torch.equal(rotate_half(x), torch.tensor([-4.0, -5.0, -6.0, 1.0, 2.0, 3.0]))
    assert torch.equal(rotate_half(rotate_half(x)), -x)


# -------------------------------------------------------------------------------------------------- scaling


@pytest.mark.parametrize("factor", [2.0, 4.0, 8.0])
def test_linear_scaling_is_position_interpolation(factor: float) -> None:
    positions = torch.arange(0, 64, 3)
    plain = rope_inv_freq(HEAD_DIM, 10000.0)
    scaled = rope_inv_freq(HEAD_DIM, 10000.0, scaling="linear", factor=factor)
    cos_s, sin_s = rope_cos_sin(positions, scaled)
    cos_p, sin_p = rope_cos_sin(positions / factor, plain)
    torch.testing.assert_close(cos_s, cos_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sin_s, sin_p, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_ntk_scaling_only_changes_the_base(factor: float) -> None:
    theta = 10000.0
    expected_base = theta * factor ** (HEAD_DIM / (HEAD_DIM - 2))
    ours = rope_inv_freq(HEAD_DIM, theta, scaling="ntk", factor=factor)
    assert torch.equal(ours, rope_inv_freq(HEAD_DIM, expected_base))
    direct = torch.tensor([expected_base ** (-2 * i / HEAD_DIM) for i in range(HEAD_DIM // 2)], dtype=torch.float64)
    torch.testing.assert_close(ours.double(), direct, rtol=1e-6, atol=0)
    # The highest frequency stays; the lowest is stretched by exactly `factor`.
    plain = rope_inv_freq(HEAD_DIM, theta)
    assert ours[0] == plain[0] == 1.0
    assert math.isclose(float(plain[-1] / ours[-1]), factor, rel_tol=1e-5)


def test_cos_sin_dtype_is_a_cast_of_the_fp32_table() -> None:
    positions = torch.arange(3000, 3010)
    inv_freq = rope_inv_freq(HEAD_DIM, 10000.0)
    cos32, sin32 = rope_cos_sin(positions, inv_freq)
    cos16, sin16 = rope_cos_sin(positions, inv_freq, dtype=torch.bfloat16)
    assert torch.equal(cos16, cos32.to(torch.bfloat16)) and torch.equal(sin16, sin32.to(torch.bfloat16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_dim": 16, "theta": 1e4, "scaling": "longrope"}, "none, linear, ntk, dynamic, llama3, yarn"),
        ({"head_dim": 15, "theta": 1e4}, "even"),
        ({"head_dim": 16, "theta": 1e4, "factor": 2.0}, "scaling is 'none'"),
        ({"head_dim": 16, "theta": 0.0}, "theta"),
        ({"head_dim": 2, "theta": 1e4, "scaling": "ntk", "factor": 2.0}, "head_dim > 2"),
    ],
)
def test_inv_freq_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rope_inv_freq(**kwargs)


def test_apply_rope_rejects_mismatched_tables() -> None:
    x = torch.randn(1, 1, 4, HEAD_DIM)
    cos, sin = rope_cos_sin(torch.arange(4), rope_inv_freq(HEAD_DIM // 2, 10000.0))
    with pytest.raises(ValueError, match="head dim"):
        apply_rope(x, cos, sin)
