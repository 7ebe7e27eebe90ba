"""LayerNorm and RMSNorm, and the builder that picks one from a ModelConfig."""

from __future__ import annotations

import torch
from torch import nn

from specs.model_config import ModelConfig
from tensor.ops import rms_norm


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``, normalised in float32 (as Llama does) and returned in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def build_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.norm_bias)
