"""RMS normalisation of query/key heads over the head dim (QK-norm, as in Gemma 3, Qwen 3, OLMo 2)."""

from __future__ import annotations

import torch
from torch import nn

from tensor.ops import rms_norm


class QKNorm(nn.Module):
    def __init__(self, head_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
