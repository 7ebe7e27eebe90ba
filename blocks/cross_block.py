"""Decoder blocks of an encoder-decoder: causal self-attention, cross-attention over the encoder memory, MLP.

Two residual policies, each a three-line forward: pre-norm (``x + f(norm(x))``, T5 and Llama style) and
post-norm (``norm(x + f(x))``, the original Transformer and BART). The memory arrives already projected to this
layer's keys/values (``CrossAttention.project_memory``), so a cached decode projects it once per request.
``branch_drop`` (residual dropout, then DropPath) is applied to each branch's output before the sum.
"""

from __future__ import annotations

import torch
from torch import nn

from attn.context import AttentionContext
from attn.cross_attention import CrossAttention
from attn.self_attention import SelfAttention
from blocks.drop_path import DropPath
from blocks.mlp import build_mlp
from blocks.norms import build_norm
from specs.model_config import ModelConfig

MemoryKV = tuple[torch.Tensor, torch.Tensor]  # one layer's cross-attention keys and values (B, Hkv, S, D)


class _CrossBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        norm = {"norm_eps": cfg.norm_eps, "norm_offset": cfg.norm_weight_offset}
        self.attn_norm = build_norm(cfg)
        self.attn = SelfAttention(cfg.attention, cfg.d_model, layer_idx=layer_idx, causal=True, **norm)
        self.cross_norm = build_norm(cfg)
        self.cross_attn = CrossAttention(cfg.attention, cfg.d_model, **norm)
        self.mlp_norm = build_norm(cfg)
        self.mlp = build_mlp(cfg)
        # Stochastic depth grows linearly with depth, reaching cfg.drop_path at the last decoder layer.
        rate = cfg.drop_path * layer_idx / max(cfg.n_layers - 1, 1)
        self.branch_drop = nn.Sequential(nn.Dropout(cfg.dropout), DropPath(rate))


class PreNormCrossBlock(_CrossBlock):
    """``x + f(norm(x))`` for self-attention, cross-attention, then MLP."""

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        memory_kv: MemoryKV,
        memory_allow_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``ctx``: the decoder's self-attention context; ``memory_kv``: this layer's projected memory;
        ``memory_allow_mask``: ``(B, 1, 1, S)``, True = a real memory token (None: all are)."""
        x = x + self.branch_drop(self.attn(self.attn_norm(x), ctx))
        x = x + self.branch_drop(self.cross_attn(self.cross_norm(x), memory_kv, memory_allow_mask=memory_allow_mask))
        return x + self.branch_drop(self.mlp(self.mlp_norm(x)))


class PostNormCrossBlock(_CrossBlock):
    """``norm(x + f(x))`` for self-attention, cross-attention, then MLP (BART)."""

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        memory_kv: MemoryKV,
        memory_allow_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As :meth:`PreNormCrossBlock.forward`."""
        x = self.attn_norm(x + self.branch_drop(self.attn(x, ctx)))
        x = self.cross_norm(x + self.branch_drop(self.cross_attn(x, memory_kv, memory_allow_mask=memory_allow_mask)))
        return self.mlp_norm(x + self.branch_drop(self.mlp(x)))


CROSS_BLOCKS: dict[str, type[_CrossBlock]] = {"pre": PreNormCrossBlock, "post": PostNormCrossBlock}


def build_cross_block(cfg: ModelConfig, layer_idx: int) -> nn.Module:
    """The decoder block of an encoder-decoder for ``cfg.residual`` (``pre`` or ``post``; the config refuses
    ``sandwich`` for an encoder-decoder)."""
    return CROSS_BLOCKS[cfg.residual](cfg, layer_idx)
