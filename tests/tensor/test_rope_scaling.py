"""RoPE scalings (linear, dynamic NTK, Llama 3, YaRN) against ``transformers.modeling_rope_utils`` itself.

Each case builds a ``LlamaConfig`` with the matching ``rope_parameters`` and asks transformers' own
``ROPE_INIT_FUNCTIONS`` for the inverse frequencies and the attention factor. Tolerance: float32 (the default
``assert_close`` tolerances for float32); in practice the tables agree bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from tensor import rope_attention_factor, rope_cos_sin, rope_inv_freq


def _hf_config(head_dim: int, max_positions: int, **rope_parameters) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        rope_parameters=rope_parameters,
    )


def _close(ours: torch.Tensor, theirs: torch.Tensor, label: str) -> None:
    print(f"{label}: max abs diff {(ours - theirs).abs().max().item():.3e}")
    torch.testing.assert_close(ours, theirs)  # float32 tolerances


# The real Llama 3.1 setting (head dim 128, base 500000, factor 8 over 8192 tokens) and two tiny ones.
LLAMA3 = {
    "llama-3.1": (128, 500000.0, dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original=8192)),
    "tiny": (16, 10000.0, dict(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original=16)),
    "tiny-band": (32, 10000.0, dict(factor=2.0, low_freq_factor=0.5, high_freq_factor=8.0, original=64)),
}


@pytest.mark.parametrize("case", LLAMA3)
def test_llama3_matches_transformers(case: str) -> None:
    head_dim, theta, p = LLAMA3[case]
    hf = _hf_config(
        head_dim,
        p["original"] * 16,
        rope_type="llama3",
        rope_theta=theta,
        factor=p["factor"],
        low_freq_factor=p["low_freq_factor"],
        high_freq_factor=p["high_freq_factor"],
        original_max_position_embeddings=p["original"],
    )
    theirs, attention = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    ours = rope_inv_freq(
        head_dim,
        theta,
        scaling="llama3",
        factor=p["factor"],
        original_max_seq_len=p["original"],
        low_freq_factor=p["low_freq_factor"],
        high_freq_factor=p["high_freq_factor"],
    )
    _close(ours, theirs, f"llama3 {case}")
    assert rope_attention_factor("llama3", p["factor"]) == attention == 1.0


def test_llama3_keeps_high_and_interpolates_low_frequencies() -> None:
    plain = rope_inv_freq(128, 500000.0)
    scaled = rope_inv_freq(128, 500000.0, scaling="llama3", factor=8.0, original_max_seq_len=8192)
    wavelength = 2 * math.pi / plain
    assert torch.equal(scaled[wavelength < 8192 / 4], plain[wavelength < 8192 / 4])
    torch.testing.assert_close(scaled[wavelength > 8192], plain[wavelength > 8192] / 8)
    band = (wavelength >= 8192 / 4) & (wavelength <= 8192)
    assert band.any() and bool(((scaled[band] <= plain[band]) & (scaled[band] >= plain[band] / 8)).all())


YARN = {
    "default-betas": (16, 10000.0, dict(factor=4.0, original=16)),
    "qwen-like": (64, 1000000.0, dict(factor=4.0, original=32768)),
    "custom-betas": (32, 10000.0, dict(factor=8.0, original=64, beta_fast=16.0, beta_slow=2.0)),
    "attention-factor": (16, 10000.0, dict(factor=2.0, original=32, attention_factor=1.3)),
    "narrow-range": (8, 10000.0, dict(factor=2.0, original=8)),
}


@pytest.mark.parametrize("case", YARN)
def test_yarn_matches_transformers(case: str) -> None:
    head_dim, theta, p = YARN[case]
    extra = {k: p[k] for k in ("beta_fast", "beta_slow", "attention_factor") if k in p}
    hf = _hf_config(
        head_dim,
        int(p["original"] * p["factor"]),
        rope_type="yarn",
        rope_theta=theta,
        factor=p["factor"],
        original_max_position_embeddings=p["original"],
        **extra,
    )
    theirs, attention = ROPE_INIT_FUNCTIONS["yarn"](hf, "cpu")
    betas = {k: v for k, v in extra.items() if k != "attention_factor"}
    ours = rope_inv_freq(head_dim, theta, scaling="yarn", factor=p["factor"], original_max_seq_len=p["original"], **betas)
    _close(ours, theirs, f"yarn {case}")
    ours_attention = rope_attention_factor("yarn", p["factor"], extra.get("attention_factor"))
    print(f"yarn {case}: attention factor ours {ours_attention!r}, transformers {attention!r}")
    assert math.isclose(ours_attention, attention, rel_tol=1e-12)


def test_yarn_tables_scaled_by_the_attention_factor_match_transformers() -> None:
    """LlamaRotaryEmbedding multiplies cos and sin by the attention factor; so does rope_cos_sin(scale=)."""
    hf = LlamaRotaryEmbedding(
        _hf_config(16, 64, rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16)
    )
    positions = torch.arange(0, 64, 5)
    x = torch.zeros(1, 1, len(positions), 16)
    hf_cos, hf_sin = hf(x, positions[None])
    inv_freq = rope_inv_freq(16, 10000.0, scaling="yarn", factor=4.0, original_max_seq_len=16)
    cos, sin = rope_cos_sin(positions, inv_freq, scale=rope_attention_factor("yarn", 4.0))
    _close(cos, hf_cos[0], "yarn cos")
    _close(sin, hf_sin[0], "yarn sin")


@pytest.mark.parametrize("length", [1, 15, 16, 17, 40, 1000])
@pytest.mark.parametrize(("head_dim", "theta", "factor"), [(16, 10000.0, 2.0), (64, 500000.0, 4.0)])
def test_dynamic_matches_transformers(length: int, head_dim: int, theta: float, factor: float) -> None:
    """transformers measures dynamic NTK from ``max_position_embeddings`` (our ``original_max_seq_len``) and
    passes the current length as a tensor in its forward (``max(position_ids) + 1``)."""
    hf = _hf_config(head_dim, 16, rope_type="dynamic", rope_theta=theta, factor=factor)
    theirs, attention = ROPE_INIT_FUNCTIONS["dynamic"](hf, "cpu", seq_len=torch.tensor(length))
    ours = rope_inv_freq(
        head_dim, theta, scaling="dynamic", factor=factor, original_max_seq_len=16, seq_len=torch.tensor(length)
    )
    _close(ours, theirs, f"dynamic L={length}")
    assert attention == 1.0
    if length <= 16:  # within the original context: the plain table
        assert torch.equal(ours, rope_inv_freq(head_dim, theta))


def test_dynamic_lengths_per_row() -> None:
    lengths = torch.tensor([5, 16, 33, 70])
    rows = rope_inv_freq(16, 10000.0, scaling="dynamic", factor=2.0, original_max_seq_len=16, seq_len=lengths)
    assert rows.shape == (4, 8)
    for row, length in zip(rows, lengths.tolist()):
        single = rope_inv_freq(16, 10000.0, scaling="dynamic", factor=2.0, original_max_seq_len=16, seq_len=length)
        assert torch.equal(row, single)
    positions = torch.arange(6).expand(4, -1)
    cos, _ = rope_cos_sin(positions, rows)
    assert cos.shape == (4, 6, 16)
    assert torch.equal(cos[2], rope_cos_sin(positions[2], rows[2])[0])
    # No length given: within the original context, so the plain table.
    assert torch.equal(
        rope_inv_freq(16, 10000.0, scaling="dynamic", factor=2.0, original_max_seq_len=16), rope_inv_freq(16, 10000.0)
    )


def test_linear_matches_transformers() -> None:
    theirs, _ = ROPE_INIT_FUNCTIONS["linear"](_hf_config(32, 64, rope_type="linear", rope_theta=10000.0, factor=3.0))
    _close(rope_inv_freq(32, 10000.0, scaling="linear", factor=3.0), theirs, "linear")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scaling": "llama3", "factor": 8.0}, "original_max_seq_len"),
        ({"scaling": "yarn", "factor": 4.0}, "original_max_seq_len"),
        ({"scaling": "dynamic", "factor": 2.0, "original_max_seq_len": 0}, "original_max_seq_len"),
        ({"scaling": "llama3", "factor": 8.0, "original_max_seq_len": 64, "low_freq_factor": 4.0}, "low_freq_factor"),
        ({"scaling": "yarn", "factor": 4.0, "original_max_seq_len": 64, "theta": 1.0}, "theta > 1"),
    ],
)
def test_scalings_reject_missing_or_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rope_inv_freq(16, **{"theta": 10000.0, **kwargs})


def test_attention_factor_is_yarn_only() -> None:
    assert rope_attention_factor("none") == rope_attention_factor("linear", 2.0) == 1.0
    assert rope_attention_factor("yarn", 1.0) == 1.0
    assert math.isclose(rope_attention_factor("yarn", 4.0), 0.1 * math.log(4.0) + 1)
    with pytest.raises(ValueError, match="YaRN setting"):
        rope_attention_factor("llama3", 8.0, 1.2)
    with pytest.raises(ValueError, match="> 0"):
        rope_attention_factor("yarn", 4.0, 0.0)
