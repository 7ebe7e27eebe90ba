"""Norms and MLPs against their formulas and against Hugging Face's Llama modules on copied weights.

Tolerances: float32 formula checks use ``ATOL = 1e-6`` on O(1)-O(10) values; the formulas below reorder a
handful of float32 ops (erf vs PyTorch's GELU, sqrt-then-divide vs rsqrt-multiply), each a few ulps
(~1e-7 at these magnitudes). The Hugging Face comparisons are exact (``torch.equal``) where our code claims
to run the same ops in the same order (RMSNorm in float32 and bfloat16), and 1e-6 for the MLP, whose
matmuls may be blocked differently.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from torch import nn
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm  # noqa: E402

import specs
from blocks import GeluMLP, RMSNorm, SwiGLU, build_mlp, build_norm

ATOL = 1e-6  # float32; see the module docstring


def _x(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _randomize(module: nn.Module, *, mean_1d: float = 0.0, std: float = 0.2) -> nn.Module:
    """Random parameters; 1-D ones (norm scales, biases) centred on ``mean_1d`` (1.0 for norm scales)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(mean_1d if p.dim() == 1 else 0.0, std)
    return module


# ----------------------------------------------------------------------------------------------------- norms


@torch.no_grad()
def test_rms_norm_formula() -> None:
    norm = _randomize(RMSNorm(16, eps=1e-5), mean_1d=1.0)
    x = _x(2, 5, 16)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected, atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_rms_norm_matches_hf_llama(dtype: torch.dtype) -> None:
    ours = _randomize(RMSNorm(16, eps=1e-6), mean_1d=1.0).to(dtype)
    theirs = LlamaRMSNorm(16, eps=1e-6).to(dtype)
    theirs.weight.copy_(ours.weight)
    x = _x(3, 4, 16).to(dtype)
    out = ours(x)
    assert out.dtype == dtype
    assert torch.equal(out, theirs(x))  # same ops in the same order (fp32 statistics, cast, then weight)


@torch.no_grad()
def test_rms_norm_is_computed_in_float32_for_bf16_inputs() -> None:
    """A bf16 input must not lose its small components to a bf16 mean of squares."""
    x = _x(4, 64).to(torch.bfloat16)
    norm = RMSNorm(64).to(torch.bfloat16)
    x32 = x.float()
    expected = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(norm(x), expected)


def test_rms_norm_reset_parameters() -> None:
    norm = _randomize(RMSNorm(8), mean_1d=1.0)
    norm.reset_parameters()
    assert torch.equal(norm.weight.detach(), torch.ones(8))


def _cfg(**overrides) -> specs.ModelConfig:
    base = specs.load_preset("gpt-shakespeare-char")
    return specs.apply_overrides(base, [f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize("bias", [False, True])
def test_build_norm_layernorm_follows_norm_bias(bias: bool) -> None:
    cfg = _cfg(norm="layernorm", norm_bias=str(bias).lower(), norm_eps=1e-3)
    norm = build_norm(cfg)
    assert isinstance(norm, nn.LayerNorm)
    assert norm.normalized_shape == (cfg.d_model,)
    assert norm.eps == 1e-3
    assert (norm.bias is not None) is bias
    x = _x(2, 3, cfg.d_model)
    with torch.no_grad():
        _randomize(norm, mean_1d=1.0)
        expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-3)
        expected = expected * norm.weight + (norm.bias if bias else 0.0)
        torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)  # mean/var reductions: 1e-5


def test_build_norm_rmsnorm() -> None:
    cfg = specs.load_preset("llama-tiny")
    norm = build_norm(cfg)
    assert isinstance(norm, RMSNorm)
    assert norm.weight.shape == (cfg.d_model,)
    assert norm.eps == cfg.norm_eps


# ------------------------------------------------------------------------------------------------------ MLPs


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@torch.no_grad()
def test_gelu_mlp_formula(approximate: str, bias: bool) -> None:
    mlp = _randomize(GeluMLP(16, 40, bias=bias, approximate=approximate))
    x = _x(2, 5, 16, scale=1.0)
    h = x @ mlp.fc.weight.T + (mlp.fc.bias if bias else 0.0)
    if approximate == "none":
        act = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    else:
        act = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h.pow(3))))
    expected = act @ mlp.proj.weight.T + (mlp.proj.bias if bias else 0.0)
    torch.testing.assert_close(mlp(x), expected, atol=ATOL, rtol=1e-5)


@torch.no_grad()
def test_gelu_approximations_differ() -> None:
    """The two GELUs differ by up to ~5e-4 (near |h| ~ 2), so a test can tell whether the flag is honoured."""
    exact = GeluMLP(16, 40, bias=False, approximate="none")
    tanh = GeluMLP(16, 40, bias=False, approximate="tanh")
    with torch.no_grad():
        for mlp in (exact, tanh):  # fc = 2 * identity rows, proj = sum: the output is a sum of 40 GELUs
            mlp.fc.weight.copy_(2.0 * torch.eye(40, 16))
            mlp.proj.weight.fill_(1.0)
    x = torch.linspace(-1.5, 1.5, 16).expand(1, 16)
    assert (exact(x) - tanh(x)).abs().max() > 1e-4


@pytest.mark.parametrize("bias", [False, True])
@torch.no_grad()
def test_swiglu_formula(bias: bool) -> None:
    mlp = _randomize(SwiGLU(16, 40, bias=bias))
    x = _x(2, 5, 16, scale=1.0)

    def lin(layer: nn.Linear, z: torch.Tensor) -> torch.Tensor:
        return z @ layer.weight.T + (layer.bias if bias else 0.0)

    gate = lin(mlp.w1, x)
    expected = lin(mlp.w2, gate * torch.sigmoid(gate) * lin(mlp.w3, x))
    torch.testing.assert_close(mlp(x), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
@torch.no_grad()
def test_swiglu_matches_hf_llama_mlp(bias: bool) -> None:
    config = transformers.LlamaConfig(
        hidden_size=16, intermediate_size=40, num_attention_heads=4, hidden_act="silu", mlp_bias=bias
    )
    theirs = LlamaMLP(config)
    ours = SwiGLU(16, 40, bias=bias)
    # gate = w1, up = w3, down = w2
    ours.w1.load_state_dict(_randomize(theirs).gate_proj.state_dict())
    ours.w3.load_state_dict(theirs.up_proj.state_dict())
    ours.w2.load_state_dict(theirs.down_proj.state_dict())
    x = _x(3, 4, 16, scale=1.0)
    torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_build_mlp_swiglu(bias: bool) -> None:
    cfg = specs.apply_overrides(specs.load_preset("llama-tiny"), [f"mlp.bias={str(bias).lower()}"])
    mlp = build_mlp(cfg)
    assert isinstance(mlp, SwiGLU)
    assert mlp.w1.out_features == mlp.w3.out_features == mlp.w2.in_features == cfg.mlp.hidden == 176
    assert mlp.w1.in_features == mlp.w2.out_features == cfg.d_model
    assert all((layer.bias is not None) is bias for layer in (mlp.w1, mlp.w2, mlp.w3))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_build_mlp_gelu(approximate: str) -> None:
    cfg = _cfg(**{"mlp.gelu_approximate": approximate, "mlp.bias": "true", "mlp.hidden": "null"})
    mlp = build_mlp(cfg)
    assert isinstance(mlp, GeluMLP)
    assert mlp.approximate == approximate
    assert mlp.fc.out_features == mlp.proj.in_features == 4 * cfg.d_model  # hidden None -> 4 * d_model
    assert mlp.fc.bias is not None and mlp.proj.bias is not None
