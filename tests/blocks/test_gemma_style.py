"""The Gemma-style parts of ``blocks``: the offset RMSNorm, GeGLU, the constant scale and soft-cap, and the
sandwich-norm block, against their formulas and Hugging Face's Gemma 2 modules on copied weights.

Exact (``torch.equal``) where our code runs the same ops in the same order as Hugging Face's; ``ATOL = 1e-6``
where a fused op (PyTorch's ``rms_norm``, matmul blocking) may round differently in the last float32 ulps.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.gemma2.configuration_gemma2 import Gemma2Config
from transformers.models.gemma2.modeling_gemma2 import Gemma2MLP, Gemma2RMSNorm

import specs
from attn.context import AttentionContext
from blocks import GeGLU, OffsetRMSNorm, RMSNorm, SandwichNormBlock, Scale, Softcap, build_block, build_mlp, build_norm
from tensor.rope import rope_cos_sin, rope_inv_freq

ATOL = 1e-6


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3.0


def _cfg(*overrides: str) -> specs.ModelConfig:
    return specs.apply_overrides(specs.load_preset("llama-tiny"), list(overrides))


# ----------------------------------------------------------------------------------------------------- norms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_offset_rms_norm_matches_hf_gemma(dtype: torch.dtype) -> None:
    ours = OffsetRMSNorm(16, eps=1e-6)
    assert torch.equal(ours.weight, torch.zeros(16))  # initialised to a unit scale, as Gemma stores it
    ours.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    theirs = Gemma2RMSNorm(16, eps=1e-6)
    theirs.weight.copy_(ours.weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = _x(3, 4, 16).to(dtype)
    out = ours(x)
    assert out.dtype == dtype
    # float32 statistics and scale, one rounding at the end: at most one bf16 ulp from the unfused HF ops
    torch.testing.assert_close(out, theirs(x), atol=ATOL, rtol=1e-6 if dtype == torch.float32 else 2**-7)


def test_build_norm_picks_the_offset_form_from_the_config() -> None:
    norm = build_norm(_cfg("norm_weight_offset=1.0", "norm_eps=1e-6"))
    assert isinstance(norm, OffsetRMSNorm) and (norm.offset, norm.eps) == (1.0, 1e-6)
    assert type(build_norm(_cfg())) is RMSNorm
    norm.weight.data.fill_(0.5)
    norm.reset_parameters()
    assert torch.equal(norm.weight, torch.zeros(64))


def test_llama_form_keeps_the_input_dtype_under_a_float32_weight() -> None:
    """Autocast hands bf16 heads to a float32 QK-norm weight; q, k and v must keep one dtype."""
    out = RMSNorm(8)(torch.randn(2, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------------- MLP


@pytest.mark.parametrize(("activation", "approximate"), [("gelu_pytorch_tanh", "tanh"), ("gelu", "none")])
@torch.no_grad()
def test_geglu_matches_hf_gemma_mlp(activation: str, approximate: str) -> None:
    hf = Gemma2MLP(Gemma2Config(hidden_size=16, intermediate_size=40, hidden_activation=activation))
    ours = GeGLU(16, 40, bias=False, approximate=approximate)
    torch.manual_seed(0)
    for p in hf.parameters():
        p.normal_(0.0, 0.3)
    ours.w1.weight.copy_(hf.gate_proj.weight)
    ours.w3.weight.copy_(hf.up_proj.weight)
    ours.w2.weight.copy_(hf.down_proj.weight)
    x = _x(2, 5, 16)
    torch.testing.assert_close(ours(x), hf(x), atol=ATOL, rtol=1e-6)
    gate = torch.nn.functional.gelu(ours.w1(x), approximate=approximate)
    torch.testing.assert_close(ours(x), ours.w2(gate * ours.w3(x)), atol=0.0, rtol=0.0)


def test_build_mlp_geglu() -> None:
    mlp = build_mlp(_cfg("mlp.kind=geglu", "mlp.gelu_approximate=tanh", "mlp.bias=true"))
    assert isinstance(mlp, GeGLU) and mlp.approximate == "tanh" and mlp.w1.bias is not None


# ---------------------------------------------------------------------------------------- scale and soft-cap


def test_scale_rounds_the_factor_to_the_input_dtype() -> None:
    """Gemma's sqrt(3072) = 55.4256 is 55.5 in bfloat16, and the embeddings are multiplied by that."""
    x = torch.ones(3, dtype=torch.bfloat16)
    assert Scale(math.sqrt(3072))(x).tolist() == [55.5] * 3
    assert Scale(math.sqrt(3072))(torch.ones(1)).item() == pytest.approx(math.sqrt(3072), rel=1e-7)


def test_softcap_is_a_smooth_clamp() -> None:
    x = torch.tensor([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    torch.testing.assert_close(Softcap(30.0)(x), 30.0 * torch.tanh(x / 30.0), atol=0.0, rtol=0.0)
    assert Softcap(30.0)(x).abs().max() <= 30.0


# -------------------------------------------------------------------------------------------- sandwich block


@torch.no_grad()
def test_sandwich_norm_block_wiring() -> None:
    """``x + out_norm(f(norm(x)))`` for attention then MLP, with four distinct norms."""
    cfg = _cfg("residual=sandwich", "norm_weight_offset=1.0")
    torch.manual_seed(0)
    block = build_block(cfg, 0).eval()
    assert isinstance(block, SandwichNormBlock)
    for p in block.parameters():
        p.normal_(0.0, 0.2)
    x = _x(2, 6, cfg.d_model, seed=3)
    ctx = AttentionContext(rope=rope_cos_sin(torch.arange(6), rope_inv_freq(cfg.head_dim, 10000.0)))
    h = x + block.attn_out_norm(block.attn(block.attn_norm(x), ctx))
    expected = h + block.mlp_out_norm(block.mlp(block.mlp_norm(h)))
    assert torch.equal(block(x, ctx), expected)
    norms = [block.attn_norm, block.attn_out_norm, block.mlp_norm, block.mlp_out_norm]
    assert all(isinstance(n, OffsetRMSNorm) for n in norms) and len({id(n.weight) for n in norms}) == 4


def test_qk_norm_takes_the_model_norm_form() -> None:
    block = build_block(_cfg("attention.qk_norm=true", "norm_weight_offset=1.0", "residual=sandwich"), 0)
    assert isinstance(block.attn.q_norm, OffsetRMSNorm) and isinstance(block.attn.k_norm, OffsetRMSNorm)
    assert block.attn.q_norm.weight.shape == (16,)  # over the head dim
