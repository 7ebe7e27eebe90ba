"""RMSNorm as a module: the QK-norm of attention heads here, and the block norm that ``blocks`` re-exports."""

from __future__ import annotations

import torch
from torch import nn

from tensor.ops import rms_norm


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dim, normalised in float32 (as Llama does) and returned in the
    input dtype. Over the head dim of queries and keys it is QK-norm (Gemma 3, Qwen 3, OLMo 2)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
