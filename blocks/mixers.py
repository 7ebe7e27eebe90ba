"""The token mixer of a block, chosen by layer: softmax self-attention, or Gated DeltaNet on the linear layers of a
hybrid model (``ModelConfig.deltanet``; ``hybrid_ratio`` DeltaNet layers per attention layer)."""

from __future__ import annotations

from attn.gated_deltanet import GatedDeltaNet
from attn.self_attention import SelfAttention
from specs.model_config import ModelConfig


def build_mixer(cfg: ModelConfig, layer_idx: int, *, causal: bool = True) -> SelfAttention | GatedDeltaNet:
    """Both kinds take ``(x, ctx)`` and return ``x``'s shape, so a block never knows which one it holds."""
    if cfg.deltanet is not None and not cfg.deltanet.is_attention_layer(layer_idx):
        return GatedDeltaNet(cfg.deltanet, cfg.d_model, layer_idx=layer_idx, norm_eps=cfg.norm_eps)
    return SelfAttention(
        cfg.attention,
        cfg.d_model,
        layer_idx=layer_idx,
        causal=causal,
        norm_eps=cfg.norm_eps,
        norm_offset=cfg.norm_weight_offset,
    )
