"""LayerNorm and RMSNorm, and the builder that picks one from a ModelConfig.

``RMSNorm`` (and its Gemma form ``OffsetRMSNorm``, which scales by ``offset + weight``) is defined once, in
``attn`` (the lowest plane that needs it, for QK-norm), and used here.
"""

from __future__ import annotations

from torch import nn

from attn.rms_norm import OffsetRMSNorm, RMSNorm, build_rms_norm
from specs.model_config import ModelConfig

__all__ = ["OffsetRMSNorm", "RMSNorm", "build_norm"]


def build_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return build_rms_norm(cfg.d_model, cfg.norm_eps, cfg.norm_weight_offset)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.norm_bias)
