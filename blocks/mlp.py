"""Feed-forward layers: the GPT MLP (fc -> GELU -> proj) and the gated ones, SwiGLU (down(silu(gate) * up)) and
GeGLU (down(gelu(gate) * up), Gemma). ``dropout`` applies to the hidden activations, before the down projection
(BART's ``activation_dropout``). A block calls its feed-forward as ``mlp(x, ctx)``: the dense layers ignore the
per-forward context, a MoE layer (:mod:`blocks.moe`) reports its router statistics into it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn.context import NO_CONTEXT, AttentionContext
from specs.model_config import ModelConfig


class GeluMLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, *, bias: bool, approximate: str = "none", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.approximate = approximate
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        return self.proj(self.dropout(F.gelu(self.fc(x), approximate=self.approximate)))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``: ``w1`` is the gate, ``w3`` the up projection, ``w2`` the down projection."""

    def __init__(self, d_model: int, hidden: int, *, bias: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=bias)
        self.w3 = nn.Linear(d_model, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        return self.w2(self.dropout(self.gate(self.w1(x)) * self.w3(x)))


class GeGLU(SwiGLU):
    """``w2(gelu(w1 x) * w3 x)``: SwiGLU's layout with a GELU gate (Gemma: the tanh approximation)."""

    def __init__(self, d_model: int, hidden: int, *, bias: bool, approximate: str = "tanh", dropout: float = 0.0) -> None:
        super().__init__(d_model, hidden, bias=bias, dropout=dropout)
        self.approximate = approximate

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


def build_mlp(cfg: ModelConfig) -> nn.Module:
    if cfg.mlp.kind == "swiglu":
        return SwiGLU(cfg.d_model, cfg.mlp_hidden, bias=cfg.mlp.bias, dropout=cfg.mlp.dropout)
    if cfg.mlp.kind == "geglu":
        return GeGLU(cfg.d_model, cfg.mlp_hidden, bias=cfg.mlp.bias, approximate=cfg.mlp.gelu_approximate,
                     dropout=cfg.mlp.dropout)
    return GeluMLP(cfg.d_model, cfg.mlp_hidden, bias=cfg.mlp.bias, approximate=cfg.mlp.gelu_approximate,
                   dropout=cfg.mlp.dropout)
