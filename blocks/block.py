"""Transformer blocks: pre-norm, post-norm and sandwich-norm residual policies, each a two-line forward.

The builder picks the policy from the config; no block branches on configuration in ``forward``.
``branch_drop`` (residual dropout, then DropPath) is applied to each branch's output before the sum.
"""

from __future__ import annotations

import torch
from torch import nn

from attn.context import NO_CONTEXT, AttentionContext
from blocks.drop_path import DropPath
from blocks.mixers import build_mixer
from blocks.moe import build_feed_forward
from blocks.norms import build_norm
from specs.model_config import ModelConfig


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, *, causal: bool) -> None:
        super().__init__()
        self.attn_norm = build_norm(cfg)
        self.attn = build_mixer(cfg, layer_idx, causal=causal)  # softmax attention, or Gated DeltaNet in a hybrid
        self.mlp_norm = build_norm(cfg)
        self.mlp = build_feed_forward(cfg, layer_idx)
        # Stochastic depth grows linearly with depth, reaching cfg.drop_path at the last layer.
        rate = cfg.drop_path * layer_idx / max(cfg.n_layers - 1, 1)
        self.branch_drop = nn.Sequential(nn.Dropout(cfg.dropout), DropPath(rate))


class PreNormBlock(_Block):
    """``x + f(norm(x))`` for attention then MLP (GPT-2, Llama)."""

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        x = x + self.branch_drop(self.attn(self.attn_norm(x), ctx))
        return x + self.branch_drop(self.mlp(self.mlp_norm(x), ctx))


class PostNormBlock(_Block):
    """``norm(x + f(x))`` for attention then MLP (the original Transformer, BERT)."""

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        x = self.attn_norm(x + self.branch_drop(self.attn(x, ctx)))
        return self.mlp_norm(x + self.branch_drop(self.mlp(x, ctx)))


class SandwichNormBlock(_Block):
    """``x + out_norm(f(norm(x)))`` for attention then MLP: pre-norm plus a norm on each branch's output
    (Gemma 2 and 3: ``input_layernorm``/``post_attention_layernorm`` around attention,
    ``pre_feedforward_layernorm``/``post_feedforward_layernorm`` around the MLP)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, causal: bool) -> None:
        super().__init__(cfg, layer_idx, causal=causal)
        self.attn_out_norm = build_norm(cfg)
        self.mlp_out_norm = build_norm(cfg)

    def forward(self, x: torch.Tensor, ctx: AttentionContext = NO_CONTEXT) -> torch.Tensor:
        x = x + self.branch_drop(self.attn_out_norm(self.attn(self.attn_norm(x), ctx)))
        return x + self.branch_drop(self.mlp_out_norm(self.mlp(self.mlp_norm(x), ctx)))


BLOCKS: dict[str, type[_Block]] = {"pre": PreNormBlock, "post": PostNormBlock, "sandwich": SandwichNormBlock}


def build_block(cfg: ModelConfig, layer_idx: int, *, causal: bool = True) -> nn.Module:
    return BLOCKS[cfg.residual](cfg, layer_idx, causal=causal)
