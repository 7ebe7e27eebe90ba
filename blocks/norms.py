"""LayerNorm and RMSNorm, and the builder that picks one from a ModelConfig.

``RMSNorm`` is defined once, in ``attn`` (the lowest plane that needs it, for QK-norm), and used here.
"""

from __future__ import annotations

from torch import nn

from attn.rms_norm import RMSNorm
from specs.model_config import ModelConfig

__all__ = ["RMSNorm", "build_norm"]


def build_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.norm_bias)
